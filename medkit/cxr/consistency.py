"""A report that agrees with its findings table, and states only what the findings head supports.

The findings table gives each observation a decision (``medkit.cxr.model.findings_from_probs``):
"positive" where the head is confident (its probability reaches the threshold fitted for
precision on the training split, ``generator.statement_thresholds``), "borderline" where it is
flagged (the F1 threshold, ``generator.finding_thresholds``) but not confident, "negative" below.
The generator reads the knowledge prompt of the flagged findings only loosely, so its text and
the table can disagree both ways: it leaves out or negates a finding the table calls positive, and
it asserts findings the head puts below even the F1 threshold (with the shipped model, "there is
a pneumothorax" on a normal film).

``align_report`` makes the text agree with the table, sentence by sentence, as MedKit's labeler
(``medkit.cxr.labeler``) reads it:

1. **negative**: a sentence that asserts or hedges a finding the table calls negative is withdrawn;
   in its place goes the finding's plain negation (``NEGATIONS``), unless the report already
   negates it, or nothing where there is none. Other findings that sentence asserted are handled
   by the next steps as if the generator had left them out.
2. **borderline** (``borderline`` mode): "hedge_stated" turns a sentence asserting it into a hedge
   (``HEDGES``, "Possible pleural effusion."), "hedge" also hedges a borderline finding the report
   negates or leaves out, "table" withdraws an assertion (as in 1, with no negation in its place)
   and leaves the finding to the findings table. A finding without a hedge (support devices) is
   left as the generator wrote it.
3. **positive**: a finding the report leaves out or negates is stated (``STATEMENTS``) in place of
   the first sentence negating it (the others go) or at the end; a finding the report already
   states or hedges is left as written.

So the report never negates a finding the table calls positive nor asserts one it calls negative.
Phrasing: IU X-ray reports (the training data) are terse and share their phrasing, so the
sentences here use it, but they are written for MedKit and name the finding only (the head
predicts neither side nor severity). No report's wording is shipped: every statement, hedge and
negation is built from fragments that each occur in at least 5 distinct training reports (the
rule of the draft table, ``medkit.core.generator.drafts``), except ``OWN_WORDING`` (IU reports name each device,
"sternotomy xxxx", "surgical clips", and share no generic phrase for them); ``benchmarks/
statement_phrases.py`` counts them on a data folder. A test holds each sentence to mean exactly its
finding for the labeler.

The step is on by default (``generator.state_findings``); ``--no-state-findings`` on ``medkit
generate`` / ``medkit evaluate`` gives the base text alone: the site template (``fit_template``,
the default ``generator.report_base``) or the generator's text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache

from medkit.core.metrics import consensus_report, normalize_report
from medkit.cxr.labeler import Status, label_report

#: One sentence per CheXpert observation that a report can state ("No Finding" is the absence of
#: the others, so it has none).
STATEMENTS: dict[str, str] = {
    "Enlarged Cardiomediastinum": "There is mediastinal widening.",
    "Cardiomegaly": "Heart size is enlarged.",
    "Lung Lesion": "There is a pulmonary nodule.",
    # not "focal airspace disease": beside the template's "no focal airspace consolidation" it reads as a contradiction
    "Lung Opacity": "There is airspace opacity.",
    "Edema": "There is pulmonary edema.",
    "Consolidation": "There is focal airspace consolidation.",
    "Pneumonia": "Findings are consistent with pneumonia.",
    "Atelectasis": "There is atelectasis.",
    "Pneumothorax": "There is a pneumothorax.",
    "Pleural Effusion": "There is a pleural effusion.",
    "Pleural Other": "There is pleural thickening.",
    "Fracture": "There is a fracture.",
    "Support Devices": "Support devices are present.",
}

#: A borderline finding, hedged (the labeler reads each as "uncertain"). Support devices have none:
#: a device is there or not, and the table shows the head's probability.
HEDGES: dict[str, str] = {
    "Enlarged Cardiomediastinum": "Possible mediastinal widening.",
    "Cardiomegaly": "Possible cardiomegaly.",
    "Lung Lesion": "Possible pulmonary nodule.",
    "Lung Opacity": "Possible airspace opacity.",
    "Edema": "Possible pulmonary edema.",
    "Consolidation": "Possible focal airspace consolidation.",
    "Pneumonia": "Possible pneumonia.",
    "Atelectasis": "Possible atelectasis.",
    "Pneumothorax": "Possible pneumothorax.",
    "Pleural Effusion": "Possible pleural effusion.",
    "Pleural Other": "Possible pleural thickening.",
    "Fracture": "Possible fracture.",
}

#: The plain negation that replaces a withdrawn sentence (the phrasing the training reports use;
#: each of these sentences occurs whole in at least 5 of them). Atelectasis, pleural thickening and
#: support devices have none that reports share: their withdrawn sentences just go.
NEGATIONS: dict[str, str] = {
    "Enlarged Cardiomediastinum": "The mediastinum is unremarkable.",
    "Cardiomegaly": "The heart is normal in size.",
    "Lung Lesion": "There are no nodules or masses.",
    "Lung Opacity": "No focal airspace disease.",
    "Edema": "There is no pulmonary edema.",
    "Consolidation": "There is no focal consolidation.",
    "Pneumonia": "No pneumonia.",
    "Pneumothorax": "There is no pneumothorax.",
    "Pleural Effusion": "There is no pleural effusion.",
    "Fracture": "No fractures.",
}

#: Sentences written in MedKit's own words: the training reports share no phrasing for them.
OWN_WORDING = frozenset({STATEMENTS["Support Devices"]})

BORDERLINE_MODES = ("hedge", "hedge_stated", "table")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STATED = (Status.POSITIVE, Status.UNCERTAIN)


def sentences(report: str) -> list[str]:
    """A generated report's sentences, each with its closing punctuation."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(report.strip())) if s]


