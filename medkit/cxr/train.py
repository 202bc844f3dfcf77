"""Three-stage training: teacher -> student (multi-level distillation) -> report generator.

    medkit train --data ../shared/data --out runs/cxr             # all stages, resumable
    torchrun --nproc_per_node 2 -m medkit.cli train --data ... --out ...   # same, DDP

    medkit --threads 1 train --data ../shared/data --out runs/teacher --until teacher   # stage 1 only

- teacher: Lite0 (or Lite1/Lite2, ``encoder.teacher_backbone``) trained on labeler labels with a
  class-balanced BCE (``train.pos_weight``), on radiograph augmentation (``medkit.cxr.augment``:
  small rotation / zoom / shift, gamma / contrast / brightness, never a left-right flip), both
  views of a study pooled into one study-level prediction; then frozen.
- student: truncated Lite0 trained with KL to the teacher's label distribution, projected
  feature losses at three depths and its own class-balanced BCE head (``medkit.core.distill``). With
  ``train.student_augment`` the frozen teacher runs on the student's augmented batch each step;
  without it the teacher's outputs are computed once per run and kept in memory.
- after every teacher / student epoch the findings head is scored on the val split (AUC per
  observation, ``OUT/<stage>/val_auc.jsonl``) and the epoch with the best mean AUC is the one the
  stage keeps (``OUT/<stage>/best.json``).
- images are decoded and resized once per run (``StudyTensors``, float16 in memory, about a
  minute for IU X-ray's 2,069 + 296 studies, most of it the labeler); a step only indexes them.
  Encoders train in ``channels_last`` (``train.channels_last``): on CPU a Lite0 step of 16
  two-view studies takes 3.9 s instead of 10.1 s on one thread (``benchmarks/train_step.py``),
  which is where the first shipped teacher's 22 minutes per epoch went (130 steps x 10 s).
- generator: the student is frozen; its visual tokens are computed once, then the projector,
  knowledge fusion and LoRA adapters train with cross-entropy on report tokens. The knowledge
  prompt comes from the ground-truth labels of the report (labeler), not from predictions.

Every stage writes ``OUT/<stage>/state.pt`` (trainable tensors, optimiser, step, RNG) every
``ckpt_every`` steps and at each epoch end, atomically; rerunning the same command resumes
from the last one and skips the finished stages. The final model (trainable tensors only +
config) lands in ``OUT/model``. Under torchrun (WORLD_SIZE > 1) each process takes its share
of the batches through DistributedSampler and gradients are all-reduced by DDP (gloo on CPU,
NCCL on GPUs); only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from medkit.core.data import load_studies
from medkit.core.distill import FeatureProjectors, distillation_loss
from medkit.core.files import atomic_write
from medkit.core.metrics import findings_auc
from medkit.core.modeldir import atomic_save_safetensors
from medkit.core.train import Dist, check_resumable, init_distributed, mark_done, run_loop, seed_everything, stage_done
from medkit.cxr.augment import augment_study_batch
from medkit.cxr.calibrate import calibration_studies, fit_encoder_thresholds
from medkit.cxr.config import MedKitConfig
from medkit.cxr.consistency import fit_template
from medkit.cxr.data import StudyTensors, encode_studies
from medkit.cxr.encoders import CXREncoder
from medkit.cxr.model import MedKitCXR

logger = logging.getLogger(__name__)

STAGES = ("teacher", "student", "generator")


# Settings a resumed run may change: how long to train, how much to validate, and how the
# generator epochs still to run draw their studies.
RESUMABLE_CHANGES = {"train.teacher_epochs", "train.student_epochs", "train.generator_epochs", "train.eval_limit",
                     "train.normal_keep",  # epochs still to run draw their studies the new way
                     "generator.statement_precision"}  # used only by the threshold fit at the end of a run


# ---- stages ----------------------------------------------------------------------------------
def class_pos_weight(labels: np.ndarray, mode: str, cap: float) -> torch.Tensor | None:
    """(C,) weights of the positive examples in the encoders' BCE, from (N, C) training labels.

    ``"balanced"``: negatives / positives of each observation (a positive weighs as much as all
    negatives together); ``"sqrt"``: its square root (half-way, on a log scale); ``"none"``: None
    (plain BCE). Clipped to [1, cap]: observations more common than not keep weight 1, and an
    observation with no positive gets 1."""
    if mode == "none":
        return None
    if mode not in ("sqrt", "balanced"):
        raise ValueError(f"pos_weight mode must be 'none', 'sqrt' or 'balanced', got {mode!r}")
    pos = np.asarray(labels, dtype=np.float64).sum(0)
    neg = len(labels) - pos
    w = np.where(pos > 0, neg / np.maximum(pos, 1e-9), 1.0)
    if mode == "sqrt":
        w = np.sqrt(w)
    return torch.tensor(np.clip(w, 1.0, cap), dtype=torch.float32)


def prepare_encoder(encoder: CXREncoder, cfg: MedKitConfig) -> CXREncoder:
    """NHWC weights when ``train.channels_last``: 2.6x faster Lite0 training steps on CPU
    (``benchmarks/train_step.py``); the saved tensors are the same."""
    return encoder.to(memory_format=torch.channels_last) if cfg.train.channels_last else encoder


def findings_validation(name: str, encoder: CXREncoder, val: StudyTensors | None, cfg: MedKitConfig, out: Path,
                        d: Dist):
    """``on_epoch_end`` of an encoder stage: the findings head's AUC per observation on ``val``
    (``medkit.core.metrics.findings_auc``) appended to ``OUT/<name>/val_auc.jsonl`` (``epoch`` = epochs
    completed), and the tensors of the epoch with the best mean AUC kept in
    ``OUT/<name>/best.safetensors`` (``best.json`` says which epoch)."""
    folder = out / name

    def hook(epoch: int) -> dict:
        if val is None or not len(val) or not d.main:
            return {}
        t0 = time.perf_counter()
        probs = encode_studies(encoder, val, d).probs
        res = findings_auc(probs, val.positive_matrix(), cfg.observations, cfg.train.auc_min_positives)
        rec = {"epoch": epoch, **res, "seconds": round(time.perf_counter() - t0, 1)}
        with open(folder / "val_auc.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        best_file = folder / "best.json"
        best = json.loads(best_file.read_text()) if best_file.exists() else None
        mean = res["mean_auc"]
        if mean is not None and (best is None or mean > best["mean_auc"]):
            atomic_save_safetensors(encoder.state_dict(), folder / "best.safetensors")
            atomic_write(best_file, json.dumps({"epoch": epoch, "mean_auc": mean}) + "\n")
        logger.info("%s epoch %d: val mean AUC %s over %d observations (%s)", name, epoch, mean, len(res["mean_over"]),
                    ", ".join(f"{k} {v['auc']:.3f}" for k, v in res["per_observation"].items() if v["auc"] is not None))
        return {"val_mean_auc": mean}

    return hook


def keep_best(name: str, encoder: CXREncoder, out: Path, d: Dist) -> None:
    """Load the best validated epoch's tensors into ``encoder`` (if the stage was validated)."""
    if d.world > 1:
        dist.barrier()  # rank 0 writes best.safetensors
    best = out / name / "best.safetensors"
    if best.exists():
        encoder.load_state_dict(load_file(str(best)))
        logger.info("%s: keeping %s", name, (out / name / "best.json").read_text().strip())


