"""README figures from a training run, an evaluation JSON and one example study.

    .venv/bin/python benchmarks/plots.py --run runs/cxr_v1 --eval val.json --out docs/ \
        --example medkit/data/samples/nih_00000001_000.png --reference "NIH ChestX-ray14 label: Cardiomegaly"

Writes ``training_curves.png`` (loss per stage, smoothed, with validation loss of the
generator), ``per_observation.png`` (clinical-efficacy precision / recall per observation) and
``example_study.png`` (the views, the generated report, the findings' probabilities, the
knowledge the prompt carried, and the reference). The committed example is a licence-clean NIH
image whose reference is its dataset label; an IU X-ray study (images and reports may not be
redistributed) can be rendered the same way for local use, outside the repository.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

STAGES = ("teacher", "student", "generator")


def smooth(y: list[float], k: int = 15) -> np.ndarray:
    if len(y) < k:
        return np.asarray(y)
    return np.convolve(y, np.ones(k) / k, mode="valid")


def training_curves(run: Path, out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, stage in zip(axes, STAGES):
        path = run / stage / "history.jsonl"
        if not path.exists():
            ax.set_title(f"{stage}: no history")
            continue
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        # A resumed run appends the steps it redoes after its last checkpoint: keep the last copy.
        last = {(r["epoch"], r["step"]): r for r in rows if "loss" in r}
        steps = [last[k] for k in sorted(last)]
        ax.plot(smooth([r["loss"] for r in steps]), label="train loss (smoothed)")
        for key in ("kl", "feature", "label"):
            if steps and key in steps[0]:
                ax.plot(smooth([r[key] for r in steps]), label=key, alpha=0.7)
        val = [r for r in rows if "val_loss" in r]
        if val:
            per_epoch = max(1, len(steps) // max(1, len(val)))
            ax.plot([(i + 1) * per_epoch - 1 for i in range(len(val))], [r["val_loss"] for r in val], "o-",
                    label="val loss")
        ax.set_title(stage)
        ax.set_xlabel("optimiser step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=110)


def per_observation(result: dict, out: Path) -> None:
    per = result["model"].get("per_observation", {})
    names = [n for n, v in per.items() if v.get("support", 0) or v.get("predicted", 0)]
    if not names:
        return
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.bar(x - 0.2, [per[n]["precision"] for n in names], 0.4, label="precision")
    ax.bar(x + 0.2, [per[n]["recall"] for n in names], 0.4, label="recall")
    ax.set_xticks(x, [f"{n}\n(n={per[n].get('support', 0)})" for n in names], rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(f"Clinical efficacy per observation ({result['split']}, {result['n_studies']} studies)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "per_observation.png", dpi=110)


def example_study(files: list[str], reference: str | None, out: Path, model_dir: str | None = None) -> dict:
    import textwrap

    from medkit.cxr.images import load_cxr
    from medkit.cxr.model import MedKitCXR

    model = MedKitCXR.load(model_dir)
    result = model.report_from_files(files)
    fig = plt.figure(figsize=(10.5, 4.6))
    n = len(files)
    for i, f in enumerate(files):
        ax = fig.add_axes([0.01 + i * 0.3 / n, 0.05, 0.3 / n - 0.01, 0.85])
        ax.imshow(load_cxr(f), cmap="gray")
        ax.set_title(Path(f).name, fontsize=8)
        ax.axis("off")
    top = sorted(result["findings"], key=lambda x: -x["probability"])[:5]
    lines = ["Generated report (shipped model, greedy):", *textwrap.wrap(result["report"], 80), "",
             "Findings, highest probabilities (each with its own threshold):",
             *[f"  {x['name']}: {x['probability']:.2f} vs {x['threshold']:.2f} ({x['status']})" for x in top], "",
             "Knowledge in the prompt:", *[f"  {t}" for t in result.get("knowledge", [])[:4]]]
    if reference:
        lines += ["", "Reference:", *textwrap.wrap(reference, 80)]
    fig.text(0.33, 0.95, "\n".join(lines), va="top", family="monospace", fontsize=8.5)
    fig.savefig(out / "example_study.png", dpi=110)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--eval", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--example", nargs="+", metavar="IMAGE", help="the views of one study to render with its report")
    ap.add_argument("--reference", help="the example's reference report or label")
    ap.add_argument("--model", help="model directory (default: the shipped model)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    training_curves(args.run, args.out)
    if args.eval:
        per_observation(json.loads(args.eval.read_text()), args.out)
    if args.example:
        example_study(args.example, args.reference, args.out, args.model)
    print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