class _Report:
    """Sentences with their labels, kept in step."""

    def __init__(self, report: str):
        self.parts = sentences(report)
        self.labels = [label_report(s) for s in self.parts]

    def text(self) -> str:
        return " ".join(self.parts)

    def status(self, finding: str) -> Status:
        return label_report(self.text())[finding]

    def where(self, finding: str, statuses: Sequence[Status]) -> list[int]:
        return [i for i, lab in enumerate(self.labels) if lab[finding] in statuses]

    def put(self, i: int, sentence: str) -> None:
        self.parts[i], self.labels[i] = sentence, label_report(sentence)

    def insert(self, i: int, sentence: str) -> None:
        self.parts.insert(i, sentence)
        self.labels.insert(i, label_report(sentence))

    def drop(self, indices: Sequence[int]) -> None:
        for i in sorted(set(indices), reverse=True):
            del self.parts[i], self.labels[i]


def _withdraw(doc: _Report, findings: set[str], negate: set[str]) -> list[str]:
    """Withdraw every sentence asserting or hedging one of ``findings``; the negation of each
    withdrawn finding of ``negate`` goes in place of its first sentence unless the report already
    negates it."""
    withdrawn: list[str] = []
    i = 0
    while i < len(doc.parts):
        wrong = [f for f in findings if doc.labels[i][f] in _STATED]
        if not wrong:
            i += 1
            continue
        doc.drop([i])
        for f in sorted(wrong):
            if f not in withdrawn:
                withdrawn.append(f)
            if f in negate and f in NEGATIONS and not doc.where(f, (Status.NEGATIVE,)):
                doc.insert(i, NEGATIONS[f])
                i += 1
    return withdrawn


def _state(doc: _Report, finding: str, sentence: str, replace: Sequence[Status]) -> None:
    """``sentence`` in place of the first sentence whose label for ``finding`` is in ``replace``
    (the other such sentences go), or at the end when there is none."""
    hits = doc.where(finding, replace)
    if hits:
        doc.put(hits[0], sentence)
        doc.drop(hits[1:])
    else:
        doc.insert(len(doc.parts), sentence)


