"""Clinical efficacy and false alarms from the CheXpert labels of the reports (medkit.cxr.metrics)."""

from __future__ import annotations

import pytest

from medkit.cxr.labeler import OBSERVATIONS, Status
from medkit.cxr.metrics import clinical_efficacy, false_alarms



def _stub_labels(table):
    """label_fn that looks reports up in ``table``: {text: {obs: Status}}; the rest not mentioned."""

    def label_fn(texts):
        return [{o: table.get(t, {}).get(o, Status.NOT_MENTIONED) for o in OBSERVATIONS} for t in texts]

    return label_fn


def test_clinical_efficacy_arithmetic():
    P, N, U = Status.POSITIVE, Status.NEGATIVE, Status.UNCERTAIN
    table = {
        "r1": {"Cardiomegaly": P, "Pleural Effusion": P},
        "r2": {"Cardiomegaly": P, "Edema": U},
        "r3": {"No Finding": P},
        "h1": {"Cardiomegaly": P, "Pleural Effusion": U},  # uncertain counts as negative -> FN
        "h2": {"Cardiomegaly": P, "Pneumothorax": P, "Edema": P},  # Edema: reference uncertain -> FP
        "h3": {"No Finding": P, "Cardiomegaly": N},
    }
    out = clinical_efficacy(["r1", "r2", "r3"], ["h1", "h2", "h3"], label_fn=_stub_labels(table))
    # TP: cardiomegaly x2, no finding x1 = 3; FP: pneumothorax, edema = 2; FN: effusion = 1
    assert out["ce_precision"] == pytest.approx(3 / 5)
    assert out["ce_recall"] == pytest.approx(3 / 4)
    assert out["ce_f1_micro"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    per = out["per_observation"]
    assert per["Cardiomegaly"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2, "predicted": 2}
    assert per["Pleural Effusion"]["recall"] == 0.0 and per["Pleural Effusion"]["support"] == 1
    assert per["Pneumothorax"]["precision"] == 0.0 and per["Pneumothorax"]["predicted"] == 1
    assert per["Fracture"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 0}
    # macro over the 5 observations that occur: Cardiomegaly 1, No Finding 1, Effusion 0, PTX 0, Edema 0
    assert out["ce_f1_macro"] == pytest.approx(2 / 5)
    assert out["ce_precision_macro"] == pytest.approx(2 / 5)
    assert out["ce_recall_macro"] == pytest.approx(2 / 5)
    assert out["n"] == 3
    assert list(per) == list(OBSERVATIONS)


def test_clinical_efficacy_perfect_and_bad_lengths():
    table = {"r": {"Edema": Status.POSITIVE}}
    out = clinical_efficacy(["r", "r"], ["r", "r"], label_fn=_stub_labels(table))
    assert out["ce_precision"] == out["ce_recall"] == out["ce_f1_micro"] == out["ce_f1_macro"] == 1.0
    with pytest.raises(ValueError, match="2 references and 1 hypotheses"):
        clinical_efficacy(["r", "r"], ["r"], label_fn=_stub_labels(table))


def test_clinical_efficacy_with_the_labeler():
    refs = [
        "There is cardiomegaly. Small left pleural effusion.",
        "There is cardiomegaly.",
        "There is cardiomegaly.",
    ]
    hyps = [
        "There is cardiomegaly.",
        "There is cardiomegaly. There is a right pneumothorax.",
        "Heart size is normal.",
    ]
    out = clinical_efficacy(refs, hyps)
    per = out["per_observation"]
    assert per["Cardiomegaly"]["support"] == 3 and per["Cardiomegaly"]["predicted"] == 2
    assert per["Cardiomegaly"]["precision"] == 1.0
    assert per["Cardiomegaly"]["recall"] == pytest.approx(2 / 3)
    assert per["Pleural Effusion"]["support"] == 1 and per["Pleural Effusion"]["recall"] == 0.0
    assert per["Pneumothorax"]["predicted"] == 1 and per["Pneumothorax"]["precision"] == 0.0
    # the micro averages pool the per-observation counts (whatever else the labeler adds,
    # e.g. No Finding for "Heart size is normal.")
    tp = sum(round(v["recall"] * v["support"]) for v in per.values())
    assert out["ce_precision"] == pytest.approx(tp / sum(v["predicted"] for v in per.values()))
    assert out["ce_recall"] == pytest.approx(tp / sum(v["support"] for v in per.values()))


def test_false_alarms_with_the_labeler():
    refs = ["The lungs are clear. No pleural effusion.", "Heart size is normal.", "There is a right pleural effusion.",
            "No acute disease."]
    hyps = ["There is a small pneumothorax.", "Possible pleural effusion.", "The lungs are clear.", "Heart normal."]
    out = false_alarms(refs, hyps)
    # three normal references; one report asserts a finding, one more hedges one; the abnormal study is not counted
    assert out["normal_studies"] == 3 and out["false_alarms"] == 1 and out["false_alarms_hedged"] == 2
    assert out["false_alarm_rate"] == pytest.approx(1 / 3) and out["false_alarm_rate_hedged"] == pytest.approx(2 / 3)
    assert out["by_observation"] == {"Pneumothorax": 1}
    assert false_alarms(["Large effusion."], ["Lungs clear."])["false_alarm_rate"] is None
