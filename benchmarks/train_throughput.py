"""Training throughput per stage: chest X-ray teacher, student and generator, and the CT student.

Runs the real training commands for one epoch on a few studies in a temporary folder and reads
the per-step timings (``seconds``, ``items``) that ``medkit.core.train.run_loop`` writes to each
stage's ``history.jsonl``. Image decoding and caching before the first step are not counted.
Use the numbers to size a training plan (steps x seconds per step).

    python benchmarks/train_throughput.py --data ../shared/data --studies 48 --threads 2 --out throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CT_MANIFEST = ROOT / "medkit" / "data" / "samples" / "ct" / "manifest.jsonl"


def stage_stats(run: Path, stage: str, skip_first: int = 1) -> dict | None:
    path = run / stage / "history.jsonl"
    if not path.exists():
        return None
    steps = [json.loads(x) for x in path.read_text().splitlines()]
    steps = [s for s in steps if "seconds" in s][skip_first:]  # the first step pays one-off set-up
    if not steps:
        return None
    secs = [s["seconds"] for s in steps]
    items = sum(s["items"] for s in steps)
    return {"steps": len(steps), "batch": steps[0]["items"], "s_per_step_median": round(statistics.median(secs), 3),
            "items_per_s": round(items / sum(secs), 3)}


def run(cmd: list[str], threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="data folder with iu_xray/ (e.g. ../shared/data)")
    ap.add_argument("--studies", type=int, default=48, help="training studies per stage (one epoch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-ct", action="store_true", help="skip the CT student")
    ap.add_argument("--out", default="train_throughput.json")
    args = ap.parse_args(argv)
    medkit = [sys.executable, "-m", "medkit.cli", "--threads", str(args.threads)]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        cxr = Path(tmp) / "cxr"
        run(medkit + ["train", "--data", args.data, "--out", str(cxr), "--ckpt-every", "0",
                      "--set", f"train.limit={args.studies}", "--set", "train.eval_limit=1",
                      "--set", "train.teacher_epochs=1", "--set", "train.student_epochs=1",
                      "--set", "train.generator_epochs=1"], args.threads)
        for stage in ("teacher", "student", "generator"):
            rows[f"cxr {stage}"] = stage_stats(cxr, stage)
        if not args.no_ct:
            ct = Path(tmp) / "ct"
            run(medkit + ["train-ct", "--data", str(CT_MANIFEST), "--out", str(ct), "--ckpt-every", "0",
                          "--set", "train.student_epochs=1", "--set", "train.crops_per_volume=6"], args.threads)
            rows["ct student (128x128x32 crops)"] = stage_stats(ct, "student")
    print(f"threads {args.threads}; one epoch on {args.studies} chest X-ray studies / the CT sample manifest")
    print("| stage | steps timed | batch | s / step (median) | items / s |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        if r:
            print(f"| {name} | {r['steps']} | {r['batch']} | {r['s_per_step_median']:.3f} | {r['items_per_s']:.2f} |")
        else:
            print(f"| {name} | - | - | - | - |")
    Path(args.out).write_text(json.dumps({"threads": args.threads, "studies": args.studies, "stages": rows},
                                         indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
