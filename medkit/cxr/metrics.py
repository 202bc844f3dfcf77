"""Chest X-ray clinical metrics from the CheXpert labels of reference and generated reports
(:mod:`medkit.cxr.labeler`): clinical efficacy (R2Gen's protocol) and false alarms on normal studies.
The language metrics and the findings AUC are in :mod:`medkit.core.metrics`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from medkit.core.metrics import _check_pairs
from medkit.cxr import labeler


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    # zero denominators give 0.0, as sklearn's zero_division=0
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def clinical_efficacy(
    references: Sequence[str],
    hypotheses: Sequence[str],
    label_fn: Callable[[Sequence[str]], Sequence[Mapping[str, object]]] | None = None,
    observations: Sequence[str] | None = None,
) -> dict:
    """Clinical efficacy: agreement of the observations labelled in reference and generated reports.

    Each report is labelled with ``label_fn`` (default ``medkit.cxr.labeler.label_reports``) over
    ``observations`` (default the 14 CheXpert ones, ``medkit.cxr.labeler.OBSERVATIONS``). A label is
    positive only when it is ``Status.POSITIVE``: uncertain, negative and not-mentioned all count
    as negative. That is R2Gen's ``compute_ce.py`` protocol for MIMIC-CXR (CheXpert labeler
    output with -1 -> 0 and blank -> 0), which later work reporting CE follows.

    Returns:
      - ``ce_precision``, ``ce_recall``, ``ce_f1_micro``: micro averages, pooling true/false
        positives over every (study, observation) cell (sklearn ``average="micro"``);
      - ``ce_precision_macro``, ``ce_recall_macro``, ``ce_f1_macro``: means of the per-observation
        values over the observations with at least one positive reference or prediction
        (sklearn's macro averages over all labels instead; the same on MIMIC-CXR's test set,
        where every observation occurs);
      - ``per_observation``: ``{obs: {"precision", "recall", "f1", "support", "predicted"}}``,
        support = positive references, predicted = positive hypotheses;
      - ``n``: the number of studies.
    Zero denominators give 0.0.
    """
    _check_pairs(references, hypotheses)
    label_fn = label_fn or labeler.label_reports
    observations = observations or labeler.OBSERVATIONS
    ref_labels = list(label_fn(list(references)))
    hyp_labels = list(label_fn(list(hypotheses)))
    if len(ref_labels) != len(references) or len(hyp_labels) != len(hypotheses):
        raise ValueError(
            f"label_fn returned {len(ref_labels)} / {len(hyp_labels)} label sets for "
            f"{len(references)} / {len(hypotheses)} reports"
        )

    def positive(labels: Mapping[str, object], obs: str) -> bool:
        # Status is a str enum, so this also accepts plain "positive" strings
        return labels.get(obs) == "positive"

    per_obs: dict[str, dict] = {}
    totals = [0, 0, 0]
    for obs in observations:
        tp = fp = fn = 0
        for ref, hyp in zip(ref_labels, hyp_labels):
            r, h = positive(ref, obs), positive(hyp, obs)
            tp += r and h
            fp += h and not r
            fn += r and not h
        p, r_, f = _prf(tp, fp, fn)
        per_obs[obs] = {"precision": p, "recall": r_, "f1": f, "support": tp + fn, "predicted": tp + fp}
        totals[0] += tp
        totals[1] += fp
        totals[2] += fn

    p_micro, r_micro, f_micro = _prf(*totals)
    active = [v for v in per_obs.values() if v["support"] or v["predicted"]]

    def mean(key: str) -> float:
        return sum(v[key] for v in active) / len(active) if active else 0.0

    return {
        "ce_precision": p_micro,
        "ce_recall": r_micro,
        "ce_f1_micro": f_micro,
        "ce_precision_macro": mean("precision"),
        "ce_recall_macro": mean("recall"),
        "ce_f1_macro": mean("f1"),
        "per_observation": per_obs,
        "n": len(references),
    }


def false_alarms(
    references: Sequence[str],
    hypotheses: Sequence[str],
    label_fn: Callable[[Sequence[str]], Sequence[Mapping[str, object]]] | None = None,
) -> dict:
    """How often a report states a finding on a study whose reference states none.

    A reference is *normal* when the labeler (default ``medkit.cxr.labeler.label_reports``) finds no
    positive observation other than "No Finding" in it (support devices count as a finding, as in
    every other CE number here). A hypothesis on a normal study is a false alarm when it states one
    positively (``false_alarm_rate``); ``false_alarm_rate_hedged`` also counts a hedged statement
    ("possible effusion": labeler uncertain), so hedging cannot hide an alarm.

    Returns ``{"false_alarm_rate", "false_alarm_rate_hedged", "normal_studies", "false_alarms",
    "false_alarms_hedged", "by_observation": {obs: false alarms}}``; the rates are None when no
    reference is normal.
    """
    _check_pairs(references, hypotheses)
    label_fn = label_fn or labeler.label_reports
    ref_labels, hyp_labels = list(label_fn(list(references))), list(label_fn(list(hypotheses)))

    def stated(labels: Mapping[str, object], hedged: bool) -> list[str]:
        keep = ("positive", "uncertain") if hedged else ("positive",)
        return [o for o, s in labels.items() if o != "No Finding" and s in keep]

    normal = [i for i, lab in enumerate(ref_labels) if not stated(lab, hedged=False)]
    alarms = [i for i in normal if stated(hyp_labels[i], hedged=False)]
    hedged = [i for i in normal if stated(hyp_labels[i], hedged=True)]
    by_obs: dict[str, int] = {}
    for i in alarms:
        for o in stated(hyp_labels[i], hedged=False):
            by_obs[o] = by_obs.get(o, 0) + 1
    n = len(normal)
    return {"false_alarm_rate": len(alarms) / n if n else None, "false_alarm_rate_hedged": len(hedged) / n if n else None,
            "normal_studies": n, "false_alarms": len(alarms), "false_alarms_hedged": len(hedged),
            "by_observation": dict(sorted(by_obs.items(), key=lambda kv: -kv[1]))}
