"""Tests for medkit.cxr.labeler on report sentences written for these tests in the style of
chest X-ray reports (no dataset text: the Open-i licence forbids committing it)."""

import pytest

from medkit.cxr.labeler import (
    OBSERVATIONS,
    Status,
    label_report,
    label_reports,
    positive_findings,
    split_clauses,
    split_sentences,
    normalize,
    to_binary,
)

P, N, U, M = Status.POSITIVE, Status.NEGATIVE, Status.UNCERTAIN, Status.NOT_MENTIONED

# (sentence, observation, expected status)
CASES = [
    # positive mentions
    ("Moderate cardiomegaly is present.", "Cardiomegaly", P),
    ("The heart is mildly enlarged.", "Cardiomegaly", P),
    ("The cardiac silhouette appears enlarged, unchanged from before.", "Cardiomegaly", P),
    ("Stable enlargement of the cardiac silhouette.", "Cardiomegaly", P),
    ("There is widening of the superior mediastinum.", "Enlarged Cardiomediastinum", P),
    ("Small right pleural effusion is noted.", "Pleural Effusion", P),
    ("Blunting of the left costophrenic angle.", "Pleural Effusion", P),
    ("Bilateral effusions have increased in size.", "Pleural Effusion", P),
    ("Large right apical pneumothorax.", "Pneumothorax", P),
    ("Patchy opacity in the right lower lobe.", "Lung Opacity", P),
    ("Focal airspace disease in the lingula.", "Lung Opacity", P),
    ("Streaky bibasilar atelectasis.", "Atelectasis", P),
    ("Right middle lobe consolidation.", "Consolidation", P),
    ("Findings consistent with right lower lobe pneumonia.", "Pneumonia", P),
    ("Mild interstitial pulmonary edema.", "Edema", P),
    ("Central pulmonary vascular congestion.", "Edema", P),
    ("A 1 cm nodule projects over the left upper lung.", "Lung Lesion", P),
    ("Calcified granuloma in the right lung base.", "Lung Lesion", P),
    ("Apical pleural thickening bilaterally.", "Pleural Other", P),
    ("Healed fractures of the right fifth and sixth ribs.", "Fracture", P),
    ("Left subclavian central venous catheter tip in the SVC.", "Support Devices", P),
    ("Dual-lead pacemaker in stable position.", "Support Devices", P),
    ("Median sternotomy wires are intact.", "Support Devices", P),
    ("No change in the small left pleural effusion.", "Pleural Effusion", P),
    # negated, including coordination
    ("No pneumothorax.", "Pneumothorax", N),
    ("No pneumothorax or pleural effusion.", "Pleural Effusion", N),
    ("There is no focal consolidation, pneumothorax, or pleural effusion.", "Consolidation", N),
    ("There is no focal consolidation, pneumothorax, or pleural effusion.", "Pneumothorax", N),
    ("There is no focal consolidation, pneumothorax, or pleural effusion.", "Pleural Effusion", N),
    ("Lungs are clear without focal infiltrate or effusion.", "Pleural Effusion", N),
    ("Negative for pneumothorax.", "Pneumothorax", N),
    ("The lungs are free of focal airspace disease.", "Lung Opacity", N),
    ("No evidence of pulmonary edema.", "Edema", N),
    ("No definite pleural effusion seen.", "Pleural Effusion", N),
    ("No displaced rib fractures.", "Fracture", N),
    ("No suspicious pulmonary nodules or masses.", "Lung Lesion", N),
    ("There is no mediastinal widening.", "Enlarged Cardiomediastinum", N),
    ("No focal air space opacity to suggest pneumonia.", "Pneumonia", N),
    ("Interval removal of the left chest tube.", "Support Devices", N),
    # post-mention negation
    ("A pneumothorax is not seen.", "Pneumothorax", N),
    ("Pleural effusions are absent.", "Pleural Effusion", N),
    ("The previously seen right basilar consolidation has resolved.", "Consolidation", N),
    ("The heart is not enlarged.", "Cardiomegaly", N),
    # uncertain
    ("Left basilar opacity may represent atelectasis.", "Atelectasis", U),
    ("Possible small left pleural effusion.", "Pleural Effusion", U),
    ("Probable right lower lobe pneumonia.", "Pneumonia", U),
    ("Early pneumonia cannot be excluded.", "Pneumonia", U),
    ("Streaky opacity, atelectasis versus scarring.", "Atelectasis", U),
    ("Findings are concerning for developing pulmonary edema.", "Edema", U),
    ("Questionable nondisplaced rib fracture on the left.", "Fracture", U),
    ("Borderline cardiomegaly.", "Cardiomegaly", U),
    ("Borderline heart size.", "Cardiomegaly", U),
    # normal heart and mediastinum phrases
    ("Heart size is normal.", "Cardiomegaly", N),
    ("Normal heart size.", "Cardiomegaly", N),
    ("Heart size within normal limits.", "Cardiomegaly", N),
    ("Normal cardiac silhouette.", "Cardiomegaly", N),
    ("The heart is normal in size and contour.", "Cardiomegaly", N),
    ("Heart size is upper limits of normal.", "Cardiomegaly", N),
    ("The cardiomediastinal silhouette is within normal limits.", "Cardiomegaly", N),
    ("The cardiomediastinal silhouette is within normal limits.", "Enlarged Cardiomediastinum", N),
    ("Cardiomediastinal silhouette normal in size and contour.", "Enlarged Cardiomediastinum", N),
    ("The mediastinum is unremarkable.", "Enlarged Cardiomediastinum", N),
    ("The lungs are clear.", "Lung Opacity", N),
    ("Both lungs are clear and expanded.", "Consolidation", N),
    ("Costophrenic angles are sharp.", "Pleural Effusion", N),
    # clause boundaries end a cue's scope
    ("No pleural effusion, but there is a small left pneumothorax.", "Pneumothorax", P),
    ("No pneumothorax; possible small left effusion.", "Pleural Effusion", U),
    ("No acute disease is seen in the chest, cardiomegaly is stable.", "Cardiomegaly", P),
    ("Opacity at the left base which may represent atelectasis.", "Lung Opacity", P),
    ("Lungs are clear except for minimal bibasilar atelectasis.", "Atelectasis", P),
    # look-alikes that are not mentions
    ("Small pericardial effusion.", "Pleural Effusion", M),
    ("No acute bony abnormality.", "Fracture", M),
    ("The trachea is midline.", "Support Devices", M),
    ("Tortuous thoracic aorta.", "Enlarged Cardiomediastinum", M),
    ("Sequelae of prior granulomatous infection.", "Pneumonia", M),
    ("If there is concern for rib fracture, a rib series may be obtained.", "Fracture", M),
    # XXXX de-identification tokens are ignored
    ("No XXXX focal airspace consolidation.", "Consolidation", N),
    ("Blunting of the left costophrenic XXXX.", "Pleural Effusion", P),
    ("XXXX sternotomy XXXX are intact.", "Support Devices", P),
]


