"""Report inference for chest X-rays: ``POST /infer/medkit_cxr?image=ID``.

MONAI Label's :class:`BasicInferTask` pipeline with MedKit in place of a segmentation
network: pre-transforms load the views of the study (:class:`lib.transforms.LoadCXRd`), the
inferer runs :meth:`medkit.cxr.model.MedKitCXR.report_from_arrays`, and the writer returns the
result JSON (``report``, ``findings``, ``stated_findings``, ``hedged_findings``, ``withdrawn_findings``,
``knowledge``, ``modality``, ``model``) with no label
image (the chest X-ray model makes no segmentation). The model is loaded once per device
and reloaded when training promotes a new version (:class:`lib.infers.base.MedKitInferTask`).

Request params (``params`` form field, JSON): ``num_beams`` (1-8), ``max_new_tokens`` (1-512),
``state_findings`` (true/false; default the model's ``generator.state_findings``: the report agrees
with the findings table, :func:`medkit.cxr.consistency.align_report`: it states the positive findings,
hedges or leaves out the borderline ones and withdraws what the table calls negative).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Sequence

from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.infers.base import MedKitInferTask, bool_param, decode_params
from lib.transforms import LoadCXRd
from medkit.cxr.labeler import OBSERVATIONS

logger = logging.getLogger(__name__)


def _model_class():
    from medkit.cxr.model import MedKitCXR

    return MedKitCXR


class MedkitCxr(MedKitInferTask):
    model_class = staticmethod(_model_class)
    request_params = ("num_beams", "max_new_tokens", "state_findings", "report_base", "write_sr")  # the infer params it reads

    def __init__(self, store, lm_path: str | None = None, decode: dict | None = None, max_views: int = 2,
                 description: str = "MedKit chest X-ray report generation (report, findings, knowledge)", **kwargs):
        """
        Args:
            store: :class:`lib.model_store.ModelStore` giving the model directory to serve.
            lm_path: local Hugging Face LM directory replacing the model's language model.
            decode: default decoding overrides (``num_beams``, ``max_new_tokens``).
            max_views: views of one study given to the model.
        """
        super().__init__(store, lm_path, decode, type=InferType.OTHERS, labels=list(OBSERVATIONS), dimension=2,
                         description=description, **kwargs)
        self.max_views = max_views

    def is_valid(self) -> bool:
        return True  # the base model ships with medkit (or comes from --conf model_path)

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return [LoadCXRd(keys="image", max_views=self.max_views)]

    def run_inferer(self, data: Dict[str, Any], convert_to_batch=True, device="cpu"):
        decode = decode_params(data)
        state_findings = bool_param(data, "state_findings")
        model = self._get_network(device, data)
        result = model.report_from_arrays(data["image"], state_findings=state_findings,
                                          report_base=data.get("report_base"), **decode)  # checked by the model
        result["model"] = self.served_version()
        data[self.output_json_key] = result
        return data

    def writer(self, data: Dict[str, Any], extension=None, dtype=None):
        return None, dict(data[self.output_json_key])
