"""What the MedKit train tasks share: options, the reported studies, status in ``train_stats.json``.

A subclass implements ``fine_tune(datastore, opts, device, stats) -> dict`` (the result, with
``promoted`` and ``version``); :meth:`ReportTrainTask.__call__` records RUNNING / DONE / ERROR
around it so ``GET /info`` shows the run even when it fails or the server dies mid-run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from monailabel.interfaces.tasks.train import TrainTask

logger = logging.getLogger(__name__)


class ReportTrainTask(TrainTask):
    option_types = {"max_epochs": int, "lr": float, "val_split": float, "min_studies": int,
                    "promote_tolerance": float, "seed": int}

    def __init__(self, store, defaults: dict, description: str):
        super().__init__(description)
        self.store = store
        self.defaults = defaults

    def config(self):
        return dict(self.defaults)

    def stats(self):
        return self.store.read_stats()

    def options(self, request: dict) -> dict:
        opts = dict(self.defaults)
        for key, kind in self.option_types.items():
            if request.get(key) is not None:
                try:
                    opts[key] = kind(request[key])
                except (TypeError, ValueError):
                    raise ValueError(f"train option {key} must be {kind.__name__}, got {request[key]!r}") from None
        if opts["max_epochs"] < 1 or not 0 < opts["val_split"] < 1 or opts["lr"] <= 0 or opts["min_studies"] < 2:
            raise ValueError(f"train options out of range: {opts}")
        return opts

    @staticmethod
    def reported(datastore):
        """``(image_id, image_uri, report_text)`` of every study whose final label is a readable report."""
        for item in datastore.datalist():
            label = str(item.get("label", ""))
            if not label.endswith(".json"):
                continue  # not a report label
            image_id = Path(label).name[: -len(".json")]
            try:
                report = json.loads(Path(label).read_text())["report"]
            except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
                logger.warning("skipping %s: unreadable report label (%s)", image_id, type(e).__name__)
                continue
            yield image_id, item["image"], report

    def __call__(self, request, datastore):
        import torch

        opts = self.options(request)
        device = "cuda" if torch.cuda.is_available() and not str(request.get("device", "")).startswith("cpu") else "cpu"
        started = time.time()
        stats = {"status": "RUNNING", "start_ts": int(started), "options": opts,
                 "base": self.store.current_version() or "base", "pid": os.getpid()}
        self.store.write_stats(stats)
        try:
            result = self.fine_tune(datastore, opts, device, stats)
        except Exception as e:
            self.store.write_stats({**stats, "status": "ERROR", "error": str(e)[:500], "end_ts": int(time.time())})
            raise
        self.store.write_stats({**stats, **result, "status": "DONE", "end_ts": int(time.time()),
                                "total_time": round(time.time() - started, 1)})
        return result

    def preflight(self, datastore, opts: dict) -> None:
        """Cheap checks in the server before a training subprocess starts (ValueError: HTTP 400)."""
        n = self.count_studies(datastore)
        if n < opts["min_studies"]:
            raise ValueError(f"need at least {opts['min_studies']} {self.study_kind} with a final report to train, "
                             f"the datastore has {n}")

    study_kind = "studies"

    def count_studies(self, datastore) -> int:
        raise NotImplementedError

    def fine_tune(self, datastore, opts: dict, device: str, stats: dict) -> dict:
        raise NotImplementedError

    def train_and_judge(self, stage: str, module, loss_fn, n_items: int, batch_size: int, cfg, d, val_loss,
                        opts: dict, stats: dict) -> dict:
        """Validation loss before, ``run_loop`` epochs (validated and reported after each), loss
        after and the promotion decision. The run folder (optimiser state) lives beside the new
        version folder; the caller saves into ``version_dir`` when ``promoted`` and removes ``work``."""
        import math

        from lib.failpoints import failpoint
        from medkit.train import run_loop

        name = self.__class__.__name__.lower().replace("medkit", "medkit_")
        before = val_loss()
        logger.info("%s train: validation loss before %.4f", name, before)
        epochs_log = []

        def on_epoch_end(epoch: int) -> dict:
            v = val_loss()
            epochs_log.append({"epoch": epoch, "val_loss": round(v, 5)})
            logger.info("%s train: epoch %d/%d validation loss %.4f", name, epoch, opts["max_epochs"], v)
            self.store.write_stats({**stats, "epoch": epoch, "max_epochs": opts["max_epochs"], "epochs": epochs_log,
                                    "val_loss_before": round(before, 5)})
            failpoint("train.epoch_end")
            return {"val_loss": v}

        version_dir = self.store.new_version_dir()
        work = version_dir.parent.parent / "runs" / version_dir.name
        history = run_loop(stage, module, loss_fn, n_items, batch_size, opts["max_epochs"], opts["lr"], cfg, work, d,
                           ckpt_every=0, on_epoch_end=on_epoch_end)
        after = val_loss()
        promoted = math.isfinite(after) and after <= before + opts["promote_tolerance"]
        logger.info("%s train: validation loss %.4f -> %.4f: %s", name, before, after,
                    "promoted" if promoted else "not promoted (worse than the current model)")
        losses = [h["loss"] for h in history if "loss" in h]
        return {"before": before, "after": after, "promoted": promoted, "epochs": epochs_log, "losses": losses,
                "version_dir": version_dir, "work": work}


def train_defaults(conf: dict, **extra) -> dict:
    """Training defaults from ``--conf train_*`` (each with a default; see the app README)."""
    return {
        "max_epochs": int(conf.get("train_epochs", "3")),
        "lr": float(conf.get("train_lr", "1e-4")),
        "val_split": float(conf.get("train_val_split", "0.2")),
        "min_studies": int(conf.get("train_min_studies", "4")),
        "promote_tolerance": float(conf.get("train_promote_tolerance", "0.0")),
        "seed": int(conf.get("train_seed", "42")),
        **extra,
    }
