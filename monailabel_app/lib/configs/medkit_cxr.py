"""``--conf models medkit_cxr``: chest X-ray report generation (MedKit, 2D).

Builds the model store (base model + promoted site versions) and hands it to the infer task,
the trainer, the uncertainty scoring method and strategy. Options are ``--conf`` strings
read here, each with a default (see the app README for the table).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Union

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import name_to_device, strtobool

import lib.infers
import lib.trainers
from lib.activelearning import Uncertainty
from lib.model_store import ModelStore
from lib.scoring import LabelEntropy
from lib.scoring.label_entropy import EntropyScorer
from lib.trainers.base import train_defaults

logger = logging.getLogger(__name__)


class MedkitCxr(TaskConfig):
    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        from medkit.cxr.labeler import OBSERVATIONS

        self.labels = {n: i for i, n in enumerate(OBSERVATIONS)}
        base = conf.get("model_path", "") or None
        if base and not os.path.isfile(os.path.join(base, "config.json")):
            raise ValueError(f"--conf model_path {base}: not a MedKit model directory (no config.json)")
        self.store = ModelStore(os.path.join(model_dir, name), base)
        self.store.recover()  # a run cut short by a crash: marked INTERRUPTED, its leftovers removed
        self.lm_path = conf.get("lm_path", "") or None
        self.decode = {k: int(conf[k]) for k in ("num_beams", "max_new_tokens") if conf.get(k)}
        self.train_defaults = train_defaults(conf)
        self.scorer = EntropyScorer(self.store, f"{name}_entropy")
        self.preload = strtobool(conf.get("preload", "false"))

    def infer(self) -> Union[InferTask, Dict[str, InferTask]]:
        task = lib.infers.MedkitCxr(self.store, lm_path=self.lm_path, decode=self.decode)
        if self.preload:
            task._get_network(name_to_device(None), None)  # the device key BasicInferTask uses
        return task

    def trainer(self) -> Optional[TrainTask]:
        return lib.trainers.MedkitCxr(self.store, self.lm_path, self.train_defaults)

    def strategy(self) -> Union[None, Strategy, Dict[str, Strategy]]:
        return {f"{self.name}_uncertainty": Uncertainty(self.scorer)}

    def scoring_method(self) -> Union[None, ScoringMethod, Dict[str, ScoringMethod]]:
        return {f"{self.name}_entropy": LabelEntropy(self.scorer)}
