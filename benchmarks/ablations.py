"""Ablations of the chest X-ray method, at one fixed training budget, scored on val.

Each variant removes one part of the method and trains its report generator from scratch with
the same budget (the first ``--generator-studies`` training studies, one epoch), then
``medkit evaluate --report-base generator`` scores its text on the first ``--eval-studies`` val studies (greedy):

| variant | what changes |
|---|---|
| full | nothing: distilled student, knowledge prompt, LoRA |
| no_knowledge | no knowledge-graph prompt (``generator.use_knowledge=false``) |
| no_lora | frozen LM, projector and fusion only (``generator.lora_rank=0``) |
| no_distillation | the student trained on labeler labels only (KL and feature weights 0) |
| teacher_encoder | the generator reads the frozen teacher's tokens (``encoder.report_encoder=teacher``) |

Each row also carries the val mean AUC of the findings head the variant's reports use (its
student's, or the teacher's for teacher_encoder; ``best.json`` of that stage). The teacher (and,
where the variant keeps it, the distilled student) are reused from
``--base-run`` (a finished ``medkit train`` run), so every row differs from ``full`` in one part
only. A variant whose model exists is not retrained (rerun to resume). The budget is small
because CPU time is: compare rows with each other, not with the shipped model.

    python benchmarks/ablations.py --data ../shared/data --base-run runs/cxr_v4 --out runs/ablations_v4 \\
        --generator-studies 240 --eval-studies 40 --threads 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

VARIANTS: dict[str, dict[str, str]] = {
    "full": {},
    "no_knowledge": {"generator.use_knowledge": "false"},
    "no_lora": {"generator.lora_rank": "0"},
    "no_distillation": {"distill.kl_weight": "0", "distill.feature_weight": "0"},
    "teacher_encoder": {"encoder.report_encoder": "teacher"},
}
REUSES_STUDENT = {"full", "no_knowledge", "no_lora"}
COLUMNS = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "ce_f1_micro", "ce_f1_macro")


def medkit(args: list[str], threads: int, log: Path) -> None:
    cmd = [sys.executable, "-m", "medkit.cli", "--threads", str(threads), *args]
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)


def run_variant(name: str, a) -> dict:
    out = a.out / name
    out.mkdir(parents=True, exist_ok=True)
    stages = ["teacher"] + (["student"] if name in REUSES_STUDENT else [])
    for stage in stages:  # reuse the base run's finished stages
        if not (out / stage / "done").exists():
            shutil.copytree(a.base_run / stage, out / stage, dirs_exist_ok=True)
    base_cfg = json.loads((a.base_run / "config.json").read_text())
    sets = {
        "train.teacher_epochs": base_cfg["train"]["teacher_epochs"],
        "train.student_epochs": base_cfg["train"]["student_epochs"],
        "train.generator_epochs": 1,
        "train.generator_limit": a.generator_studies,
        "train.eval_limit": a.eval_studies,
        "train.warmup_steps": max(1, a.generator_studies // base_cfg["train"]["generator_batch_size"] // 10),
        "generator.num_beams": 1,
        **VARIANTS[name],
    }
    log = out / "ablation.log"
    if not (out / "model" / "model.safetensors").exists():
        args = ["train", "--data", str(a.data), "--out", str(out), "--config", str(a.base_run / "config.json")]
        for key, value in sets.items():
            args += ["--set", f"{key}={value}"]
        medkit(args, a.threads, log)
    result_path = out / "val.json"
    if not result_path.exists():
        # the language model's text: the parts ablated here are the generator's (the default
        # report base, the site template, does not run it)
        medkit(["evaluate", "--data", str(a.data), "--split", "val", "--model", str(out / "model"),
                "--report-base", "generator", "--limit", str(a.eval_studies), "--no-floors",
                "--out", str(result_path)], a.threads, log)
    result = json.loads(result_path.read_text())
    history = [json.loads(x) for x in (out / "generator" / "history.jsonl").read_text().splitlines()]
    val_losses = [h["val_loss"] for h in history if "val_loss" in h]
    # the findings head the variant's reports use: the teacher's for teacher_encoder, else its student's
    encoder = "teacher" if VARIANTS[name].get("encoder.report_encoder") == "teacher" else "student"
    head_auc = json.loads((out / encoder / "best.json").read_text())["mean_auc"]
    return {"variant": name, "changes": VARIANTS[name], "val_loss": val_losses[-1] if val_losses else None,
            "head_auc": head_auc, "n_studies": result["n_studies"], **{k: result["model"][k] for k in COLUMNS}}


def table(rows: list[dict]) -> str:
    lines = ["| variant | gen. val loss | head AUC | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 3) + "|"]
    for r in rows:
        loss = f"{r['val_loss']:.3f}" if r["val_loss"] is not None else "-"
        lines.append(f"| {r['variant']} | {loss} | {r['head_auc']:.3f} | " + " | ".join(f"{r[k]:.3f}" for k in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder holding iu_xray/")
    ap.add_argument("--base-run", type=Path, required=True, help="finished `medkit train` run (teacher, student)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the variants' runs and ablations.json")
    ap.add_argument("--generator-studies", type=int, default=240, help="training studies the generator sees")
    ap.add_argument("--eval-studies", type=int, default=40, help="val studies scored")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants: {sorted(unknown)}")
    for stage in ("teacher", "student"):
        if not (a.base_run / stage / "done").exists():
            ap.error(f"{a.base_run}: stage {stage} is not finished")
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        rows.append(run_variant(name, a))
        print(table(rows[-1:]), flush=True)
        (a.out / "ablations.json").write_text(json.dumps({"budget": {"generator_studies": a.generator_studies,
                                                                      "eval_studies": a.eval_studies},
                                                           "rows": rows}, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
