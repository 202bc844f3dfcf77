"""``--conf models medkit_ct``: CT report generation (MedKit, 3D; ``medkit.ct``).

Serves the CT model from ``--conf ct_model_path`` or the one shipped in ``medkit/weights/ct``;
the task is listed in ``/info`` only when such a model exists. ``POST /train/medkit_ct``
fine-tunes its student on the site's reported CT studies (``lib/trainers/medkit_ct.py``;
``medkit train-ct`` trains a CT model from scratch). MONAI Label's random / first strategies
apply to CT studies.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Union

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

import lib.infers.medkit_ct
import lib.trainers
from lib.model_store import ModelStore
from lib.trainers.base import train_defaults

logger = logging.getLogger(__name__)


class MedkitCt(TaskConfig):
    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        from medkit.ct.config import CTEncoderConfig, segment_labels
        from medkit.ct.model import default_ct_model_dir

        # organs 1..8 (what the student segments and the trainer learns), then the threshold
        # segments (lungs, bone, body) that the infer task's label volume also holds
        self.labels = segment_labels(CTEncoderConfig().organs)
        base = conf.get("ct_model_path", "") or None
        if base and not os.path.isfile(os.path.join(base, "config.json")):
            raise ValueError(f"--conf ct_model_path {base}: not a MedKit CT model directory (no config.json)")
        self.store = ModelStore(os.path.join(model_dir, name), base, default_ct_model_dir)
        self.store.recover()  # a run cut short by a crash: marked INTERRUPTED, its leftovers removed
        self.lm_path = conf.get("lm_path", "") or None
        self.decode = {k: int(conf[k]) for k in ("num_beams", "max_new_tokens") if conf.get(k)}
        self.train_defaults = train_defaults(conf, crops_per_volume=int(conf.get("ct_train_crops", "2")))

    def infer(self) -> Union[InferTask, Dict[str, InferTask]]:
        task = lib.infers.medkit_ct.MedkitCt(self.store, self.labels, lm_path=self.lm_path, decode=self.decode)
        if not task.is_valid():
            logger.warning("medkit_ct: no CT model in %s (pass --conf ct_model_path DIR); the task is hidden",
                           self.store.resolved_dir())
        return task

    def trainer(self) -> Optional[TrainTask]:
        if not (self.store.resolved_dir() / "config.json").exists():
            return None  # no CT model: nothing to fine-tune
        return lib.trainers.MedkitCt(self.store, self.train_defaults)