def align_report(report: str, decisions: Mapping[str, str], borderline: str = "hedge_stated") -> tuple[str, dict]:
    """``report`` made to agree with the findings table ``decisions`` (``{observation: "positive" |
    "borderline" | "negative"}``; "No Finding" and unknown observations are ignored), and the edits:
    ``{"stated": [...], "hedged": [...], "withdrawn": [...]}`` (observations, in the table's order).
    See the module docstring for the rules. A second pass changes nothing."""
    if borderline not in BORDERLINE_MODES:
        raise ValueError(f"borderline must be one of {BORDERLINE_MODES}, got {borderline!r}")
    bad = {d for d in decisions.values() if d not in ("positive", "borderline", "negative")}
    if bad:
        raise ValueError(f"unknown finding decisions {sorted(bad)}; use positive, borderline or negative")
    names = [f for f in decisions if f in STATEMENTS]
    doc = _Report(report)
    edits: dict[str, list[str]] = {"stated": [], "hedged": [], "withdrawn": []}

    negative = {f for f in names if decisions[f] == "negative"}
    unsure = {f for f in names if decisions[f] == "borderline" and f in HEDGES} if borderline == "table" else set()
    withdrawn = set(_withdraw(doc, negative | unsure, negative))

    for f in names:
        if decisions[f] != "borderline" or f not in HEDGES or borderline == "table":
            continue
        status = doc.status(f)
        if status is Status.UNCERTAIN:
            continue  # already hedged
        if status is Status.POSITIVE or borderline == "hedge":
            _state(doc, f, HEDGES[f], (Status.POSITIVE, Status.NEGATIVE) if borderline == "hedge" else (Status.POSITIVE,))
            edits["hedged"].append(f)

    for f in names:
        if decisions[f] == "positive" and doc.status(f) not in _STATED:
            _state(doc, f, STATEMENTS[f], (Status.NEGATIVE,))
            edits["stated"].append(f)

    edits["withdrawn"] = [f for f in names if f in withdrawn]
    return doc.text(), edits


def state_findings(report: str, findings: Sequence[str]) -> tuple[str, list[str]]:
    """``report`` with every finding of ``findings`` stated (all others left as the generator
    wrote them), and the findings this step stated: ``align_report`` with only positive decisions."""
    report, edits = align_report(report, {f: "positive" for f in findings})
    return report, edits["stated"]


@lru_cache(maxsize=65536)  # training reports repeat their sentences: each is labelled once
def _mentioned(sentence: str) -> frozenset[str]:
    """The observations MedKit's labeler finds named in ``sentence`` (any status)."""
    return frozenset(o for o, v in label_report(sentence).items() if o != "No Finding" and v is not Status.NOT_MENTIONED)


def site_order(template: Sequence[str], reports: Sequence[str]) -> list[str]:
    """``template``'s sentences in the order the site's reports discuss their topics: each sentence
    goes by the mean relative position (0 first, 1 last) of the first sentence of a training report
    that names the same observations (the labeler's reading; a sentence naming none goes by where
    that very sentence occurs, R2Gen-normalised). IU X-ray reports, for instance, mostly open with
    the heart. Sentences no report places keep their place relative to each other, after the rest."""
    topics = [_mentioned(t) for t in template]
    keys = [normalize_report(t) for t in template]
    places: list[list[float]] = [[] for _ in template]
    for report in reports:
        parts = sentences(report)
        if len(parts) < 2:
            continue
        named = [_mentioned(p) for p in parts]
        normalised = None
        for i, topic in enumerate(topics):
            if topic:
                hits = [j for j, n in enumerate(named) if n == topic]
            else:
                normalised = normalised or [normalize_report(p) for p in parts]
                hits = [j for j, n in enumerate(normalised) if n == keys[i]]
            if hits:
                places[i].append(hits[0] / (len(parts) - 1))
    rank = [sum(p) / len(p) if p else 2.0 for p in places]
    return [template[i] for i in sorted(range(len(template)), key=lambda i: (rank[i], i))]


def fit_template(reports: Sequence[str], min_reports: int = 5) -> tuple[str, ...]:
    """The site's normal report, as sentences: the consensus of the training reports
    (:func:`medkit.metrics.consensus_report`, highest mean BLEU-4 to the others) among those made
    only of sentences that at least ``min_reports`` distinct reports contain (R2Gen-normalised, no
    "XXXX"), so the template holds the site's shared phrasing, never one report's wording. Each
    sentence is written in its most frequent form, and the sentences go in the site's order
    (:func:`site_order`). Empty when no report qualifies."""
    shared: Counter = Counter()  # normalised sentence -> reports containing it
    forms: dict[str, Counter] = {}
    for report in reports:
        keys = set()
        for raw in sentences(report):
            key = normalize_report(raw)
            if key:
                keys.add(key)
                forms.setdefault(key, Counter())[raw] += 1
        shared.update(keys)
    usable = {k for k, c in shared.items() if c >= min_reports and "xxxx" not in k}

    def keys(normalised: str) -> list[str]:  # "s1 . s2 ." -> ["s1 .", "s2 ."], the keys above
        return [f"{part.strip()} ." for part in normalised[:-1].split(" . ") if part.strip()]

    try:
        best, _ = consensus_report(reports, eligible=lambda text: all(k in usable for k in keys(text)))
    except ValueError:
        return ()
    return tuple(site_order([forms[k].most_common(1)[0][0] for k in keys(best)], reports))
