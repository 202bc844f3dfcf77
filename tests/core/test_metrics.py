"""Tests for medkit.core.metrics: R2Gen normalisation, pycocoevalcap metrics, clinical efficacy."""

import shutil

import pytest

from medkit.core import metrics
from medkit.core.metrics import EMPTY_REPORT, language_metrics, normalize_report

HAS_JAVA = shutil.which("java") is not None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The heart is normal in size. The lungs are clear.", "the heart is normal in size . the lungs are clear ."),
        ("XXXX. No pneumothorax..", "xxxx . no pneumothorax ."),
        ("Heart size is normal, lungs are clear... No effusion.", "heart size is normal lungs are clear . no effusion ."),
        ("1. No acute disease. 2. Stable cardiomegaly.", "no acute disease . stable cardiomegaly ."),
        ('Left-sided AP/PA view\'s (portable): "clear" [sic]; ok!', "left-sided appa views portable clear sic ok ."),
        ("Ratio <0.5 @ 50% & rising?", "ratio 05 50 rising ."),
        ("  Heart   normal.  ", "heart normal ."),
        ("", ""),
        ("...", ""),
        ("No effusion. . Lungs clear.", "no effusion . lungs clear ."),
    ],
)
def test_normalize_report(text, expected):
    assert normalize_report(text) == expected


def test_normalize_report_keeps_hyphen_like_r2gen():
    # R2Gen's pattern '[...():-\[...]' makes ':-[' a range, so '-' survives; keep that for comparable scores
    assert normalize_report("Well-expanded lungs.") == "well-expanded lungs ."


def test_normalize_report_rejects_non_str():
    with pytest.raises(TypeError):
        normalize_report(None)


REFS = [
    "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
    "There is cardiomegaly. Small left pleural effusion. No pneumothorax.",
    "No acute cardiopulmonary abnormality. Degenerative changes of the spine.",
]


@pytest.fixture
def no_java(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda *args, **kwargs: None)


def test_identical_texts_score_one(no_java):
    out = language_metrics(REFS, list(REFS))
    for k in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"):
        assert out[k] == pytest.approx(1.0, abs=1e-6), k
    assert out["cider"] > 1.0  # CIDEr's idf comes from these 3 references; identical texts score high
    assert out["n"] == 3


def test_disjoint_texts_score_near_zero(no_java):
    hyps = ["Zebra giraffe elephant lion tiger.", "Apple banana cherry grape melon.", "Red green blue cyan magenta."]
    out = language_metrics(REFS, hyps)
    # only the sentence-final "." tokens that normalisation adds can match
    assert out["bleu_4"] < 1e-6
    assert out["bleu_1"] < 0.15
    assert out["rouge_l"] < 0.2
    assert out["cider"] < 0.1


def test_meteor_none_without_java(no_java):
    out = language_metrics(REFS, list(REFS))
    assert out["meteor"] is None
    assert any("Java" in note for note in out["notes"])
    assert list(out) == ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "n", "notes"]


def test_meteor_skipped_when_not_asked_for(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda *args, **kwargs: "/usr/bin/java")
    monkeypatch.setattr(metrics, "_meteor", lambda *args, **kwargs: pytest.fail("METEOR ran"))
    out = language_metrics(REFS, list(REFS), meteor=False)
    assert out["meteor"] is None and out["bleu_4"] > 0.9
    assert any("not asked for" in note for note in out["notes"])


def test_meteor_failure_is_a_note_not_a_crash(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda *args, **kwargs: "/usr/bin/java")

    def broken(*args, **kwargs):
        raise RuntimeError("METEOR failed: jar missing")

    monkeypatch.setattr(metrics, "_meteor", broken)
    out = language_metrics(REFS, list(REFS))
    assert out["meteor"] is None
    assert any("jar missing" in note for note in out["notes"])
    assert out["bleu_4"] == pytest.approx(1.0, abs=1e-6)


def test_empty_hypothesis_does_not_crash(no_java):
    out = language_metrics(REFS, ["", "...", REFS[2]])
    assert 0.0 < out["bleu_1"] < 1.0
    assert any("2 of 3 hypotheses were empty" in note for note in out["notes"])
    assert EMPTY_REPORT not in normalize_report(REFS[0])


def test_language_metrics_bad_lengths():
    with pytest.raises(ValueError, match="2 references and 1 hypotheses"):
        language_metrics(REFS[:2], REFS[:1])
    with pytest.raises(ValueError, match="empty"):
        language_metrics([], [])
    with pytest.raises(TypeError):
        language_metrics("a report", "a report")
    with pytest.raises(TypeError, match="hypothesis #1"):
        language_metrics(REFS[:2], ["ok", None])


