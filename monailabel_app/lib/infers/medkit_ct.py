"""Report inference for CT volumes: ``POST /infer/medkit_ct?image=ID``.

The image is a NIfTI / NRRD volume or a DICOM series folder, read on its native grid by
``medkit.ct`` (no slicing into 2D, no cubic resize). The result JSON holds the report, the
measured findings, knowledge triples, organ measurements (with ``reliable`` / ``implausible`` from
the plausibility checks) and warnings; the label volume (input geometry; organ values 1..8, then
lungs 9, bone 10, body 11, as in ``segmentation_labels``) is the label image that
``output=image`` / ``output=all`` return.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Sequence

from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.infers.base import MedKitInferTask, decode_params

logger = logging.getLogger(__name__)


def _model_class():
    from medkit.ct.model import MedKitCT

    return MedKitCT


class MedkitCt(MedKitInferTask):
    model_class = staticmethod(_model_class)
    request_params = ("num_beams", "max_new_tokens", "write_sr")  # the infer params it reads

    def __init__(self, store, labels: dict, lm_path: str | None = None, decode: dict | None = None,
                 description: str = "MedKit CT report generation (report, organ segmentation, measurements)", **kwargs):
        super().__init__(store, lm_path, decode, type=InferType.SEGMENTATION, labels=labels, dimension=3,
                         description=description, **kwargs)

    def is_valid(self) -> bool:
        return (self.store.resolved_dir() / "config.json").exists()

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return []  # medkit.ct reads the volume itself (orientation, spacing, HU checks)

    def run_inferer(self, data: Dict[str, Any], convert_to_batch=True, device="cpu"):
        decode = decode_params(data)
        model = self._get_network(device, data)
        work = tempfile.mkdtemp(prefix="medkit_ct_")
        try:
            result = model.report_from_path(data["image_path"], work, **decode)
            fd, label = tempfile.mkstemp(suffix=".nii.gz")  # removed by the endpoint after sending
            os.close(fd)
            shutil.move(result["segmentation"], label)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        result["segmentation"] = os.path.basename(label)
        result["model"] = self.served_version()
        data[self.output_json_key] = result
        data["label_file"] = label
        return data

    def writer(self, data: Dict[str, Any], extension=None, dtype=None):
        return data["label_file"], dict(data[self.output_json_key])