def run_encoder_stage(name: str, encoder: CXREncoder, task: torch.nn.Module, loss_fn, epochs: int,
                      cfg: MedKitConfig, train: StudyTensors, val: StudyTensors | None, out: Path, d: Dist,
                      ckpt_every: int) -> None:
    """Train an encoder stage (teacher or student) through ``task``: the findings head validated after
    each epoch, the best epoch kept and saved as ``OUT/<name>/<name>.safetensors``, the stage marked done."""
    (out / name).mkdir(parents=True, exist_ok=True)
    run_loop(name, task, loss_fn, len(train), cfg.train.batch_size, epochs, cfg.train.lr_encoder, cfg, out, d,
             ckpt_every, on_epoch_end=findings_validation(name, encoder, val, cfg, out, d))
    keep_best(name, encoder, out, d)
    if d.main:
        atomic_save_safetensors(encoder.state_dict(), out / name / f"{name}.safetensors")
    mark_done(out, name, d)


def train_teacher(cfg: MedKitConfig, train: StudyTensors, out: Path, d: Dist, ckpt_every: int,
                  val: StudyTensors | None = None) -> CXREncoder:
    teacher = prepare_encoder(CXREncoder(cfg.encoder, "teacher").to(d.device), cfg)
    path = out / "teacher" / "teacher.safetensors"
    if stage_done(out, "teacher"):
        teacher.load_state_dict(load_file(str(path)))
        return teacher.eval().requires_grad_(False)

    task = TeacherTask(teacher, class_pos_weight(train.label_matrix(), cfg.train.pos_weight,
                                                 cfg.train.pos_weight_max)).to(d.device)

    def loss_fn(model, idx):
        x, m, y = train.batch(idx, d.device)
        if cfg.augment.enabled:
            x = augment_study_batch(x, m, cfg.augment)
        return model(x, m, y), {}

    run_encoder_stage("teacher", teacher, task, loss_fn, cfg.train.teacher_epochs, cfg, train, val, out, d,
                      ckpt_every)
    return teacher.eval().requires_grad_(False)


