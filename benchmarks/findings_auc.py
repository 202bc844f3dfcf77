"""Findings-head AUC per observation on a split, for a model directory's student or a run's encoders.

The same code as the per-epoch validation of ``medkit train`` (``medkit.core.metrics.findings_auc``,
positive = the labeler's positive for the study's report; the mean over observations with at
least ``--min-positives`` positives), so shipped and new heads compare on equal terms.

    python benchmarks/findings_auc.py --data ../shared/data --split val                  # shipped student
    python benchmarks/findings_auc.py --data ../shared/data --run runs/teacher_v2 --stage teacher
    python benchmarks/findings_auc.py --data ../shared/data --ensemble shipped runs/cxr_v4:teacher runs/cxr_l2:teacher

``--best-f1`` adds each observation's F1 at the threshold that is best *on this split* and the mean
over the observations with a positive: an optimistic ceiling for the CE macro-F1 of any report that
states this head's thresholded findings (the labeler reading every statement right).

``--ensemble`` scores each head (``shipped``, or ``RUN:STAGE`` with that stage's ``best.safetensors``)
and their averaged probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_encoder(model: str | None, run: str | None, stage: str, weights: str | None):
    """(encoder, config) of a model directory's student, or of a run's teacher / student."""
    from safetensors.torch import load_file

    from medkit.cxr.config import MedKitConfig
    from medkit.cxr.encoders import CXREncoder
    from medkit.cxr.model import load_student, read_config

    if run is None:
        cfg = read_config(model)
        from medkit.cxr.model import default_model_dir

        return load_student(model or default_model_dir(), cfg), cfg
    cfg = MedKitConfig.load(Path(run) / "config.json")
    enc = CXREncoder(cfg.encoder, stage, pretrained=False)
    enc.load_state_dict(load_file(weights or str(Path(run) / stage / f"{stage}.safetensors")))
    return enc.eval(), cfg


def best_f1(prob, positive) -> tuple[float, float]:
    """(F1, threshold) at the best cut of one observation's probabilities (ties: the higher cut)."""
    from medkit.cxr.calibrate import f1

    return max([(0.0, 1.0), *((f1(positive, prob >= t), t) for t in sorted(set(prob.tolist())))])


def ensemble(args) -> int:
    """Each head's mean AUC, then the AUC of their averaged probabilities (heads may differ in image size)."""
    from medkit.core.data import load_studies
    from medkit.core.metrics import findings_auc
    from medkit.cxr.data import StudyTensors, encode_studies

    studies, tensors, probs = load_studies(args.data, args.split), {}, []
    for spec in args.ensemble:
        if spec == "shipped":
            enc, cfg = load_encoder(None, None, "student", None)
        else:
            run, stage = spec.rsplit(":", 1)
            enc, cfg = load_encoder(None, run, stage, str(Path(run) / stage / "best.safetensors"))
        size = cfg.encoder.image_size
        if size not in tensors:
            tensors[size] = StudyTensors(studies, cfg, show=False)
        probs.append(encode_studies(enc, tensors[size]).probs)
        positives = tensors[size].positive_matrix()  # the same studies' labels at every image size
        print(f"{spec}: mean AUC {findings_auc(probs[-1], positives, cfg.observations, args.min_positives)['mean_auc']:.4f}")
    res = findings_auc(sum(probs) / len(probs), positives, cfg.observations, args.min_positives)
    print(f"average of {len(probs)}: mean AUC {res['mean_auc']:.4f}; "
          + ", ".join(f"{k} {res['per_observation'][k]['auc']:.3f}" for k in res["mean_over"]))
    if args.out:
        Path(args.out).write_text(json.dumps({"heads": args.ensemble, **res}, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--model", help="model directory (default: the shipped model); its student is scored")
    ap.add_argument("--run", help="a `medkit train` run folder instead (with --stage)")
    ap.add_argument("--stage", choices=("teacher", "student"), default="teacher")
    ap.add_argument("--weights", help="with --run: a safetensors file of that stage (e.g. OUT/teacher/best.safetensors)")
    ap.add_argument("--min-positives", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--best-f1", action="store_true", help="also each observation's F1 at its best threshold on this split")
    ap.add_argument("--ensemble", nargs="+", metavar="HEAD", help="shipped or RUN:STAGE, scored alone and averaged")
    ap.add_argument("--out", help="write the result as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.ensemble:
        return ensemble(args)
    from medkit.core.data import load_studies
    from medkit.core.metrics import findings_auc
    from medkit.cxr.data import StudyTensors, encode_studies

    enc, cfg = load_encoder(args.model, args.run, args.stage, args.weights)
    data = StudyTensors(load_studies(args.data, args.split), cfg, show=False)
    probs = encode_studies(enc, data).probs
    res = findings_auc(probs, data.positive_matrix(), cfg.observations, args.min_positives)
    print(f"{args.split}: {len(probs)} studies; mean AUC {res['mean_auc']} over {len(res['mean_over'])} observations "
          f"with >= {args.min_positives} positives")
    positives = data.positive_matrix().astype(bool)
    print("| observation | positives | AUC |" + (" best F1 (threshold) |\n|---|---|---|---|" if args.best_f1 else "\n|---|---|---|"))
    for i, name in enumerate(cfg.observations):
        a, n = res["per_observation"][name]["auc"], res["per_observation"][name]["positives"]
        mark = "" if name in res["mean_over"] else " (not in mean)"
        row = f"| {name} | {n} | {'-' if a is None else f'{a:.3f}'}{mark} |"
        if args.best_f1 and n:
            f1, t = best_f1(probs[:, i], positives[:, i])
            res["per_observation"][name]["best_f1"], res["per_observation"][name]["best_threshold"] = f1, t
            row += f" {f1:.3f} ({t:.2f}) |"
        print(row)
    if args.best_f1:
        f1s = [v["best_f1"] for v in res["per_observation"].values() if "best_f1" in v]
        res["best_f1_macro"] = sum(f1s) / len(f1s)
        print(f"mean best F1 over the {len(f1s)} observations with a positive: {res['best_f1_macro']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
