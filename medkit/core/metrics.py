"""Report-generation metrics: text normalisation, language metrics, consensus report, findings AUC.

- ``normalize_report``: the report cleaning that R2Gen (Chen et al., "Generating Radiology
  Reports via Memory-driven Transformer", EMNLP 2020) applies to IU X-ray before scoring, so our
  numbers compare with the published IU X-ray tables (R2Gen, R2GenCMN, R2GenGPT, ...).
- ``language_metrics``: BLEU-1..4, METEOR, ROUGE-L and CIDEr from pycocoevalcap 1.2 on the
  normalised texts, one reference per hypothesis. METEOR runs Java; without Java it is None and
  ``notes`` says why (the other metrics are still computed).
- ``findings_auc``: ROC AUC of a findings head per observation.

Clinical efficacy and false alarms (CheXpert labels of the reports) are in ``medkit.cxr.metrics``.

Example::

    python -c "from medkit.core.metrics import language_metrics; \
print(language_metrics(['The heart is normal. Lungs are clear.'], ['Heart is normal. The lungs are clear.']))"
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import threading
from collections.abc import Sequence

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

logger = logging.getLogger(__name__)

# Characters R2Gen's sentence cleaner deletes. Its pattern is written '[.,?;*!%^&_+():-\[\]{}]',
# in which ':-\[' is a character *range* (':' to '['), so it deletes ': ; < = > ? @ [' (and A-Z,
# gone after lower-casing) but keeps '-': "x-ray" stays one token. We delete the same set so
# that scores compare with the published ones.
_R2GEN_PUNCT = re.compile(r"[!%&()*+,.:;<=>?@\[\]^_{}]")
_REPEATED_DOTS = re.compile(r"\.{2,}")
_DROPPED_CHARS = str.maketrans("", "", "\"/\\'")

#: Stand-in for an empty (normalised) report: pycocoevalcap's ROUGE divides by the hypothesis
#: length and METEOR's Java process misreads empty lines, so an empty text becomes this one word.
EMPTY_REPORT = "emptyreport"


def normalize_report(text: str) -> str:
    """Clean a report the way R2Gen's ``clean_report_iu_xray`` does before scoring.

    Steps (our own implementation of that behaviour):

    1. runs of dots collapse to one ("no effusion.." -> "no effusion.");
    2. numbered-list markers go: "1. " is deleted, ". 2. " .. ". 5. " and " 2. " .. " 5. "
       become ". " (R2Gen does the same literal replacements);
    3. strip, lower-case, split into sentences on ". ";
    4. in each sentence delete ``" / \\ '`` and the characters ``. , ? ; * ! % ^ & _ + ( ) :
       < = > @ [ ] { }``. The hyphen is *kept*: R2Gen's pattern lists ``:-\\[``, a character
       range, so "-" itself is never deleted (and "< = > @" are);
    5. collapse whitespace, drop sentences left empty, and join as ``"s1 . s2 ."``.

    Differences from R2Gen, neither of which changes the whitespace tokens the scorers see except
    for an empty sentence's lone ".": R2Gen keeps empty sentences (its emptiness test compares a
    string with a list, which is never equal) and keeps double spaces. An empty report gives "".
    Anonymisation tokens ("XXXX") survive as "xxxx", as in R2Gen.
    """
    if not isinstance(text, str):
        raise TypeError(f"report must be a str, got {type(text).__name__}: {text!r}")
    text = _REPEATED_DOTS.sub(".", text)
    text = text.replace("1. ", "")
    for n in "2345":
        text = text.replace(f". {n}. ", ". ")
    for n in "2345":
        text = text.replace(f" {n}. ", ". ")
    sentences = []
    for sent in text.strip().lower().split(". "):
        sent = _R2GEN_PUNCT.sub("", sent.translate(_DROPPED_CHARS).strip())
        sent = " ".join(sent.split())
        if sent:
            sentences.append(sent)
    return " . ".join(sentences) + " ." if sentences else ""


def _check_pairs(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("references and hypotheses must be sequences of reports, not a single string")
    if len(references) != len(hypotheses):
        raise ValueError(
            f"need one hypothesis per reference: got {len(references)} references and {len(hypotheses)} hypotheses"
        )
    if len(references) == 0:
        raise ValueError("no reports to score: references and hypotheses are empty")
    for name, texts in (("reference", references), ("hypothesis", hypotheses)):
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"{name} #{i} must be a str, got {type(t).__name__}: {t!r}")


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]], timeout_s: float) -> float:
    """pycocoevalcap METEOR with a time limit; raises RuntimeError on any failure."""
    # "|||" separates fields in METEOR's stdio protocol; a report never needs "|".
    gts = {k: [r.replace("|", " ") for r in v] for k, v in gts.items()}
    res = {k: [h.replace("|", " ") for h in v] for k, v in res.items()}
    scorer = Meteor()
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["score"] = scorer.compute_score(gts, res)[0]
        except Exception as exc:  # Java died or answered garbage: float('') etc.
            result["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout_s)
    try:
        if worker.is_alive():
            scorer.meteor_p.kill()  # unblocks the worker's readline
            worker.join(10)
            raise RuntimeError(f"METEOR did not answer within {timeout_s:.0f} s")
        if "error" in result:
            stderr = b""
            with contextlib.suppress(Exception):
                scorer.meteor_p.kill()
                stderr = scorer.meteor_p.stderr.read()[-500:]
            raise RuntimeError(f"METEOR failed: {result['error']!r} {stderr.decode(errors='replace')}".strip())
        return float(result["score"])
    finally:
        # pycocoevalcap's compute_score keeps its lock when it fails, and Meteor.__del__ takes
        # the same lock: release it so garbage collection cannot hang. Stop the JVM now rather
        # than whenever the scorer is collected.
        if "score" not in result and scorer.lock.locked():
            scorer.lock.release()
        with contextlib.suppress(Exception):
            scorer.meteor_p.stdin.close()
            scorer.meteor_p.kill()
            scorer.meteor_p.wait(10)


def language_metrics(
    references: Sequence[str],
    hypotheses: Sequence[str],
    meteor_timeout_s: float = 600.0,
    meteor: bool = True,
) -> dict:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of ``hypotheses`` against ``references``.

    Both are normalised with ``normalize_report`` and split on whitespace (no PTBTokenizer,
    which needs Java); one reference per hypothesis; corpus-level scores from pycocoevalcap 1.2
    (BLEU "closest" reference length; CIDEr's document frequencies come from these references,
    so one pair alone scores CIDEr 0). Empty texts are scored as the word ``EMPTY_REPORT``.

    Returns ``{"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "n",
    "notes"}``; ``meteor`` is None when Java is missing or METEOR fails, with the reason in
    ``notes`` (a list of strings); ``meteor=False`` skips it (a Java process, most of the time on
    a few thousand reports). Raises ValueError when the counts differ or are zero.
    """
    _check_pairs(references, hypotheses)
    gts = {i: [normalize_report(r) or EMPTY_REPORT] for i, r in enumerate(references)}
    res = {i: [normalize_report(h) or EMPTY_REPORT] for i, h in enumerate(hypotheses)}
    notes: list[str] = []
    n_empty = sum(v == [EMPTY_REPORT] for v in res.values())
    if n_empty:
        notes.append(f"{n_empty} of {len(res)} hypotheses were empty after normalisation")

    out: dict = {"n": len(res)}
    with contextlib.redirect_stdout(io.StringIO()):  # BleuScorer prints its counts
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        out.update({f"bleu_{k + 1}": float(b) for k, b in enumerate(bleu)})
        out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
        out["cider"] = float(Cider().compute_score(gts, res)[0])

    out["meteor"] = None
    if not meteor:
        notes.append("meteor: None because it was not asked for")
    elif shutil.which("java") is None:
        notes.append("meteor: None because Java is not installed (pycocoevalcap's METEOR runs a Java jar)")
    else:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                out["meteor"] = _meteor(gts, res, meteor_timeout_s)
        except Exception as exc:  # never let METEOR take the other metrics down
            logger.warning("METEOR failed: %s", exc)
            notes.append(f"meteor: None because {exc}")
    out["notes"] = notes
    order = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "n", "notes")
    return {k: out[k] for k in order}


