"""Per-observation decision thresholds for the student's finding probabilities.

    medkit calibrate --data ../shared/data                 # the shipped model, in place
    medkit calibrate --data ../shared/data --model runs/cxr/model

Findings on IU X-ray are rare (cardiomegaly in about 8 % of training reports, pleural effusion 5 %),
so a student trained with binary cross-entropy gives most true positives a probability well below
0.5: with one global threshold of 0.5 the shipped student called no pleural effusion, atelectasis
or support device in the whole val split, the knowledge prompt said "none" for nearly every study
and the report could only be normal. Two thresholds per observation are fitted against the
labeler's labels of the *training* reports (val stays for selection and reporting): of the
studies held out of the encoders' training when ``train.calibration_share`` > 0 (a student trained
for several epochs is more confident on the studies it trained on than on new ones), else of all:

- ``finding_thresholds``, the *flag* threshold: the one that maximises F1 (labels: positive or
  uncertain, the U-Ones targets the head is trained on). A flagged finding drives the knowledge
  prompt. An observation with fewer than ``MIN_POSITIVES`` training positives, or whose best F1
  stays under ``MIN_F1`` (the student cannot find it even on its own training data, so flagging it
  would only put noise into the prompt), keeps ``generator.finding_threshold``.
- ``statement_thresholds``, the *statement* threshold: the lowest one, at or above the flag
  threshold, at which at least ``MIN_STATED`` training studies are flagged and the precision
  against the labeler's *positive* labels (the labels clinical efficacy scores) reaches
  ``generator.statement_precision``; 1.0 where none does, or where the observation has fewer than
  ``MIN_STATEMENT_POSITIVES`` training positives (too few to trust a precision). Only findings at or above it are stated
  in the report as present (``medkit.cxr.consistency``): tuned for F1, the rare classes were flagged at
  thresholds as low as 0.12, and a report stating each such finding asserted a pneumothorax on a
  normal film.

It also refits ``generator.template``, the site's normal report that reports start from
(``medkit.cxr.consistency.fit_template``). ``medkit train`` fits all of them at the end of a run; this
command refits a model that exists. Only those fields of ``config.json`` change (``FITTED_FIELDS``;
the rest of the file, written when the model was trained, stays as it is): the weights are not touched.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from medkit.core.data import load_studies
from medkit.core.files import atomic_write
from medkit.core.modeldir import CONFIG_FILE, WEIGHTS_FILE
from medkit.cxr.config import MedKitConfig
from medkit.cxr.consistency import fit_template
from medkit.cxr.data import StudyTensors, calibration_split, encode_studies
from medkit.cxr.model import default_model_dir, load_student, read_config

logger = logging.getLogger(__name__)

#: Candidate thresholds (a coarse grid: finer steps only fit noise on a few dozen positives).
GRID = tuple(round(0.04 + 0.02 * i, 2) for i in range(44))  # 0.04 .. 0.90
MIN_POSITIVES = 5
MIN_F1 = 0.2
MIN_STATED = 5  # a statement threshold's precision is measured on at least this many flagged studies
# An observation with fewer training positives is never stated (only flagged): a head trained on
# those studies memorises a handful of positives, so its precision there says little about new
# studies (IU X-ray: pneumothorax, 9 positives, fitted 0.34 for precision 0.8 on train; stated once
# on val, wrongly).
MIN_STATEMENT_POSITIVES = 20


def f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    tp = float(np.sum(labels & predicted))
    denom = float(np.sum(labels) + np.sum(predicted))
    return 2 * tp / denom if denom else 0.0


def fit_thresholds(probs: np.ndarray, labels: np.ndarray, default: float, min_positives: int = MIN_POSITIVES,
                   min_f1: float = MIN_F1) -> tuple[list[float], list[dict]]:
    """probs, labels (N, C) -> (threshold per observation, per-observation report rows).

    Ties go to the higher threshold (fewer false positives at the same F1)."""
    if probs.shape != labels.shape or probs.ndim != 2:
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} must be the same (N, C) shape")
    positive = labels > 0.5
    thresholds, rows = [], []
    for j in range(probs.shape[1]):
        y, p = positive[:, j], probs[:, j]
        if y.sum() < min_positives:
            t = default
        else:
            scores = [f1(y, p >= t) for t in GRID]
            best = max(scores)
            t = max(t for t, s in zip(GRID, scores) if s == best) if best >= min_f1 else default
        thresholds.append(float(t))
        rows.append({"threshold": float(t), "positives": int(y.sum()), "predicted": int((p >= t).sum()),
                     "f1": round(f1(y, p >= t), 4), "f1_at_default": round(f1(y, p >= default), 4)})
    return thresholds, rows


def precision(labels: np.ndarray, predicted: np.ndarray) -> float:
    n = int(np.sum(predicted))
    return float(np.sum(labels & predicted)) / n if n else 0.0


def fit_statement_thresholds(probs: np.ndarray, labels: np.ndarray, flag_thresholds: list[float], target: float,
                             min_stated: int = MIN_STATED,
                             min_positives: int = MIN_STATEMENT_POSITIVES) -> tuple[list[float], list[dict]]:
    """probs, labels (N, C) -> (statement threshold per observation, rows): the lowest grid value
    >= the flag threshold where at least ``min_stated`` studies are called and the precision
    reaches ``target``; 1.0 (never stated) where none does or the observation has fewer than
    ``min_positives`` positives."""
    if probs.shape != labels.shape or probs.ndim != 2 or len(flag_thresholds) != probs.shape[1]:
        raise ValueError(f"probs {probs.shape}, labels {labels.shape} and {len(flag_thresholds)} flag thresholds "
                         "must agree on (N, C)")
    positive = labels > 0.5
    thresholds, rows = [], []
    for j, flag in enumerate(flag_thresholds):
        y, p = positive[:, j], probs[:, j]
        t = next((t for t in sorted({flag, *GRID}) if t >= flag and (p >= t).sum() >= min_stated
                  and precision(y, p >= t) >= target), 1.0) if y.sum() >= min_positives else 1.0
        thresholds.append(float(t))
        rows.append({"statement_threshold": float(t), "stated": int((p >= t).sum()) if t < 1.0 else 0,
                     "precision": round(precision(y, p >= t), 4) if t < 1.0 else None,
                     "precision_at_flag": round(precision(y, p >= flag), 4), "strict_positives": int(y.sum())})
    return thresholds, rows


def fit_model_thresholds(cfg: MedKitConfig, probs: np.ndarray, labels: np.ndarray,
                         positive_labels: np.ndarray | None = None) -> list[dict]:
    """Fit ``cfg.generator.finding_thresholds`` (F1 against ``labels``, (N, C)) and
    ``cfg.generator.statement_thresholds`` (precision against ``positive_labels``, (N, C); default
    ``labels``) to the student's probabilities (N, C) on the training studies; returns the
    per-observation rows."""
    thresholds, rows = fit_thresholds(probs, labels, cfg.generator.finding_threshold)
    cfg.generator.finding_thresholds = tuple(thresholds)
    stating, srows = fit_statement_thresholds(probs, labels if positive_labels is None else positive_labels,
                                              thresholds, cfg.generator.statement_precision)
    cfg.generator.statement_thresholds = tuple(stating)
    for name, row, srow in zip(cfg.observations, rows, srows):
        row.update(srow, observation=name)
    return rows


def fit_encoder_thresholds(cfg: MedKitConfig, encoder, calibration: StudyTensors, probs: np.ndarray | None = None) -> list[dict]:
    """:func:`fit_model_thresholds` on ``encoder``'s probabilities for the ``calibration`` studies
    (``probs``, when already computed for them)."""
    if probs is None:
        probs = encode_studies(encoder, calibration).probs
    return fit_model_thresholds(cfg, probs, calibration.label_matrix(), calibration.positive_matrix() > 0.5)


def calibration_studies(studies: list, cfg: MedKitConfig) -> list:
    """The training studies the thresholds are fitted on: the held-out share
    (``train.calibration_share``, the same draw as ``medkit train``), or all of them at 0."""
    if cfg.train.calibration_share <= 0:
        return studies
    held = calibration_split([s.id for s in studies], cfg.train.calibration_share, cfg.train.seed)
    return [s for s, h in zip(studies, held) if h]


FITTED_FIELDS = ("finding_thresholds", "statement_thresholds", "template")  # of generator, rewritten by calibrate


def calibrate(model_dir: str | Path | None, data: str | Path) -> list[dict]:
    """Refit the thresholds of a model directory on the training split of ``data``; rewrites its
    ``config.json`` atomically and returns one row per observation."""
    model_dir = Path(model_dir) if model_dir else default_model_dir()
    if not (model_dir / WEIGHTS_FILE).exists():
        raise ValueError(f"{model_dir}: no trained model ({WEIGHTS_FILE} missing)")
    cfg = read_config(model_dir)
    studies = load_studies(data, "train")
    if cfg.train.limit:
        studies = studies[: cfg.train.limit]
    rows = fit_encoder_thresholds(cfg, load_student(model_dir, cfg), StudyTensors(calibration_studies(studies, cfg), cfg))
    cfg.generator.template = fit_template([s.report for s in studies], cfg.generator.draft_min_reports)
    # Only the fitted fields change: the rest of config.json records how the model was trained, and
    # writing the whole config would add today's defaults for settings its training never had.
    raw = json.loads((model_dir / CONFIG_FILE).read_text())
    raw.setdefault("generator", {}).update({k: list(getattr(cfg.generator, k)) for k in FITTED_FIELDS})
    atomic_write(model_dir / CONFIG_FILE, json.dumps(raw, indent=2) + "\n")
    logger.info("thresholds written to %s", model_dir / CONFIG_FILE)
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| observation | flag threshold | train positives | flagged | train F1 | F1 at default | statement threshold "
             "| stated | precision (positive labels) |", "|---" * 9 + "|"]
    for r in rows:
        prec = "n/a" if r.get("precision") is None else f"{r['precision']:.3f}"
        never = r.get("statement_threshold", 1.0) >= 1.0
        lines.append(f"| {r['observation']} | {r['threshold']:.2f} | {r['positives']} | {r['predicted']} | {r['f1']:.3f} | "
                     f"{r['f1_at_default']:.3f} | {'never' if never else format(r['statement_threshold'], '.2f')} | "
                     f"{r.get('stated', 0)} | {prec} |")
    return "\n".join(lines)
