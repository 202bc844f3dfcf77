"""Are the sentences ``medkit.cxr.consistency`` writes made of phrasing many training reports share?

    python benchmarks/statement_phrases.py --data ../shared/data [--min-reports 5]

Each statement, hedge and negation is normalised as the metrics normalise reports (R2Gen) and cut
into the fewest fragments (runs of words) that each occur in at least ``--min-reports`` distinct
training reports, the rule the draft table follows (``medkit.core.generator.drafts``): a sentence that cannot be
cut so is reported as failing. Prints one row per sentence: the fragments with their report counts
and the count of the whole sentence. Exits 1 when a sentence fails, except those of
``medkit.cxr.consistency.OWN_WORDING`` (no phrasing the reports share exists for them: MedKit's own).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

from medkit.cxr.consistency import HEDGES, NEGATIONS, OWN_WORDING, STATEMENTS
from medkit.core.metrics import normalize_report


def report_ngrams(reports: Iterable[str], max_n: int = 8) -> dict[str, int]:
    """``{n-gram: distinct reports containing it}`` over the reports' sentences (n <= ``max_n``)."""
    counts: dict[str, int] = {}
    for report in reports:
        seen = set()
        for sent in normalize_report(report).split(" . "):
            words = sent.strip(" .").split()
            for n in range(1, max_n + 1):
                seen.update(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
        for g in seen:
            counts[g] = counts.get(g, 0) + 1
    return counts


def fragments(sentence: str, counts: dict[str, int], min_reports: int, max_n: int = 8) -> list[tuple[str, int]] | None:
    """The fewest fragments of ``sentence`` (normalised) that each occur in ``min_reports`` reports
    (ties: the larger smallest count), or None when the sentence cannot be cut so."""
    words = normalize_report(sentence).strip(" .").split()
    best: list[tuple[int, int, list] | None] = [(0, 10**9, [])] + [None] * len(words)  # (pieces, min count, cut)
    for end in range(1, len(words) + 1):
        for start in range(max(0, end - max_n), end):
            g = " ".join(words[start:end])
            c = counts.get(g, 0)
            if best[start] is None or c < min_reports:
                continue
            pieces, low, cut = best[start]
            cand = (pieces + 1, min(low, c), cut + [(g, c)])
            if best[end] is None or (cand[0], -cand[1]) < (best[end][0], -best[end][1]):
                best[end] = cand
    return best[-1][2] if best[-1] is not None else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with iu_xray/annotation.json (its train split is used)")
    ap.add_argument("--min-reports", type=int, default=5)
    args = ap.parse_args(argv)
    from medkit.core.data import load_studies

    counts = report_ngrams(s.report for s in load_studies(args.data, "train") if s.report.strip())
    failed = 0
    print("| kind | finding | sentence | fragments (distinct training reports) | whole sentence |\n|---|---|---|---|---|")
    for kind, table in (("statement", STATEMENTS), ("hedge", HEDGES), ("negation", NEGATIONS)):
        for finding, sentence in table.items():
            cut = fragments(sentence, counts, args.min_reports)
            own = cut is None and sentence in OWN_WORDING
            failed += cut is None and not own
            shown = " + ".join(f"'{g}' ({c})" for g, c in cut) if cut else "MedKit's own wording" if own else "FAILS"
            whole = counts.get(normalize_report(sentence).strip(" ."), 0)
            print(f"| {kind} | {finding} | {sentence} | {shown} | {whole} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
