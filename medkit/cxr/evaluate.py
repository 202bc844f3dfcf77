"""Score a model on a split, with the three floors measured in the same run.

    medkit evaluate --data ../shared/data --split val --out val.json [--limit 50]

Floors (MISSION.md), each fitted on the *training* split only: ``most_frequent`` answers every
study with the most frequent training report (after R2Gen normalisation); ``nearest_neighbour``
answers with the training report of the study whose student image embedding (mean-pooled over
views) is closest by cosine; ``consensus`` answers every study with the training report of highest
mean sentence BLEU-4 to the other training reports (``medkit.core.metrics.consensus_report``; on IU
X-ray val BLEU-4 0.180, METEOR 0.216, ROUGE-L 0.348, CIDEr 0.334).
Language metrics use the R2Gen protocol (``medkit.core.metrics.normalize_report``); clinical
efficacy uses MedKit's rule-based labeler on generated vs reference reports: micro and macro
P/R/F1 and per observation, and the false-alarm rate (``medkit.cxr.metrics.false_alarms``: share of
the studies whose reference states no finding whose report states one), for the model and every
floor. ``findings_head`` scores the student's probabilities: AUC per observation against the
labeler's labels of the reference report (positive = labeler "positive", the label CE scores;
``auc_uncertain_positive`` also counts "uncertain", the U-Ones target the head is trained on),
``mean_auc`` over the observations with at least ``AUC_MIN_POSITIVES`` positives in the split.
Latency is per study (batch 1, model already loaded, images read from disk included);
peak RSS is the process's maximum resident set size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medkit.core.data import load_studies
from medkit.core.files import atomic_write
from medkit.core.generator.lm import cache_dir
from medkit.cxr.labeler import OBSERVATIONS, Status, label_reports
from medkit.core.metrics import consensus_report, findings_auc, language_metrics, normalize_report
from medkit.cxr.metrics import clinical_efficacy, false_alarms
from medkit.cxr.model import MedKitCXR, stack_views

logger = logging.getLogger(__name__)

AUC_MIN_POSITIVES = 10  # observations with fewer positives in the split are left out of mean_auc


def score(references: list[str], hypotheses: list[str]) -> dict:
    out = language_metrics(references, hypotheses)
    ce = clinical_efficacy(references, hypotheses)
    out.update({k: v for k, v in ce.items() if k.startswith("ce_")})
    out["per_observation"] = ce.get("per_observation", {})
    fa = false_alarms(references, hypotheses)
    out["false_alarm_rate"], out["false_alarm_rate_hedged"] = fa.pop("false_alarm_rate"), fa.pop("false_alarm_rate_hedged")
    out["false_alarms"] = fa
    return out


def head_metrics(references: list[str], probs: np.ndarray) -> dict:
    """AUC of the findings head's probabilities (N, 14) against the references' labels."""
    labels = label_reports(references)
    positive = np.array([[lab[o] is Status.POSITIVE for o in OBSERVATIONS] for lab in labels])
    hedged = np.array([[lab[o] in (Status.POSITIVE, Status.UNCERTAIN) for o in OBSERVATIONS] for lab in labels])
    out = findings_auc(probs, positive, OBSERVATIONS, AUC_MIN_POSITIVES)
    loose = findings_auc(probs, hedged, OBSERVATIONS, AUC_MIN_POSITIVES)
    out["positive_label"] = "labeler positive (uncertain, negative and not mentioned count as negative)"
    out["auc_uncertain_positive"] = {"mean_auc": loose["mean_auc"], "mean_over": loose["mean_over"],
                                     "per_observation": loose["per_observation"]}
    return out


@torch.no_grad()
def study_embedding(model: MedKitCXR, study) -> torch.Tensor:
    present = [i for i, p in enumerate(study.images) if p.exists()]
    views = [study.views[i] for i in present] if study.views else None
    arrays = model.load_views([study.images[i] for i in present], views)
    x, m = stack_views(arrays, model.cfg.encoder.image_size, model.cfg.encoder.max_views)
    return torch.nn.functional.normalize(model.student(x, m).pooled[0], dim=0)


def _bank_key(model: MedKitCXR, studies) -> str:
    """Hash of what the training-embedding bank depends on: the student's weights, its input
    settings, and the studies' image files (path, size, modification time)."""
    h = hashlib.sha256()
    for name, t in sorted(model.student.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([model.cfg.encoder.image_size, model.cfg.encoder.max_views, model.cfg.encoder.report_encoder]).encode())
    for s in studies:
        for i, p in enumerate(s.images):
            st = p.stat() if p.exists() else None
            h.update(f"{s.id}|{p}|{s.views[i] if s.views else None}|{st and st.st_size}|{st and st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def train_bank(model: MedKitCXR, train) -> torch.Tensor:
    """(N, C) student embeddings of the training studies for the nearest-neighbour floor, cached
    under ``medkit.core.generator.lm.cache_dir()/eval`` (about 10 minutes on one thread for IU X-ray's
    2,069 studies; the key changes with the weights or the images)."""
    path = cache_dir() / "eval" / f"bank-{_bank_key(model, train)}.pt"
    if path.exists():
        bank = torch.load(path, weights_only=True)
        if bank.shape[0] == len(train):
            return bank
    bank = torch.stack([study_embedding(model, s) for s in tqdm(train, desc="train embeddings")])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(bank, tmp))
    return bank


