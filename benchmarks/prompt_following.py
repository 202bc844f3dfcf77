"""Does the generator write what the knowledge prompt says? Student prompts against reference prompts, on val.

    python benchmarks/prompt_following.py --data ../shared/data --split val --limit 100 --out runs/prompt_following.json

Clinical efficacy has two sources of error: the student's findings (which drive the knowledge
prompt) and the generator's use of the prompt. Each study is decoded twice with the same visual
tokens: once with the prompt built from the student's findings (what ``medkit evaluate`` does),
once with the prompt built from the labeler's labels of the reference report ("reference
prompt", an upper bound no deployed model has). For each, the table gives the clinical-efficacy
scores and prompt adherence: of the findings named in the prompt, the share the labeler finds
positive (or uncertain) in the generated report; and the share of the report's positive findings
that the prompt did not name. If the reference prompt does not lift CE far, the generator is the
bottleneck, not the student.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from medkit.core.data import load_studies
from medkit.cxr.evaluate import score
from medkit.cxr.labeler import label_report, positive_findings
from medkit.cxr.model import MedKitCXR, prompt_findings

COLUMNS = ("bleu_4", "meteor", "rouge_l", "ce_precision_macro", "ce_recall_macro", "ce_f1_micro", "ce_f1_macro")


def adherence(prompted: list[list[str]], reports: list[str]) -> dict:
    """Share of prompted findings the reports state, and of stated findings the prompts did not name."""
    said = [set(positive_findings(label_report(r))) for r in reports]
    named = [set(p) for p in prompted]
    n_named, n_said = sum(map(len, named)), sum(map(len, said))
    return {"prompted_findings": n_named, "prompted_and_stated": sum(len(p & s) for p, s in zip(named, said)),
            "stated_findings": n_said, "stated_unprompted": sum(len(s - p) for p, s in zip(named, said)),
            "adherence": sum(len(p & s) for p, s in zip(named, said)) / n_named if n_named else 0.0,
            "unprompted_share": sum(len(s - p) for p, s in zip(named, said)) / n_said if n_said else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)

    model = MedKitCXR.load(a.model)
    studies = [s for s in load_studies(a.data, a.split) if s.report.strip() and any(p.exists() for p in s.images)]
    studies = studies[: a.limit]
    refs = [s.report for s in studies]
    results = {"model": str(a.model or "shipped"), "n_studies": len(studies)}
    student_findings, reference_findings, hyps = [], [], {"student": [], "reference": []}
    for s in studies:
        present = [i for i, p in enumerate(s.images) if p.exists()]
        views = [s.views[i] for i in present] if s.views else None
        tokens, mask, prompt, findings, _ = model.generator_inputs(
            model.load_views([s.images[i] for i in present], views))
        student_findings.append(prompt_findings(findings))
        reference_findings.append(positive_findings(label_report(s.report)))
        hyps["student"].append(model.generator.generate(tokens, mask, [prompt])[0])
        reference_prompt = model.knowledge_for(reference_findings[-1])[0]
        hyps["reference"].append(model.generator.generate(tokens, mask, [reference_prompt])[0])
    for name, prompted in (("student", student_findings), ("reference", reference_findings)):
        m = score(refs, hyps[name])
        per_obs = m.pop("per_observation", {})
        results[name] = {"metrics": m, "adherence": adherence(prompted, hyps[name]),
                         "recall_per_observation": {k: v["recall"] for k, v in per_obs.items() if v["support"]}}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=2))
    print("| prompt from | " + " | ".join(COLUMNS) + " | adherence | unprompted share |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    for name in ("student", "reference"):
        r = results[name]
        cells = [f"{r['metrics'][c]:.3f}" for c in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + f" | {r['adherence']['adherence']:.3f} | "
              f"{r['adherence']['unprompted_share']:.3f} |")


if __name__ == "__main__":
    main()
