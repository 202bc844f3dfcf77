"""Inference speed of the chest X-ray model: load time, per-study latency (1 and 2 threads), peak RSS.

    .venv/bin/python benchmarks/speed.py [--model DIR] [--runs 20] [--out speed.json]

The study is the two committed NIH sample views (frontal PNGs), read from disk on every call as
`medkit generate` does. Each thread count runs in a fresh subprocess so that load time and
peak RSS are that configuration's own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = [ROOT / "medkit/data/samples/nih_00000001_000.png", ROOT / "medkit/data/samples/nih_00027426_000.png"]

CHILD = r"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
threads, runs, model_dir, beams = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] or None, int(sys.argv[4])
torch.set_num_threads(threads)
t0 = time.perf_counter()
from medkit.cxr.model import MedKitCXR
model = MedKitCXR.load(model_dir)
load_s = time.perf_counter() - t0
study = sys.argv[5:]
decode = {"num_beams": beams} if beams else {}
model.report_from_files(study, **decode)  # warm-up
lat, n_tokens = [], []
for _ in range(runs):
    t = time.perf_counter()
    out = model.report_from_files(study, **decode)
    lat.append(time.perf_counter() - t)
    n_tokens.append(len(model.generator.tokenizer(out["report"]).input_ids))
print(json.dumps({"threads": threads, "load_s": load_s, "p50_s": float(np.percentile(lat, 50)),
                  "p95_s": float(np.percentile(lat, 95)), "mean_report_tokens": float(np.mean(n_tokens)),
                  "num_beams": beams or model.cfg.generator.num_beams,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="model directory (default: shipped model)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--num-beams", type=int, default=0, help="override the model's beam count")
    ap.add_argument("--out", help="write JSON here")
    args = ap.parse_args()
    rows = []
    for t in args.threads:
        r = subprocess.run([sys.executable, "-c", CHILD, str(t), str(args.runs), args.model, str(args.num_beams),
                            *map(str, STUDY)], capture_output=True, text=True, cwd=ROOT)
        if r.returncode:
            print(r.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print("| threads | beams | load (s) | p50 (s) | p95 (s) | report tokens | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threads']} | {r['num_beams']} | {r['load_s']:.2f} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | "
              f"{r['mean_report_tokens']:.0f} | {r['peak_rss_mb']:.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"study": [p.name for p in STUDY], "runs": args.runs, "results": rows},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
