"""Score a model on a split, with the two floors measured in the same run.

    medkit evaluate --data ../shared/data --split val --out val.json [--limit 50]

Floors (MISSION.md): ``most_frequent`` answers every study with the most frequent training
report (after R2Gen normalisation); ``nearest_neighbour`` answers with the training report of
the study whose student image embedding (mean-pooled over views) is closest by cosine.
Language metrics use the R2Gen protocol (``medkit.metrics.normalize_report``); clinical
efficacy uses MedKit's rule-based labeler on generated vs reference reports.
Latency is per study (batch 1, model already loaded, images read from disk included);
peak RSS is the process's maximum resident set size.
"""

from __future__ import annotations

import logging
import resource
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medkit.data import load_studies
from medkit.metrics import clinical_efficacy, language_metrics, normalize_report
from medkit.model import MedKitCXR, stack_views

logger = logging.getLogger(__name__)


def score(references: list[str], hypotheses: list[str]) -> dict:
    out = language_metrics(references, hypotheses)
    ce = clinical_efficacy(references, hypotheses)
    out.update({k: v for k, v in ce.items() if k.startswith("ce_")})
    out["per_observation"] = ce.get("per_observation", {})
    return out


@torch.no_grad()
def study_embedding(model: MedKitCXR, study) -> torch.Tensor:
    present = [i for i, p in enumerate(study.images) if p.exists()]
    views = [study.views[i] for i in present] if study.views else None
    arrays = model.load_views([study.images[i] for i in present], views)
    x, m = stack_views(arrays, model.cfg.encoder.image_size, model.cfg.encoder.max_views)
    return torch.nn.functional.normalize(model.student(x, m).pooled[0], dim=0)


def evaluate(data: str | Path, split: str, model_dir: str | Path | None = None, limit: int | None = None,
             lm_path: str | None = None, decode: dict | None = None, floors: bool = True,
             state_findings: bool | None = None) -> dict:
    model = MedKitCXR.load(model_dir, lm_path=lm_path)
    studies = [s for s in load_studies(data, split) if s.report.strip() and any(p.exists() for p in s.images)]
    if limit:
        studies = studies[:limit]
    if not studies:
        raise ValueError(f"{data}: no usable study in split {split!r}")
    refs = [s.report for s in studies]
    hyps, latencies, stated = [], [], []
    for s in tqdm(studies, desc=f"generating ({split})"):
        t0 = time.perf_counter()
        present = [i for i, p in enumerate(s.images) if p.exists()]
        out = model.report_from_files([s.images[i] for i in present],
                                      [s.views[i] for i in present] if s.views else None,
                                      state_findings=state_findings, **(decode or {}))
        latencies.append(time.perf_counter() - t0)
        hyps.append(out["report"])
        stated.append(out["stated_findings"])
    result = {
        "n_studies": len(studies), "split": split, "model": score(refs, hyps),
        "latency_s": {"p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95))},
        # how often the report had to be made to state a flagged finding (medkit.consistency)
        "stated_findings": {"studies": sum(1 for f in stated if f), "findings": sum(map(len, stated))},
        "examples": [{"id": s.id, "reference": r, "generated": h} for s, r, h in list(zip(studies, refs, hyps))[:5]],
    }
    if floors:
        train = [s for s in load_studies(data, "train") if s.report.strip() and any(p.exists() for p in s.images)]
        common = Counter(normalize_report(s.report) for s in train).most_common(1)[0][0]
        result["floors"] = {"most_frequent": score(refs, [common] * len(refs))}
        bank = torch.stack([study_embedding(model, s) for s in tqdm(train, desc="train embeddings")])
        queries = torch.stack([study_embedding(model, s) for s in studies])
        nearest = (queries @ bank.T).argmax(1).tolist()
        result["floors"]["nearest_neighbour"] = score(refs, [train[j].report for j in nearest])
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


METRIC_COLUMNS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "ce_precision",
                  "ce_recall", "ce_f1_micro", "ce_f1_macro")


def markdown_table(result: dict) -> str:
    rows = [("model", result["model"])] + [(f"floor: {k}", v) for k, v in result.get("floors", {}).items()]
    head = "| system | " + " | ".join(METRIC_COLUMNS) + " |"
    sep = "|---" * (len(METRIC_COLUMNS) + 1) + "|"
    lines = [head, sep]
    for name, m in rows:
        cells = ["n/a" if m.get(c) is None else f"{m[c]:.3f}" for c in METRIC_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lat = result["latency_s"]
    lines.append(f"\n{result['n_studies']} studies ({result['split']}); latency p50 {lat['p50']:.2f} s, "
                 f"p95 {lat['p95']:.2f} s per study; peak RSS {result['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)
