"""Score a newly trained findings head with the shipped model's template reports, before its
generator exists (diagnostic; the result must not ship).

    .venv/bin/python benchmarks/head_swap.py --run runs/cxr_v4 --out runs/diag/m_v4s
    .venv/bin/medkit calibrate --data ../shared/data --model runs/diag/m_v4s
    .venv/bin/medkit --threads 2 evaluate --data ../shared/data --split val --model runs/diag/m_v4s

Writes a model directory with the run's student (``OUT/student/student.safetensors``, and the
run's encoder and ``train`` settings) in place of the shipped one, beside the shipped generator.
That generator was trained on the shipped student's tokens, so only template reports
(``generator.report_base`` "template", which never run the language model) are meaningful from
this directory; ``--report-base generator`` would decode from tokens it has never seen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import load_file

from medkit.core.modeldir import ModelDir
from medkit.cxr.config import MedKitConfig
from medkit.cxr.encoders import CXREncoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a run folder whose student stage is done")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    shipped = ModelDir.shipped("cxr")
    cfg = MedKitConfig.load(shipped.config_file)
    run = MedKitConfig.load(Path(args.run) / "config.json")
    cfg.encoder, cfg.train = run.encoder, run.train  # the head's input settings and its calibration split
    cfg.encoder.report_encoder = "student"
    student = CXREncoder(cfg.encoder, "student", pretrained=False)
    student.load_state_dict(load_file(str(Path(args.run) / "student" / "student.safetensors")))
    ModelDir(args.out).save({"student": student.state_dict(), "generator": shipped.part("generator")}, cfg)
    print(f"wrote {args.out}: refit its thresholds with `medkit calibrate --model {args.out}` before scoring it")


if __name__ == "__main__":
    main()
