"""The report states what the findings table calls positive (medkit.consistency)."""

from __future__ import annotations

import itertools

import pytest

from medkit.consistency import STATEMENTS, sentences, state_findings
from medkit.labeler import OBSERVATIONS, Status, label_report

STATED = (Status.POSITIVE, Status.UNCERTAIN)
NORMAL = ("The heart is normal in size. The mediastinum is unremarkable. The lungs are clear without focal "
          "airspace disease, pleural effusion or pneumothorax. There is no acute bony abnormality.")


@pytest.mark.parametrize("finding", list(STATEMENTS))
def test_each_statement_means_its_finding_and_no_other(finding):
    labels = label_report(STATEMENTS[finding])
    assert labels[finding] is Status.POSITIVE
    for other, status in labels.items():
        if other in (finding, "No Finding"):
            continue
        if (finding, other) == ("Enlarged Cardiomediastinum", "Cardiomegaly"):
            assert status in (Status.NOT_MENTIONED, Status.UNCERTAIN)  # CheXpert: a large silhouette may be the heart
        else:
            assert status is Status.NOT_MENTIONED, (other, status)
    # CheXpert: support devices do not make a study abnormal; every other finding does
    assert labels["No Finding"] is (Status.POSITIVE if finding == "Support Devices" else Status.NEGATIVE)


def test_every_observation_but_no_finding_has_a_statement():
    assert set(STATEMENTS) == set(OBSERVATIONS) - {"No Finding"}


def test_a_negating_sentence_is_replaced_in_place():
    report, stated = state_findings(NORMAL, ["Cardiomegaly"])
    assert stated == ["Cardiomegaly"]
    assert sentences(report)[0] == "The heart is enlarged."
    assert sentences(report)[1:] == sentences(NORMAL)[1:]


def test_a_finding_the_report_leaves_out_is_stated_at_the_end():
    report, stated = state_findings("The heart is normal in size.", ["Lung Lesion"])
    assert report == "The heart is normal in size. There is a pulmonary nodule." and stated == ["Lung Lesion"]


def test_every_sentence_negating_the_finding_goes():
    text = "No pleural effusion. The heart is normal. Costophrenic angles are sharp, no effusion."
    assert label_report("Costophrenic angles are sharp, no effusion.")["Pleural Effusion"] is Status.NEGATIVE
    report, _ = state_findings(text, ["Pleural Effusion"])
    assert report == "There is a pleural effusion. The heart is normal."


@pytest.mark.parametrize("text", ["There is a small left pleural effusion.", "Possible small pleural effusion."])
def test_a_stated_or_hedged_finding_is_left_as_written(text):
    assert state_findings(text, ["Pleural Effusion"]) == (text, [])


def test_findings_the_table_does_not_call_are_left_as_written():
    text = "The heart is enlarged. There is a right pleural effusion."
    assert state_findings(text, []) == (text, [])
    assert state_findings(NORMAL, []) == (NORMAL, [])


@pytest.mark.parametrize("findings", [list(c) for n in (1, 2, 3) for c in itertools.combinations(
    ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Lung Opacity", "Support Devices", "Fracture"], n)])
def test_after_the_step_the_report_states_every_finding_and_a_second_pass_changes_nothing(findings):
    report, stated = state_findings(NORMAL, findings)
    labels = label_report(report)
    assert all(labels[f] in STATED for f in findings), labels
    assert set(stated) == set(findings)  # the normal report stated none of them
    assert state_findings(report, findings) == (report, [])