def evaluate(data: str | Path, split: str, model_dir: str | Path | None = None, limit: int | None = None,
             lm_path: str | None = None, decode: dict | None = None, floors: bool = True,
             state_findings: bool | None = None, report_base: str | None = None) -> dict:
    model = MedKitCXR.load(model_dir, lm_path=lm_path)
    studies = [s for s in load_studies(data, split) if s.report.strip() and any(p.exists() for p in s.images)]
    if limit:
        studies = studies[:limit]
    if not studies:
        raise ValueError(f"{data}: no usable study in split {split!r}")
    refs = [s.report for s in studies]
    hyps, latencies, probs = [], [], []
    edits: dict[str, list[list[str]]] = {"stated_findings": [], "hedged_findings": [], "withdrawn_findings": []}
    for s in tqdm(studies, desc=f"generating ({split})"):
        t0 = time.perf_counter()
        present = [i for i, p in enumerate(s.images) if p.exists()]
        out = model.report_from_files([s.images[i] for i in present],
                                      [s.views[i] for i in present] if s.views else None,
                                      state_findings=state_findings, report_base=report_base, **(decode or {}))
        latencies.append(time.perf_counter() - t0)
        hyps.append(out["report"])
        for key, found in edits.items():
            found.append(out.get(key, []))
        probs.append([f["probability"] for f in out["findings"]])
    result = {
        "n_studies": len(studies), "split": split, "report_base": "template" if model.uses_template(report_base) else "generator",
        "model": score(refs, hyps),
        "findings_head": head_metrics(refs, np.array(probs)),
        "latency_s": {"p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95))},
        # how often the report was edited to agree with the findings table (medkit.cxr.consistency)
        **{key: {"studies": sum(1 for f in found if f), "findings": sum(map(len, found))} for key, found in edits.items()},
        "examples": [{"id": s.id, "reference": r, "generated": h} for s, r, h in list(zip(studies, refs, hyps))[:5]],
    }
    if floors:
        train = [s for s in load_studies(data, "train") if s.report.strip() and any(p.exists() for p in s.images)]
        common = Counter(normalize_report(s.report) for s in train).most_common(1)[0][0]
        result["floors"] = {"most_frequent": score(refs, [common] * len(refs))}
        bank = train_bank(model, train)
        queries = torch.stack([study_embedding(model, s) for s in studies])
        nearest = (queries @ bank.T).argmax(1).tolist()
        result["floors"]["nearest_neighbour"] = score(refs, [train[j].report for j in nearest])
        consensus, mean_bleu = consensus_report([s.report for s in train])
        result["floors"]["consensus"] = score(refs, [consensus] * len(refs))
        result["floors"]["consensus"]["train_mean_bleu_4"] = mean_bleu
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


METRIC_COLUMNS = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "ce_precision", "ce_recall", "ce_f1_micro",
                  "ce_f1_macro", "false_alarm_rate", "false_alarm_rate_hedged")
SHORT_NAMES = {"ce_precision": "ce_p", "ce_recall": "ce_r", "ce_f1_micro": "ce_f1", "ce_f1_macro": "ce_f1_macro",
               "false_alarm_rate": "false_alarm", "false_alarm_rate_hedged": "+hedged"}


def _cell(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(result: dict) -> str:
    """The systems (model, floors) by metric, then the model's findings per observation."""
    rows = [("model", result["model"])] + [(f"floor: {k}", v) for k, v in result.get("floors", {}).items()]
    head = "| system | " + " | ".join(SHORT_NAMES.get(c, c) for c in METRIC_COLUMNS) + " |"
    lines = [head, "|---" * (len(METRIC_COLUMNS) + 1) + "|"]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(m.get(c)) for c in METRIC_COLUMNS) + " |")
    fa = result["model"].get("false_alarms", {})
    lines.append(f"\nfalse_alarm: share of the {fa.get('normal_studies', 0)} studies whose reference states no finding "
                 "whose report states one (+hedged: or hedges one)")
    head_ = result.get("findings_head", {})
    per_auc = head_.get("per_observation", {})
    lines += ["", "| observation | positives | head AUC | CE precision | CE recall | CE F1 | stated |", "|---" * 7 + "|"]
    for obs, v in result["model"].get("per_observation", {}).items():
        auc = per_auc.get(obs, {})
        lines.append(f"| {obs} | {v['support']} | {_cell(auc.get('auc'))} | {_cell(v['precision'])} | "
                     f"{_cell(v['recall'])} | {_cell(v['f1'])} | {v['predicted']} |")
    if head_:
        lines.append(f"\nfindings head: mean AUC {_cell(head_.get('mean_auc'))} over the {len(head_.get('mean_over', []))} "
                     f"observations with >= {head_.get('min_positives')} positives (labeler-positive references); "
                     f"{_cell(head_.get('auc_uncertain_positive', {}).get('mean_auc'))} counting uncertain as positive")
    edits = [f"{key.split('_')[0]} {result[key]['findings']} in {result[key]['studies']} studies"
             for key in ("stated_findings", "hedged_findings", "withdrawn_findings") if key in result]
    if edits:
        lines.append("\nreport edits to agree with the findings table (medkit.cxr.consistency): " + ", ".join(edits))
    lat = result["latency_s"]
    lines.append(f"\n{result['n_studies']} studies ({result['split']}); latency p50 {lat['p50']:.2f} s, "
                 f"p95 {lat['p95']:.2f} s per study; peak RSS {result['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)
