"""CT evaluation over a manifest of volumes with reference organ masks.

For every study of a JSONL manifest (the ``medkit train-ct`` format: ``images`` = one volume,
``masks`` = its reference label map, ``mask_labels`` = MedKit organ -> value in that map, default
the TotalSegmentator values) the CT model runs exactly as ``medkit generate`` runs it, and per organ
that the reference can speak for (those in ``mask_labels``) the command reports:

- Dice of the written label volume against the reference mask (input grid, nearest neighbour);
  an organ absent from both is skipped, one the model finds where the reference has none scores 0;
- the volume error of the segmentation, (predicted - reference) / reference;
- what the report did with it: ``measured``, ``rejected`` (failed the plausibility checks,
  ``medkit.ct.plausibility``), or ``absent`` (not segmented);

and per volume the organs the plausibility checks rejected and the latency (read, segment,
measure, report, write; the model loaded once beforehand). Studies with ``split: "train"`` are
*seen* (the model trained on their masks), all others *unseen*; the summary keeps them apart.

    medkit evaluate-ct --manifest medkit/data/samples/ct/manifest.jsonl --out ct_eval.json
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medkit.ct.images import read_mask
from medkit.ct.model import MedKitCT
from medkit.ct.train import load_ct_manifest

logger = logging.getLogger(__name__)


def _dice(a: np.ndarray, b: np.ndarray) -> float | None:
    n = int(a.sum()) + int(b.sum())
    return None if n == 0 else round(2.0 * float((a & b).sum()) / n, 4)


def evaluate_study(model, study, work: Path) -> dict:
    """One study: per-organ Dice, volumes and report status, the rejected organs, the latency."""
    organs = model.cfg.encoder.organs
    t0 = time.perf_counter()
    r = model.report_from_path(study.volume, work / study.id)
    latency = time.perf_counter() - t0
    pred_img = sitk.ReadImage(r["segmentation"])
    pred = sitk.GetArrayFromImage(pred_img)
    truth = sitk.GetArrayFromImage(read_mask(study.mask, pred_img, study.mask_labels, organs))
    voxel_ml = float(np.prod(pred_img.GetSpacing())) / 1000.0
    rows = {}
    for k, organ in enumerate(organs, 1):
        if organ not in study.mask_labels:
            continue  # the reference does not label this organ: nothing to compare with
        got, ref = pred == k, truth == k
        dice = _dice(got, ref)
        if dice is None:
            continue
        m = r["measurements"].get(organ)
        status = "absent" if m is None else ("measured" if m.get("reliable", True) else "rejected")
        ref_ml, pred_ml = round(float(ref.sum()) * voxel_ml, 1), round(float(got.sum()) * voxel_ml, 1)
        rows[organ] = {"dice": dice, "reference_ml": ref_ml, "predicted_ml": pred_ml,
                       "volume_error_pct": round(100.0 * (pred_ml - ref_ml) / ref_ml, 1) if ref_ml else None,
                       "report": status, "implausible": (m or {}).get("implausible", [])}
    rejected = sorted(o for o, m in r["measurements"].items() if m.get("reliable") is False)
    measured = sorted(o for o, m in r["measurements"].items() if o in organs and m.get("reliable", True))
    return {"id": study.id, "split": study.split, "seen": study.split == "train", "volume": str(study.volume),
            "size": r["volume"]["size"], "latency_s": round(latency, 2), "organs": rows, "rejected": rejected,
            "measured": measured, "warnings": r["warnings"]}


def summarize(studies: list[dict]) -> dict:
    """Seen and unseen volumes apart: mean Dice per organ, rejected / measured organ counts, latency."""
    out = {}
    for group, seen in (("seen", True), ("unseen", False)):
        rows = [s for s in studies if s["seen"] == seen]
        if not rows:
            continue
        dice: dict[str, list[float]] = {}
        for s in rows:
            for organ, o in s["organs"].items():
                dice.setdefault(organ, []).append(o["dice"])
        out[group] = {"volumes": len(rows),
                      "mean_dice": {o: round(float(np.mean(v)), 4) for o, v in dice.items()},
                      "organs_rejected": sum(len(s["rejected"]) for s in rows),
                      "organs_measured": sum(len(s["measured"]) for s in rows),
                      "mean_latency_s": round(float(np.mean([s["latency_s"] for s in rows])), 2)}
    return out


def evaluate_ct(manifest: str | Path, model_dir: str | Path | None = None, split: str | None = None) -> dict:
    """Evaluate the CT model (default: the shipped one) on every study with a mask in ``manifest``."""
    studies = load_ct_manifest(manifest, split=split)
    with_mask = [s for s in studies if s.mask is not None]
    for s in studies:
        if s.mask is None:
            logger.warning("evaluate-ct: study %s has no reference mask ('masks'): skipped", s.id)
    if not with_mask:
        raise ValueError(f"{manifest}: no study with a reference mask ('masks') to evaluate"
                         + (f" in split {split!r}" if split else ""))
    model = MedKitCT.load(model_dir)
    with tempfile.TemporaryDirectory(prefix="medkit_ct_eval_") as tmp:
        rows = [evaluate_study(model, s, Path(tmp)) for s in with_mask]
    return {"manifest": str(manifest), "model": str(model_dir or "shipped"), "studies": rows,
            "summary": summarize(rows)}


def markdown_table(result: dict) -> str:
    lines = ["| volume | seen in training | organ | Dice | reference mL | segmented mL | volume error | report |",
             "|---|---|---|---|---|---|---|---|"]
    for s in result["studies"]:
        for organ, o in s["organs"].items():
            err = "–" if o["volume_error_pct"] is None else f"{o['volume_error_pct']:+.1f} %"
            lines.append(f"| {s['id']} | {'yes' if s['seen'] else 'no'} | {organ} | {o['dice']:.3f} | "
                         f"{o['reference_ml']:g} | {o['predicted_ml']:g} | {err} | {o['report']} |")
    lines += ["", "| volume | seen in training | organs measured | organs rejected | latency |", "|---|---|---|---|---|"]
    for s in result["studies"]:
        lines.append(f"| {s['id']} | {'yes' if s['seen'] else 'no'} | {', '.join(s['measured']) or '–'} | "
                     f"{', '.join(s['rejected']) or '–'} | {s['latency_s']:.2f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    if len(argv) != 1:
        print("usage: python -m medkit.ct.evaluate MANIFEST.jsonl", file=sys.stderr)
        return 2
    res = evaluate_ct(argv[0])
    print(markdown_table(res))
    print(json.dumps(res["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