@pytest.mark.skipif(not HAS_JAVA, reason="METEOR NOT TESTED: Java (OpenJDK 17) is not installed; pycocoevalcap's METEOR runs a Java jar")
def test_meteor_with_java():
    same = language_metrics(REFS, list(REFS))
    assert same["meteor"] == pytest.approx(1.0, abs=1e-6)
    assert same["notes"] == []
    partial = language_metrics(REFS, ["The heart is normal.", "There is cardiomegaly.", "No acute abnormality."])
    assert 0.0 < partial["meteor"] < 1.0


# ---- floors, findings head, false alarms (medkit evaluate) -------------------------------------
def _pycoco_sentence_bleu4(hyp: str, refs: list[str]) -> list[float]:
    """pycocoevalcap's own per-sentence BLEU-4 of ``hyp`` against each of ``refs``."""
    import contextlib
    import io

    from pycocoevalcap.bleu.bleu import Bleu

    with contextlib.redirect_stdout(io.StringIO()):
        _, per = Bleu(4).compute_score({i: [r] for i, r in enumerate(refs)}, {i: [hyp] for i in range(len(refs))},
                                       verbose=0)
    return per[3]


def test_sentence_bleu_matrix_equals_pycocoevalcap_per_sentence_scores():
    import random

    import numpy as np

    rng = random.Random(0)
    vocab = "the lungs are clear . no pleural effusion heart size is normal there a".split()
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 14))) for _ in range(25)]
    texts += ["the lungs are clear .", "the lungs are clear . the lungs are clear ."]  # repeats: clipping
    matrix = metrics.sentence_bleu_matrix(texts)
    assert matrix.shape == (len(texts), len(texts))
    for i, hyp in enumerate(texts):
        np.testing.assert_allclose(matrix[i], _pycoco_sentence_bleu4(hyp, texts), rtol=1e-12, atol=1e-15)


def test_consensus_report_is_the_one_closest_to_all_others():
    shared = "The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal."
    reports = [shared, shared.replace("normal", "enlarged"), shared.replace("clear", "hyperinflated"),
               "Heart size is normal. The lungs are clear.", "Large right pleural effusion."]
    best, mean = metrics.consensus_report(reports)
    assert best == normalize_report(shared)
    # the mean runs over the *other* reports only
    others = [normalize_report(r) for r in reports[1:]]
    assert mean == pytest.approx(sum(_pycoco_sentence_bleu4(best, others)) / len(others), rel=1e-12)
    # a duplicate of a report counts as another report, the report itself does not
    dup = ["No effusion. No pneumothorax.", "No effusion. No pneumothorax.", "Heart enlarged."]
    assert metrics.consensus_report(dup)[0] == normalize_report(dup[0])
    assert metrics.consensus_report(dup)[1] == pytest.approx(0.5 * (1.0 + _pycoco_sentence_bleu4(
        normalize_report(dup[0]), [normalize_report(dup[2])])[0]))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.consensus_report(["Lungs clear.", "  "])


def test_roc_auc_counts_pairs_and_half_counts_ties():
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    # positives 0.5 and 0.7 against negatives 0.5 and 0.3: pairs won 1 + 0.5 (tie) + 1 + 1 of 4
    assert metrics.roc_auc([1, 0, 1, 0], [0.5, 0.5, 0.7, 0.3]) == pytest.approx(3.5 / 4)
    assert metrics.roc_auc([1, 1, 1], [0.2, 0.3, 0.4]) is None
    with pytest.raises(ValueError, match="same 1-D shape"):
        metrics.roc_auc([1, 0], [0.3])


def test_findings_auc_averages_only_observations_with_enough_positives():
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.zeros((60, 3), dtype=bool)
    labels[:20, 0] = True  # 20 positives, perfectly ranked
    labels[:12, 1] = True  # 12 positives, ranked backwards
    labels[:3, 2] = True  # 3 positives: left out of the mean
    probs = rng.uniform(0.0, 0.4, (60, 3))
    probs[:20, 0] += 0.5
    probs[:12, 1] -= 0.5
    out = metrics.findings_auc(probs, labels, ["a", "b", "c"], min_positives=10)
    assert out["per_observation"]["a"] == {"auc": 1.0, "positives": 20}
    assert out["per_observation"]["b"]["auc"] == 0.0 and out["per_observation"]["c"]["positives"] == 3
    assert out["mean_over"] == ["a", "b"] and out["mean_auc"] == 0.5
    with pytest.raises(ValueError):
        metrics.findings_auc(probs, labels, ["a", "b"])


