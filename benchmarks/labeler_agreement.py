"""Agreement of medkit.cxr.labeler with the Open-i MeSH terms of IU X-ray reports.

Open-i indexed every IU X-ray report by hand with MeSH major terms ("Cardiomegaly/borderline",
"Pulmonary Atelectasis/base/left", "normal"; Demner-Fushman et al., JAMIA 2016). Those terms
are an independent reference for a text labeler, though not a gold standard: they record what
is present (a negated finding gets no term), they have their own granularity (calcified
granulomas, "Costophrenic Angle/blunted"), and "normal" means no term at all, including
findings outside the 14 CheXpert observations (spondylosis, hiatal hernia). The mapping from
MeSH to observations is in ``MESH_TO_OBSERVATION``.

For each observation the labeler is positive when its label is POSITIVE, or UNCERTAIN with
``--uncertain-as 1`` (the default: MeSH indexes borderline / probable findings too). The table
gives counts, precision, recall and F1 of the labeler against MeSH, and Cohen's kappa.

Command::

    python benchmarks/labeler_agreement.py --data /work/shared/data --split train --out agreement.json
    # disagreements for one observation:
    python benchmarks/labeler_agreement.py --data /work/shared/data --show "Lung Lesion" --examples 20

The data folder must hold ``iu_xray/annotation.json`` (see the data README). Nothing from the
reports is written to ``--out``: only counts and scores.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medkit.cxr.labeler import OBSERVATIONS, Status, extract_mentions, label_report  # noqa: E402

logger = logging.getLogger(__name__)

# MeSH heading -> (observation, required subterm or None). A required subterm must appear among
# the "/"-separated qualifiers ("Density/lung/base" counts as Lung Opacity, "Density/breast" not).
# Counts of the headings in the train split: run with --list-mesh.
MESH_TO_OBSERVATION: dict[str, list[tuple[str, str | None]]] = {
    "Cardiomegaly": [("Cardiomegaly", None)],
    "Cardiac Shadow": [("Cardiomegaly", "enlarged"), ("Cardiomegaly", "borderline")],
    "Mediastinum": [
        ("Enlarged Cardiomediastinum", "prominent"),
        ("Enlarged Cardiomediastinum", "enlarged"),
    ],
    "Pleural Effusion": [("Pleural Effusion", None)],
    "Costophrenic Angle": [("Pleural Effusion", "blunted")],
    "Hydropneumothorax": [("Pleural Effusion", None), ("Pneumothorax", None)],
    "Hemopneumothorax": [("Pleural Effusion", None), ("Pneumothorax", None)],
    "Hemothorax": [("Pleural Effusion", None)],
    "Pneumothorax": [("Pneumothorax", None)],
    "Opacity": [("Lung Opacity", None)],
    "Infiltrate": [("Lung Opacity", None)],
    "Airspace Disease": [("Lung Opacity", None)],
    "Density": [("Lung Opacity", "lung")],
    "Cicatrix": [("Lung Opacity", "lung"), ("Pleural Other", "pleura")],
    # The labeler counts interstitial markings, fibrosis and scarring as Lung Opacity.
    "Markings": [("Lung Opacity", "interstitial")],
    "Lung Diseases, Interstitial": [("Lung Opacity", None)],
    "Pulmonary Fibrosis": [("Lung Opacity", None)],
    "Consolidation": [("Consolidation", None), ("Lung Opacity", None)],
    "Pneumonia": [("Pneumonia", None)],
    "Pulmonary Atelectasis": [("Atelectasis", None)],
    "Volume Loss": [("Atelectasis", None)],
    "Pulmonary Edema": [("Edema", None)],
    "Edema": [("Edema", None)],
    "Pulmonary Congestion": [("Edema", None)],
    "Fractures, Bone": [("Fracture", None)],
    "Nodule": [("Lung Lesion", None)],
    "Mass": [("Lung Lesion", None)],
    "Granuloma": [("Lung Lesion", None)],
    "Calcified Granuloma": [("Lung Lesion", None)],
    "Thickening": [("Pleural Other", "pleura")],
    "Catheters, Indwelling": [("Support Devices", None)],
    "Surgical Instruments": [("Support Devices", None)],
    "Implanted Medical Device": [("Support Devices", None)],
    "Medical Device": [("Support Devices", None)],
    "Stents": [("Support Devices", None)],
    "Tube, Inserted": [("Support Devices", None)],
    "Sutures": [("Support Devices", None)],
}
NORMAL_ROW = "No Finding (MeSH 'normal')"
PATHOLOGIES = [o for o in OBSERVATIONS if o not in ("No Finding", "Support Devices")]
# Qualifiers that put a lesion outside the lung ("Mass/breast", "Calcified Granuloma/mediastinum").
NOT_LUNG = frozenset(
    {"breast", "heart", "mediastinum", "paratracheal", "thoracic vertebrae", "lymph nodes"}
)


def mesh_reference(mesh_terms: list[str]) -> set[str]:
    """Observations that a study's MeSH terms assert as present.

    "No Finding" follows the labeler's own definition (no mapped pathology term);
    NORMAL_ROW is Open-i's literal "normal" (no term at all, spondylosis included).
    """
    found = set()
    for term in mesh_terms:
        heading, *qualifiers = [part.strip() for part in term.split("/")]
        for obs, required in MESH_TO_OBSERVATION.get(heading, []):
            if obs == "Lung Lesion" and NOT_LUNG.intersection(qualifiers):
                continue
            if required is None or required in qualifiers:
                found.add(obs)
    if not found.intersection(PATHOLOGIES):
        found.add("No Finding")
    if [t.strip() for t in mesh_terms] == ["normal"]:
        found.add(NORMAL_ROW)
    return found


def report_text(record: dict) -> str:
    """Findings and impression, as a radiologist reads them."""
    parts = [record.get("findings") or "", record.get("impression") or ""]
    return "\n".join(p for p in parts if p.strip())


def agreement(reference: list[bool], predicted: list[bool]) -> dict[str, float]:
    """Counts, precision, recall, F1 and Cohen's kappa of two binary label lists."""
    n = len(reference)
    tp = sum(r and p for r, p in zip(reference, predicted))
    fp = sum(p and not r for r, p in zip(reference, predicted))
    fn = sum(r and not p for r, p in zip(reference, predicted))
    tn = n - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    observed = (tp + tn) / n
    expected = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
    kappa = (observed - expected) / (1 - expected) if expected < 1 else float("nan")
    return {
        "n_mesh": tp + fn, "n_labeler": tp + fp, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": precision, "recall": recall, "f1": f1, "kappa": kappa,
    }


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    def fmt(x: float) -> str:
        return "n/a" if x != x else f"{x:.3f}"

    lines = [
        "| observation | n MeSH + | n labeler + | precision | recall | F1 | kappa |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for obs, r in rows.items():
        lines.append(
            f"| {obs} | {r['n_mesh']} | {r['n_labeler']} | {fmt(r['precision'])} | "
            f"{fmt(r['recall'])} | {fmt(r['f1'])} | {fmt(r['kappa'])} |"
        )
    return "\n".join(lines)


def show_disagreements(records, labels, refs, observation: str, positive, limit: int) -> None:
    """Print reports where labeler and MeSH disagree on one observation (local use only)."""
    shown = collections.Counter()
    for rec, lab, ref in zip(records, labels, refs):
        pred = positive(lab[observation if observation in lab else "No Finding"])
        gold = observation in ref
        if pred == gold:
            continue
        kind = "FP" if pred else "FN"
        if shown[kind] >= limit:
            continue
        shown[kind] += 1
        mentions = [
            (m.observation, m.status.value, m.text)
            for m in extract_mentions(report_text(rec))
            if m.observation == observation
        ]
        print(f"--- {kind} {rec['id']} mesh={rec['mesh']}")
        print(f"    {report_text(rec)}")
        print(f"    mentions: {mentions}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="folder holding iu_xray/annotation.json"
    )
    parser.add_argument("--split", default="train", choices=["train", "val"])
    parser.add_argument("--out", type=Path, help="write the scores as JSON here")
    parser.add_argument(
        "--uncertain-as", type=float, default=1.0, help="1: uncertain counts as positive, 0: not"
    )
    parser.add_argument("--show", help="print disagreements for this observation")
    parser.add_argument(
        "--examples", type=int, default=10, help="disagreements shown per kind with --show"
    )
    parser.add_argument(
        "--list-mesh", action="store_true", help="print MeSH heading counts and exit"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    path = args.data / "iu_xray" / "annotation.json"
    if not path.is_file():
        parser.error(f"no annotation file at {path}")
    records = json.loads(path.read_text())[args.split]

    if args.list_mesh:
        counts = collections.Counter(t.split("/")[0].strip() for r in records for t in r["mesh"])
        for heading, n in counts.most_common():
            mapped = ", ".join(sorted({o for o, _ in MESH_TO_OBSERVATION.get(heading, [])}))
            mapped = NORMAL_ROW if heading == "normal" else mapped or "-"
            print(f"{n:5d}  {heading}  -> {mapped}")
        return 0

    texts = [report_text(r) for r in records]
    start = time.perf_counter()
    labels = [label_report(t) for t in texts]
    seconds = time.perf_counter() - start
    refs = [mesh_reference(r["mesh"]) for r in records]

    def positive(status: Status) -> bool:
        hedged_counts = status is Status.UNCERTAIN and args.uncertain_as >= 0.5
        return status is Status.POSITIVE or hedged_counts

    rows = {
        obs: agreement([obs in ref for ref in refs], [positive(lab[obs]) for lab in labels])
        for obs in OBSERVATIONS
    }
    macro = [r["f1"] for r in rows.values() if r["f1"] == r["f1"]]
    rows[NORMAL_ROW] = agreement([NORMAL_ROW in ref for ref in refs],
                                 [positive(lab["No Finding"]) for lab in labels])
    print(f"Agreement with Open-i MeSH ({args.split} split, {len(records)} studies)\n")
    print(markdown_table(rows))
    print(f"\nmacro F1 over the {len(macro)} observations: {sum(macro) / len(macro):.3f}")
    print(f"label_report: {len(texts)} reports in {seconds:.2f} s "
          f"({1000 * seconds / len(texts):.2f} ms per report)")

    if args.show:
        if args.show not in OBSERVATIONS and args.show != NORMAL_ROW:
            parser.error(f"--show {args.show!r} is not one of {OBSERVATIONS}")
        show_disagreements(records, labels, refs, args.show, positive, args.examples)
    if args.out:
        result = {
            "split": args.split, "n_studies": len(records), "uncertain_as": args.uncertain_as,
            "seconds": seconds, "per_observation": rows,
            "mesh_mapping": {k: [list(x) for x in v] for k, v in MESH_TO_OBSERVATION.items()},
        }
        # NaN (no positives either side) is not valid JSON: write null.
        for row in rows.values():
            row.update({k: None for k, v in row.items() if isinstance(v, float) and v != v})
        args.out.write_text(json.dumps(result, indent=2))
        logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
