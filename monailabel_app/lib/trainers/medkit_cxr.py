"""Site fine-tuning on the datastore's reported studies: ``POST /train/medkit_cxr``.

1. Studies with a ``final`` report label (the users' corrected reports) are split, seeded,
   into train and a held-out validation part (``val_split``; at least one study each).
2. The current model (the last promoted version, else the base model) is loaded trainable;
   its frozen student encodes the views once and the generator (projector, knowledge fusion,
   LoRA) trains with cross-entropy on the report tokens, through ``medkit.core.train.run_loop``.
   The knowledge prompt comes from the labeler's labels of each report, as in ``medkit train``.
3. The generator's validation loss is measured before and after. The new weights are saved as
   a new version and promoted only if the loss is not worse (``after <= before + promote_tolerance``);
   a promoted version also refits the site template (``generator.template``, the normal report
   reports start from) on the site's reports once at least ``generator.draft_min_reports`` of them
   share its sentences.

Progress (epoch, loss, validation loss, decision) goes to the task log shown by ``GET /train``
and to ``train_stats.json``, shown as ``train_stats`` in ``GET /info``. Report text is never logged.
Request params (JSON body): ``max_epochs``, ``lr``, ``val_split``, ``min_studies``,
``promote_tolerance``, ``seed`` (defaults from ``--conf train_*``, see the app README).
"""

from __future__ import annotations

import logging
import shutil

from lib.trainers.base import ReportTrainTask
from lib.transforms import is_ct_study, radiograph_views

logger = logging.getLogger(__name__)


class MedkitCxr(ReportTrainTask):
    def __init__(self, store, lm_path: str | None, defaults: dict,
                 description: str = "Fine-tune the MedKit chest X-ray report generator on the site's reports"):
        super().__init__(store, defaults, description)
        self.lm_path = lm_path

    study_kind = "chest X-ray studies"

    def count_studies(self, datastore) -> int:
        return sum(not is_ct_study(image) for _, image, _ in self.reported(datastore))

    def studies(self, datastore, max_views: int):
        from medkit.core.data import Study
        from medkit.cxr.images import ImageInputError

        out = []
        for image_id, image, report in self.reported(datastore):
            if is_ct_study(image):
                continue  # a CT volume: the CT trainer's study
            try:
                files, views = radiograph_views(image, max_views)
            except ImageInputError as e:
                logger.warning("skipping %s: %s", image_id, type(e).__name__)
                continue
            out.append(Study(image_id, files, report, "train", views))
        return sorted(out, key=lambda s: s.id)

    def prepare(self, datastore, opts: dict) -> dict:
        from medkit.cxr.model import read_config

        max_views = read_config(self.store.current_dir()).encoder.max_views
        studies = self.studies(datastore, max_views)
        if len(studies) < opts["min_studies"]:
            raise ValueError(f"need at least {opts['min_studies']} studies with a final report to train, "
                             f"the datastore has {len(studies)}")
        val_studies, train_studies = self.split(studies, opts)
        logger.info("medkit_cxr train: %d studies for training, %d held out", len(train_studies), len(val_studies))
        return {"train": train_studies, "val": val_studies}

    def fine_tune(self, data: dict, opts: dict, d, stats: dict, version_dir) -> dict:
        import torch

        from medkit.cxr.consistency import fit_template
        from medkit.cxr.data import StudyTensors, encode_studies
        from medkit.cxr.model import MedKitCXR

        model = MedKitCXR.load(self.store.current_dir(), lm_path=self.lm_path, optimize=False)
        cfg = model.cfg
        if d.main:
            logger.info("medkit_cxr train: device %s", d.device)
        cfg.train.seed = opts["seed"]
        model.to(d.device)
        model.student.requires_grad_(False)
        train, val = StudyTensors(data["train"], cfg, show=False), StudyTensors(data["val"], cfg, show=False)
        tr_tok, tr_mask, _ = encode_studies(model.student, train, d)
        va_tok, va_mask, _ = encode_studies(model.student, val, d)
        gen = model.generator

        def knowledge(data, idx):
            return [model.knowledge_for(data.findings[i])[0] for i in idx]

        def loss_fn(m, idx):
            out = m(tr_tok[idx].to(d.device), tr_mask[idx].to(d.device), knowledge(train, idx),
                    [train.studies[i].report for i in idx])
            return out.loss, {}

        @torch.no_grad()
        def val_loss() -> float:
            was_training = gen.training
            gen.eval()
            total, bs = 0.0, cfg.train.generator_batch_size
            for i in range(0, len(val), bs):
                idx = list(range(i, min(i + bs, len(val))))
                out = gen(va_tok[idx].to(d.device), va_mask[idx].to(d.device), knowledge(val, idx),
                          [val.studies[j].report for j in idx])
                total += float(out.loss) * len(idx)
            gen.train(was_training)
            return total / len(val)

        run = self.train_and_judge("generator", gen, loss_fn, len(train), cfg.train.generator_batch_size, cfg, d,
                                   val_loss, opts, stats, version_dir)
        before, after, promoted, epochs_log = (run[k] for k in ("before", "after", "promoted", "epochs"))
        train_losses, work = run["losses"], run["work"]
        result = {"train_studies": len(train), "val_studies": len(val), "val_loss_before": round(before, 5),
                  "val_loss_after": round(after, 5), "train_loss_first": round(train_losses[0], 5) if train_losses else None,
                  "train_loss_last": round(train_losses[-1], 5) if train_losses else None,
                  "epochs": epochs_log, "promoted": promoted, "version": None}
        if not d.main:
            return result
        if promoted:
            site_reports = [s.report for s in train.studies + val.studies]
            gen.learn_report_text(site_reports, keep_old=True)
            template = fit_template(site_reports, cfg.generator.draft_min_reports)
            if template:  # once enough of the site's reports share sentences, reports start from its own normal report
                cfg.generator.template = template
            model.cpu().save(version_dir)
            self.store.promote(version_dir)
            result["version"] = version_dir.name
        shutil.rmtree(work, ignore_errors=True)  # optimiser state; the promoted weights are in version_dir
        return result
