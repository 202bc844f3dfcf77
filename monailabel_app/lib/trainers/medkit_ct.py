"""Site fine-tuning of the CT model on the datastore's reported CT studies: ``POST /train/medkit_ct``.

1. CT studies (NIfTI / NRRD volumes or DICOM CT series) with a ``final`` report label are
   split, seeded, into train and a held-out validation part (``val_split``; at least one each).
   A study's optional organ mask is its ``organs`` label (``PUT /datastore/label?image=ID&tag=organs``
   with a ``.nii.gz`` label map in MedKit's organ values 1..8, the values of the label volume
   ``/infer/medkit_ct`` returns: correct that volume and submit it; its threshold segments, values
   9..11, are not learned and read as background). The report trains the
   student's label head (labels from :func:`medkit.ct.labeler.label_ct_report`); the mask trains
   its segmentation (Dice + cross-entropy). A study without a mask says so in the task log.
2. The current CT model (the last promoted version, else the base model) is loaded; its
   student trains on seeded crops through ``medkit.ct.train.StudentTask`` and
   ``medkit.core.train.run_loop`` (no teacher: site data are few, the teacher is large).
3. The student loss on the held-out crops is measured before and after: the new weights are
   saved as a new version and promoted only if it is not worse (``after <= before + promote_tolerance``).

Progress goes to the task log (``GET /train``) and ``train_stats.json`` (``GET /info``).
A model with a report generator keeps its generator unchanged (not fine-tuned here).
Request params (JSON body): ``max_epochs``, ``lr``, ``val_split``, ``min_studies``,
``promote_tolerance``, ``seed``, ``crops_per_volume``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from lib.trainers.base import ReportTrainTask
from lib.transforms import is_ct_study

logger = logging.getLogger(__name__)

MASK_TAG = "organs"


class MedkitCt(ReportTrainTask):
    option_types = {**ReportTrainTask.option_types, "crops_per_volume": int}

    def __init__(self, store, defaults: dict,
                 description: str = "Fine-tune the MedKit CT student (organ segmentation, label head) "
                                    "on the site's studies"):
        super().__init__(store, defaults, description)

    study_kind = "CT studies"

    def count_studies(self, datastore) -> int:
        return sum(is_ct_study(image) for _, image, _ in self.reported(datastore))

    def preflight(self, datastore, opts: dict) -> None:
        super().preflight(datastore, opts)
        self.check_learnable(self.studies(datastore, ()))

    @staticmethod
    def check_learnable(studies) -> tuple[int, int]:
        """(studies with a mask, reports naming a finding); ValueError when both are 0."""
        from medkit.ct.labeler import label_ct_report

        n_mask = sum(s.mask is not None for s in studies)
        n_pos = sum(any(v > 0 for v in label_ct_report(s.report).values()) for s in studies)
        if n_mask == 0 and n_pos == 0:
            raise ValueError(f"nothing to learn from the {len(studies)} reported CT studies: none has an organ mask "
                             f"(PUT /datastore/label?image=ID&tag={MASK_TAG} with a .nii.gz label map) and no report "
                             "names a CT finding")
        return n_mask, n_pos

    def studies(self, datastore, organs: tuple[str, ...]):
        """CT studies with a final report: ``medkit.ct.train.CTStudy`` with the mask if one was submitted."""
        from medkit.ct.train import CTStudy

        mask_values = {o: i for i, o in enumerate(organs, 1)}
        out = []
        for image_id, image, report in self.reported(datastore):
            if not is_ct_study(image):
                continue  # a radiograph: the chest X-ray trainer's study
            mask = datastore.get_label_uri(image_id, MASK_TAG) if hasattr(datastore, "get_label_uri") else ""
            if not mask or not Path(mask).exists():
                logger.info("medkit_ct train: study %s has no organ mask (label tag %r): it trains the label head only",
                            image_id, MASK_TAG)
                mask = None
            out.append(CTStudy(image_id, Path(image), report, "train", Path(mask) if mask else None, dict(mask_values)))
        return sorted(out, key=lambda s: s.id)

    def prepare(self, datastore, opts: dict) -> dict:
        from medkit.ct.model import read_ct_config

        studies = self.studies(datastore, read_ct_config(self.store.resolved_dir()).encoder.organs)
        if len(studies) < opts["min_studies"]:
            raise ValueError(f"need at least {opts['min_studies']} CT studies with a final report to train, "
                             f"the datastore has {len(studies)}")
        n_mask, n_pos = self.check_learnable(studies)
        val_studies, train_studies = self.split(studies, opts)
        logger.info("medkit_ct train: %d studies for training, %d held out (%d with organ masks, %d reports with "
                    "findings)", len(train_studies), len(val_studies), n_mask, n_pos)
        return {"train": train_studies, "val": val_studies, "n_mask": n_mask, "n_pos": n_pos}

    def fine_tune(self, data: dict, opts: dict, d, stats: dict, version_dir) -> dict:
        import torch

        from medkit.ct.model import MedKitCT
        from medkit.ct.train import CTCrops, StudentTask
        from medkit.core.train import seed_everything

        model = MedKitCT.load(self.store.resolved_dir(), optimize=False)
        cfg = model.cfg
        cfg.train.seed = opts["seed"]
        cfg.train.crops_per_volume = opts["crops_per_volume"]
        seed_everything(opts["seed"])
        train_studies, val_studies, n_mask, n_pos = (data[k] for k in ("train", "val", "n_mask", "n_pos"))
        if d.main:
            logger.info("medkit_ct train: device %s", d.device)
        train, val = CTCrops(train_studies, cfg), CTCrops(val_studies, cfg)
        task = StudentTask(cfg, model.student, None).to(d.device)
        zero = torch.zeros(cfg.train.crop_size, dtype=torch.long)
        gen = torch.Generator().manual_seed(opts["seed"])

        def batch(crops, idx, jitter):
            x, labels = crops.batch(idx, jitter, gen)
            masks = torch.stack([crops.masks[i] if crops.masks[i] is not None else zero for i in idx])
            has = torch.tensor([crops.has_mask[i] for i in idx])
            return x.to(d.device), labels.to(d.device), masks.to(d.device), has.to(d.device)

        def loss_fn(m, idx):
            return m(*batch(train, idx, cfg.train.intensity_jitter))

        @torch.no_grad()
        def val_loss() -> float:
            task.eval()  # dropout off: the same crops give the same loss
            total = 0.0
            for i in range(len(val)):
                total += float(task(*batch(val, [i], 0.0))[0])
            task.train()
            return total / len(val)

        run = self.train_and_judge("student", task, loss_fn, len(train), cfg.train.batch_size, cfg, d, val_loss,
                                   opts, stats, version_dir)
        before, after, promoted, epochs_log, losses = (run[k] for k in ("before", "after", "promoted", "epochs", "losses"))
        result = {"train_studies": len(train_studies), "val_studies": len(val_studies), "studies_with_masks": n_mask,
                  "val_loss_before": round(before, 5), "val_loss_after": round(after, 5),
                  "train_loss_first": round(losses[0], 5) if losses else None,
                  "train_loss_last": round(losses[-1], 5) if losses else None,
                  "epochs": epochs_log, "promoted": promoted, "version": None}
        if not d.main:
            return result
        if promoted:
            model.cpu().save(version_dir, training={
                "site_training": {"base": stats.get("base"), "train_studies": len(train_studies),
                                  "studies_with_masks": n_mask},
                "label_head_trained": bool(model.train_info.get("label_head_trained") or n_pos)})
            self.store.promote(version_dir)
            result["version"] = version_dir.name
        shutil.rmtree(run["work"], ignore_errors=True)  # optimiser state; the promoted weights are in version_dir
        return result
