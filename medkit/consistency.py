"""A report that states the findings its findings table calls positive.

The generator follows the knowledge prompt only loosely. With the shipped model on the whole IU
X-ray val split (296 studies) the findings head flagged cardiomegaly in 28 studies and the report
stated it in 7 of them, support devices in 38 and 1, lung opacity in 89 and 39: a radiologist
reading such a report next to the findings table sees the two disagree.

``state_findings`` makes them agree. For each finding the table calls positive that the report,
as MedKit's labeler reads it, leaves out or negates, the sentences that negate it are replaced by
one plain statement of the finding (``STATEMENTS``), in place of the first of them, or the
statement goes at the end when no sentence negates it. A finding the report already states or
hedges is left as the generator wrote it, and so is one the report states although the table
does not call it (the generator reads the image too). The statements were written for MedKit in
plain radiology language, name the finding only (the findings head predicts neither its side nor
its severity), and are not taken from any dataset's reports; a test holds each to mean exactly its
finding for the labeler.

The step is on by default (``generator.state_findings``); ``--no-state-findings`` on ``medkit
generate`` / ``medkit evaluate`` gives the generator's text alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from medkit.labeler import Status, label_report

#: One sentence per CheXpert observation that a report can state ("No Finding" is the absence of
#: the others, so it has none).
STATEMENTS: dict[str, str] = {
    "Enlarged Cardiomediastinum": "The cardiomediastinal silhouette is enlarged.",
    "Cardiomegaly": "The heart is enlarged.",
    "Lung Lesion": "There is a pulmonary nodule.",
    "Lung Opacity": "There is an airspace opacity.",
    "Edema": "There is pulmonary edema.",
    "Consolidation": "There is focal consolidation.",
    "Pneumonia": "The findings are consistent with pneumonia.",
    "Atelectasis": "There is atelectasis.",
    "Pneumothorax": "There is a pneumothorax.",
    "Pleural Effusion": "There is a pleural effusion.",
    "Pleural Other": "There is pleural thickening.",
    "Fracture": "There is a fracture.",
    "Support Devices": "Support devices are present.",
}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STATED = (Status.POSITIVE, Status.UNCERTAIN)


def sentences(report: str) -> list[str]:
    """A generated report's sentences, each with its closing punctuation."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(report.strip())) if s]


def state_findings(report: str, findings: Sequence[str]) -> tuple[str, list[str]]:
    """``report`` with every finding of ``findings`` (the table's positive ones) stated, and the
    findings this step stated (empty when the report already agreed with the table)."""
    parts = sentences(report)
    labels = [label_report(s) for s in parts]
    stated = []
    for finding in findings:
        if finding not in STATEMENTS or label_report(" ".join(parts)).get(finding) in _STATED:
            continue
        negating = [i for i, lab in enumerate(labels) if lab.get(finding) is Status.NEGATIVE]
        statement = STATEMENTS[finding]
        if negating:
            parts[negating[0]], labels[negating[0]] = statement, label_report(statement)
            for i in reversed(negating[1:]):
                del parts[i], labels[i]
        else:
            parts.append(statement)
            labels.append(label_report(statement))
        stated.append(finding)
    return " ".join(parts), stated