@pytest.mark.parametrize(("text", "observation", "expected"), CASES)
def test_sentence_label(text, observation, expected):
    assert label_report(text)[observation] is expected


@pytest.mark.parametrize(
    ("report", "no_finding"),
    [
        ("The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.", P),
        ("Heart size normal. No pneumothorax or pleural effusion. Left PICC tip in the SVC.", P),
        ("Heart size normal. Lungs are clear. Mild degenerative changes of the spine.", P),
        ("Lungs are clear. Mild cardiomegaly.", N),
        ("Lungs are clear. Possible small left effusion.", N),
        ("Normal heart size. Old healed left rib fracture.", N),
        ("", P),
    ],
)
def test_no_finding(report, no_finding):
    assert label_report(report)["No Finding"] is no_finding


def test_positive_beats_uncertain_beats_negative():
    report = "No pleural effusion. Possible left effusion. Small left pleural effusion."
    assert label_report(report)["Pleural Effusion"] is P
    assert label_report("No pleural effusion. Possible left effusion.")["Pleural Effusion"] is U


def test_all_keys_in_order():
    labels = label_report("Mild cardiomegaly.")
    assert tuple(labels) == OBSERVATIONS
    assert len(OBSERVATIONS) == 14 and OBSERVATIONS[0] == "No Finding"
    assert all(isinstance(v, Status) for v in labels.values())


def test_status_is_str_enum():
    assert Status.NOT_MENTIONED == "not_mentioned" and Status("uncertain") is Status.UNCERTAIN


def test_label_reports_matches_label_report():
    texts = ["No pneumothorax.", "Mild cardiomegaly.", ""]
    assert label_reports(texts) == [label_report(t) for t in texts]
    assert label_reports(iter(texts)) == label_reports(texts)


def test_to_binary():
    labels = label_report("Mild cardiomegaly. Possible small right effusion. No pneumothorax.")
    ones = to_binary(labels)
    assert len(ones) == 14 and all(isinstance(x, float) for x in ones)
    index = {obs: i for i, obs in enumerate(OBSERVATIONS)}
    assert ones[index["Cardiomegaly"]] == 1.0
    assert ones[index["Pleural Effusion"]] == 1.0
    assert ones[index["Pneumothorax"]] == 0.0
    assert ones[index["No Finding"]] == 0.0
    zeros = to_binary(labels, uncertain_as=0.0)
    assert zeros[index["Pleural Effusion"]] == 0.0 and zeros[index["Cardiomegaly"]] == 1.0
    assert to_binary(labels, uncertain_as=0.5)[index["Pleural Effusion"]] == 0.5


def test_to_binary_rejects_incomplete_labels():
    with pytest.raises(ValueError, match="Cardiomegaly"):
        to_binary({"No Finding": P})


def test_positive_findings():
    labels = label_report("Mild cardiomegaly. Possible small right effusion. Right PICC in place.")
    assert positive_findings(labels) == ["Cardiomegaly", "Pleural Effusion", "Support Devices"]
    assert positive_findings(labels, include_uncertain=False) == ["Cardiomegaly", "Support Devices"]
    assert positive_findings(label_report("The lungs are clear.")) == []


def test_label_report_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        label_report(None)


def test_splitting_and_normalising():
    text = normalize("1. No acute disease. 2. Atelectasis vs. scarring; heart XXXX normal.")
    assert "xxxx" not in text and "versus" in text
    sentences = split_sentences(text)
    assert sentences == ["no acute disease", "atelectasis versus scarring; heart normal"]
    assert split_clauses(sentences[1]) == ["atelectasis versus scarring", "heart normal"]