# ---- floors and findings-head metrics (medkit evaluate) ---------------------------------------
_BLEU_TINY, _BLEU_SMALL = 1e-15, 1e-9  # pycocoevalcap bleu_scorer.py's smoothing constants


def sentence_bleu_matrix(texts: Sequence[str], n: int = 4) -> np.ndarray:
    """(U, U) matrix: pycocoevalcap's per-sentence BLEU-``n`` of ``texts[i]`` (hypothesis) against
    ``texts[j]`` (its single reference), on whitespace tokens of the texts as given.

    Exactly the per-sentence scores ``Bleu(n).compute_score`` returns (its second value): clipped
    n-gram matches + 1e-15 over hypothesis n-grams + 1e-9, geometric mean over 1..n, brevity
    penalty ``exp(1 - ref_len / hyp_len)`` when the hypothesis is shorter. Computed for all pairs at
    once from an inverted index of n-grams (a pair's clipped matches add ``min`` of the two counts
    for every n-gram they share), so 1,500 texts take seconds instead of 2 million scorer calls.
    """
    toks = [t.split() for t in texts]
    lengths = np.array([len(t) for t in toks], dtype=np.float64)
    size = len(toks)
    score = np.ones((size, size))
    for k in range(1, n + 1):
        postings: dict[tuple[str, ...], list[tuple[int, int]]] = {}
        for i, words in enumerate(toks):
            counts: dict[tuple[str, ...], int] = {}
            for p in range(len(words) - k + 1):
                g = tuple(words[p:p + k])
                counts[g] = counts.get(g, 0) + 1
            for g, c in counts.items():
                postings.setdefault(g, []).append((i, c))
        correct = np.zeros((size, size))
        for plist in postings.values():
            idx = np.fromiter((i for i, _ in plist), dtype=np.int64, count=len(plist))
            cnt = np.fromiter((c for _, c in plist), dtype=np.float64, count=len(plist))
            correct[np.ix_(idx, idx)] += np.minimum.outer(cnt, cnt)
        guess = np.maximum(0.0, lengths - k + 1)
        score *= (correct + _BLEU_TINY) / (guess[:, None] + _BLEU_SMALL)
    bleu = score ** (1.0 / n)
    ratio = (lengths[:, None] + _BLEU_TINY) / (lengths[None, :] + _BLEU_SMALL)
    short = ratio < 1
    bleu[short] *= np.exp(1 - 1 / ratio[short])
    return bleu