# Each stage's loss is computed inside a module's forward so that DDP sees the whole step.
class TeacherTask(torch.nn.Module):
    def __init__(self, teacher: CXREncoder, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.teacher = teacher
        self.register_buffer("pos_weight", pos_weight, persistent=False)  # (C,) or None

    def forward(self, x, view_mask, labels):
        return F.binary_cross_entropy_with_logits(self.teacher(x, view_mask).logits, labels, pos_weight=self.pos_weight)


class StudentTask(torch.nn.Module):
    def __init__(self, cfg: MedKitConfig, student: CXREncoder, teacher_channels: tuple[int, ...],
                 pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.student = student
        self.projectors = FeatureProjectors(student.level_channels, teacher_channels)
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, x, view_mask, labels, teacher_feats, teacher_logits):
        o = self.student(x, view_mask)
        losses = distillation_loss(self.cfg.distill, self.projectors, o.features, o.logits, teacher_feats,
                                   teacher_logits, labels, self.pos_weight)
        return losses.total, {"kl": losses.kl, "feature": losses.feature, "label": losses.label}


@torch.no_grad()
def teacher_targets(teacher: CXREncoder, data: StudyTensors, d: Dist, bs: int = 32):
    """Teacher logits and features for every study, computed once (float16 to halve memory)."""
    teacher.eval()
    logits, feats = [], []
    for i in tqdm(range(0, len(data), bs), desc="teacher features", disable=not d.main):
        x, m, _ = data.batch(list(range(i, min(i + bs, len(data)))), d.device)
        o = teacher(x, m)
        logits.append(o.logits.cpu())
        feats.append([f.half().cpu() for f in o.features])
    levels = [torch.cat([f[k] for f in feats]) for k in range(len(feats[0]))]  # each (N*V, C, h, w)
    return torch.cat(logits), levels


def train_student(cfg: MedKitConfig, teacher: CXREncoder, train: StudyTensors, out: Path, d: Dist,
                  ckpt_every: int, val: StudyTensors | None = None) -> CXREncoder:
    student = CXREncoder(cfg.encoder, "student")
    path = out / "student" / "student.safetensors"
    if stage_done(out, "student"):
        student.load_state_dict(load_file(str(path)))
        return prepare_encoder(student, cfg).eval()
    student = prepare_encoder(student.to(d.device), cfg)
    task = StudentTask(cfg, student, teacher.level_channels,
                       class_pos_weight(train.label_matrix(), cfg.train.pos_weight, cfg.train.pos_weight_max))
    task = task.to(d.device)
    teacher.eval()
    V = cfg.encoder.max_views
    if cfg.train.student_augment and cfg.augment.enabled:
        # The teacher sees the student's augmented batch (its targets change every step).
        def loss_fn(model, idx):
            x, m, y = train.batch(idx, d.device)
            x = augment_study_batch(x, m, cfg.augment)
            with torch.no_grad():
                t = teacher(x, m)
            return model(x, m, y, [f.float() for f in t.features], t.logits)
    else:
        t_logits, t_feats = teacher_targets(teacher, train, d)

        def loss_fn(model, idx):
            rows = torch.tensor([i * V + v for i in idx for v in range(V)])
            tf = [f[rows].to(d.device).float() for f in t_feats]
            return model(*train.batch(idx, d.device), tf, t_logits[idx].to(d.device))

    run_encoder_stage("student", student, task, loss_fn, cfg.train.student_epochs, cfg, train, val, out, d,
                      ckpt_every)
    return student.eval()


def generator_epoch_items(findings: list[list[str]], normal_keep: float, seed: int):
    """``epoch -> item indices`` for the generator: every study with a positive finding, plus a
    seeded draw (fresh each epoch, same size every epoch) of ``normal_keep`` of the others."""
    abnormal = [i for i, f in enumerate(findings) if f]
    normal = [i for i, f in enumerate(findings) if not f]
    keep = min(len(normal), max(1, round(normal_keep * len(normal)))) if normal else 0
    if keep == len(normal):
        return lambda epoch: list(range(len(findings)))

    def items(epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(seed + 7919 * (epoch + 1))  # independent of epoch_order's stream
        drawn = [normal[j] for j in torch.randperm(len(normal), generator=g)[:keep].tolist()]
        return sorted(abnormal + drawn)

    return items


def train_generator(cfg: MedKitConfig, student: CXREncoder, train: StudyTensors, val: StudyTensors | None,
                    out: Path, d: Dist, ckpt_every: int, lm=None, tokenizer=None,
                    calibration: StudyTensors | None = None) -> MedKitCXR:
    """The generator on every training study; the thresholds fitted at the end on ``calibration``
    (the studies held out of the encoders' training), or on ``train`` when None."""
    student.requires_grad_(False)
    model = MedKitCXR(cfg, student=student, lm=lm, tokenizer=tokenizer).to(d.device)
    gen = model.generator
    encoded = encode_studies(student, train, d)
    tr_tok, tr_mask = encoded.tokens, encoded.token_mask
    va = encode_studies(student, val, d) if val is not None and len(val) else None

    def knowledge(data: StudyTensors, i: int) -> str:
        return model.knowledge_for(data.findings[i])[0]

    def loss_fn(m, idx):
        k = [knowledge(train, i) for i in idx]
        r = [train.studies[i].report for i in idx]
        out_ = m(tr_tok[idx].to(d.device), tr_mask[idx].to(d.device), k, r)
        return out_.loss, {}

    @torch.no_grad()
    def val_loss(epoch: int) -> dict:
        if va is None:
            return {}
        gen.eval()
        n = min(len(val), cfg.train.eval_limit or len(val))
        total = 0.0
        for i in range(0, n, cfg.train.generator_batch_size):
            idx = list(range(i, min(i + cfg.train.generator_batch_size, n)))
            o = gen(va.tokens[idx].to(d.device), va.token_mask[idx].to(d.device), [knowledge(val, j) for j in idx],
                    [val.studies[j].report for j in idx])
            total += float(o.loss) * len(idx)
        gen.train()
        logger.info("generator epoch %d: val loss %.4f", epoch, total / n)
        return {"val_loss": total / n}

    lengths = [len(s.report) + len(knowledge(train, i)) for i, s in enumerate(train.studies)]
    run_loop("generator", gen, loss_fn, len(train), cfg.train.generator_batch_size, cfg.train.generator_epochs,
             cfg.train.lr_generator, cfg, out, d, ckpt_every, on_epoch_end=val_loss, lengths=lengths,
             epoch_items=generator_epoch_items(train.findings, cfg.train.normal_keep, cfg.train.seed))
    mark_done(out, "generator", d)
    gen.learn_report_text([s.report for s in train.studies])
    model.cfg.generator.template = fit_template([s.report for s in train.studies], cfg.generator.draft_min_reports)
    if calibration is None:
        rows = fit_encoder_thresholds(model.cfg, student, train, encoded.probs)
    else:
        rows = fit_encoder_thresholds(model.cfg, student, calibration)
    logger.info("finding thresholds: %s", {r["observation"]: r["threshold"] for r in rows})
    return model.eval()


def train(cfg: MedKitConfig, data: str | Path, out: str | Path, lm=None, tokenizer=None, ckpt_every: int = 50,
          val_data: str | Path | None = None, until: str = "generator") -> Path:
    """Run (or resume) the stages up to ``until`` (teacher, student or generator); returns the final
    model directory ``OUT/model``, or with ``until`` before the generator that stage's folder."""
    if until not in STAGES:
        raise ValueError(f"until must be one of {STAGES}, got {until!r}")
    out = Path(out)
    d = init_distributed()
    torch.set_num_threads(max(1, torch.get_num_threads() // d.world))
    seed_everything(cfg.train.seed + d.rank)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        check_resumable(out, cfg, {"teacher": cfg.train.teacher_epochs, "student": cfg.train.student_epochs,
                                   "generator": cfg.train.generator_epochs}, RESUMABLE_CHANGES)
    studies = load_studies(data, "train")
    if cfg.train.limit:
        studies = studies[: cfg.train.limit]
    try:
        val_studies = load_studies(val_data or data, "val")
    except ValueError:
        val_studies = []
    # Every val study is loaded: the encoders' findings AUC uses all of them, the generator's
    # validation loss the first train.eval_limit.
    logger.info("training on %d studies, validating on %d", len(studies), len(val_studies))
    train_set = StudyTensors(studies, cfg, show=d.main)
    val_set = StudyTensors(val_studies, cfg, show=d.main) if val_studies else None
    # The encoders never see the calibration studies; the generator trains on every study.
    encoder_set, calibration_set = train_set.split_calibration(cfg.train.calibration_share, cfg.train.seed)
    if calibration_set is not None:
        logger.info("encoders train on %d studies; %d held out for the thresholds", len(encoder_set),
                    len(calibration_set))
    teacher = train_teacher(cfg, encoder_set, out, d, ckpt_every, val_set)
    if until == "teacher":
        return _finish(out / "teacher", d)
    if cfg.encoder.report_encoder == "teacher":  # ablation: the generator reads the teacher's tokens
        encoder = teacher
    else:
        encoder = train_student(cfg, teacher, encoder_set, out, d, ckpt_every, val_set)
        del teacher
    if until == "student":
        return _finish(out / "student", d)
    if cfg.train.generator_limit:
        train_set = train_set.subset(cfg.train.generator_limit)
    model = train_generator(cfg, encoder, train_set, val_set, out, d, ckpt_every, lm, tokenizer, calibration_set)
    final = out / "model"
    if d.main:
        model.save(final)
        logger.info("model written to %s", final)
    return _finish(final, d)


def _finish(result: Path, d: Dist) -> Path:
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def export_model(run: str | Path, data: str | Path, out: str | Path) -> Path:
    """Build a model directory from a run's latest checkpoints (student + generator state), e.g.
    to promote an interrupted run's last good epoch; the report vocabulary and the finding
    thresholds come from the training studies in ``data``."""
    run, out = Path(run), Path(out)
    cfg = MedKitConfig.load(run / "config.json")
    student_file, gen_state = run / "student" / "student.safetensors", run / "generator" / "state.pt"
    for f in (student_file, gen_state):
        if not f.exists():
            raise ValueError(f"{f}: missing; the run has not reached the generator stage")
    student = CXREncoder(cfg.encoder, "student", pretrained=False)
    student.load_state_dict(load_file(str(student_file)))
    model = MedKitCXR(cfg, student=student.eval())
    state = torch.load(gen_state, map_location="cpu", weights_only=False)
    model.generator.load_trainable_state(state["model"])
    studies = load_studies(data, "train")
    if cfg.train.limit:
        studies = studies[: cfg.train.limit]
    model.generator.learn_report_text([s.report for s in studies])
    model.cfg.generator.template = fit_template([s.report for s in studies], cfg.generator.draft_min_reports)
    fit_encoder_thresholds(model.cfg, model.student, StudyTensors(calibration_studies(studies, cfg), cfg))
    model.save(out)
    logger.info("exported %s (generator epoch %d, step %d) to %s", run, state["epoch"], state["step"], out)
    return out
