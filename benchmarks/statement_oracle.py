"""What do right statements cost the text? The site template edited with the *reference* findings.

    .venv/bin/python benchmarks/statement_oracle.py --data ../shared/data [--split train val] [--full]

For every study, the shipped model's template (``generator.template``) is edited by
``medkit.cxr.consistency.align_report`` with the reference report's own labeler findings as the
findings table (positive where the labeler reads positive, negative otherwise): a perfect findings
head. Each variant changes one statement's wording or where statements with no negating template
sentence go, so that wording and placement can be chosen on train (no images, seconds a variant)
and checked on val. Prints BLEU-4, ROUGE-L and CIDEr per split and variant (``--full``: the whole
``medkit evaluate`` scoring, METEOR and CE included, minutes a variant). No report text is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable

import medkit.cxr.consistency as consistency
from medkit.core.data import load_studies
from medkit.core.metrics import language_metrics
from medkit.cxr.evaluate import score
from medkit.cxr.labeler import OBSERVATIONS, Status, label_report, positive_findings
from medkit.cxr.model import default_model_dir, read_config

LUNG = {"Lung Lesion", "Atelectasis", "Edema", "Consolidation", "Pneumonia", "Lung Opacity"}
_ORIGINAL_STATE = consistency._state


def placed(devices_first: bool, lungs_before_pleura: bool) -> Callable:
    """``consistency._state`` that puts a statement no template sentence negates at the start
    (support devices) or before the pleural / spine sentences (lung findings) instead of the end."""
    def state(doc, finding, sentence, replace):
        if doc.where(finding, replace):
            return _ORIGINAL_STATE(doc, finding, sentence, replace)
        at = len(doc.parts)
        if finding == "Support Devices" and devices_first:
            at = 0
        elif finding in LUNG and lungs_before_pleura:
            later = [i for i, lab in enumerate(doc.labels) if "spine" in doc.parts[i]
                     or lab["Pleural Effusion"] is not Status.NOT_MENTIONED or lab["Pneumothorax"] is not Status.NOT_MENTIONED]
            at = later[0] if later else at
        doc.insert(at, sentence)
    return state


# name -> (statements replaced, placement)
VARIANTS: dict[str, tuple[dict[str, str], Callable]] = {
    "shipped": ({}, _ORIGINAL_STATE),
    "devices_first": ({}, placed(True, False)),
    "lungs_before_pleura": ({}, placed(False, True)),
    "both_placements": ({}, placed(True, True)),
    "heart_is_enlarged": ({"Cardiomegaly": "The heart is enlarged."}, _ORIGINAL_STATE),
    "cardiomegaly_word": ({"Cardiomegaly": "Cardiomegaly."}, _ORIGINAL_STATE),
    "heart_enlarged_contour_normal": (
        {"Cardiomegaly": "The heart is enlarged. The mediastinal contour is within normal limits."}, _ORIGINAL_STATE),
    "airspace_disease": ({"Lung Opacity": "There is airspace disease."}, _ORIGINAL_STATE),
    "focal_opacity": ({"Lung Opacity": "There is a focal opacity."}, _ORIGINAL_STATE),
    "nodule": ({"Lung Lesion": "There is a nodule."}, _ORIGINAL_STATE),
    "small_effusion": ({"Pleural Effusion": "There is a small pleural effusion."}, _ORIGINAL_STATE),
}


@contextlib.contextmanager
def variant(statements: dict[str, str], state: Callable):
    saved = dict(consistency.STATEMENTS)
    consistency.STATEMENTS.update(statements)
    consistency._state = state
    try:
        yield
    finally:
        consistency.STATEMENTS.clear()
        consistency.STATEMENTS.update(saved)
        consistency._state = _ORIGINAL_STATE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", nargs="+", default=["train", "val"])
    ap.add_argument("--variant", nargs="+", choices=sorted(VARIANTS), help="default: all")
    ap.add_argument("--full", action="store_true", help="METEOR and CE too (slow)")
    args = ap.parse_args()
    g = read_config(default_model_dir()).generator
    template = " ".join(g.template)
    splits = {}
    for split in args.split:
        refs = [s.report for s in load_studies(args.data, split) if s.report.strip()]
        found = [set(positive_findings(label_report(r))) for r in refs]  # each report labelled once
        tables = [{o: "positive" if o in pos else "negative" for o in OBSERVATIONS} for pos in found]
        splits[split] = (refs, tables)
    keys = ("bleu_4", "meteor", "rouge_l", "cider", "ce_precision", "ce_f1_macro") if args.full else ("bleu_4", "rouge_l", "cider")
    for split, (refs, _) in splits.items():
        alone = score(refs, [template] * len(refs)) if args.full else language_metrics(refs, [template] * len(refs), meteor=False)
        print("template_alone", split, json.dumps({k: round(alone[k], 4) for k in keys if alone.get(k) is not None}))
    for name in args.variant or VARIANTS:
        with variant(*VARIANTS[name]):
            row = {}
            for split, (refs, tables) in splits.items():
                hyps = [consistency.align_report(template, t, g.borderline)[0] for t in tables]
                r = score(refs, hyps) if args.full else language_metrics(refs, hyps, meteor=False)
                row[split] = {k: round(r[k], 4) for k in keys if r.get(k) is not None}
        print(name, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