def consensus_report(reports: Sequence[str], n: int = 4, eligible: Callable[[str], bool] | None = None) -> tuple[str, float]:
    """The report with the highest mean sentence BLEU-``n`` to the *other* reports, and that mean;
    with ``eligible``, the best of the (normalised) reports it accepts, still scored against all.

    Reports are R2Gen-normalised first (``normalize_report``; empty ones dropped); identical
    normalised reports are scored once and weighted by how often they occur, so the mean for report
    i is ``(sum_j count_j * BLEU(i, j) - BLEU(i, i)) / (N - 1)`` over the N reports: every other
    report counts, a duplicate of i included, i itself not. BLEU is :func:`sentence_bleu_matrix`
    (pycocoevalcap's per-sentence BLEU, i as hypothesis). Ties go to the more frequent report,
    then to the alphabetically first. The floor ``medkit evaluate`` gives every study this report
    of the *training* split.
    """
    counts: dict[str, int] = {}
    for r in reports:
        t = normalize_report(r)
        if t:
            counts[t] = counts.get(t, 0) + 1
    total = sum(counts.values())
    if total < 2:
        raise ValueError(f"a consensus report needs at least 2 non-empty reports, got {total}")
    texts = sorted(counts)
    weights = np.array([counts[t] for t in texts], dtype=np.float64)
    bleu = sentence_bleu_matrix(texts, n)
    means = (bleu @ weights - np.diag(bleu)) / (total - 1)
    candidates = [i for i, t in enumerate(texts) if eligible is None or eligible(t)]
    if not candidates:
        raise ValueError("no report is eligible for the consensus")
    best = max(candidates, key=lambda i: (round(float(means[i]), 12), counts[texts[i]], [-ord(c) for c in texts[i]]))
    return texts[best], float(means[best])


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties, as sklearn's
    ``roc_auc_score``); None when ``labels`` holds only one class."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be the same 1-D shape")
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return None
    _, inverse, tie_counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(tie_counts)
    ranks = (ends - (tie_counts - 1) / 2.0)[inverse]  # 1-based average rank of each score
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def findings_auc(probs, labels, observations: Sequence[str], min_positives: int = 10) -> dict:
    """AUC of each observation's probabilities (N, C) against binary labels (N, C).

    Returns ``{"per_observation": {obs: {"auc", "positives"}}, "mean_auc", "mean_over",
    "min_positives"}``: ``mean_auc`` averages the observations with at least ``min_positives``
    positive labels (``mean_over`` names them; None when there is none)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=bool)
    if probs.shape != labels.shape or probs.ndim != 2 or probs.shape[1] != len(observations):
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} must both be (N, {len(observations)})")
    per_obs = {obs: {"auc": roc_auc(labels[:, j], probs[:, j]), "positives": int(labels[:, j].sum())}
               for j, obs in enumerate(observations)}
    over = [o for o, v in per_obs.items() if v["positives"] >= min_positives and v["auc"] is not None]
    mean = sum(per_obs[o]["auc"] for o in over) / len(over) if over else None
    return {"per_observation": per_obs, "mean_auc": mean, "mean_over": over, "min_positives": min_positives}


