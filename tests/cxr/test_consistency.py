"""The report agrees with the findings table and states only what the head supports (medkit.cxr.consistency)."""

from __future__ import annotations

import itertools
import random

import pytest

from medkit.cxr.consistency import (HEDGES, NEGATIONS, STATEMENTS, align_report, fit_template, sentences, site_order,
                                    state_findings)
from medkit.core.modeldir import ModelDir
from medkit.cxr.config import MedKitConfig
from medkit.cxr.labeler import OBSERVATIONS, Status, label_report

STATED = (Status.POSITIVE, Status.UNCERTAIN)
NORMAL = ("The heart is normal in size. The mediastinum is unremarkable. The lungs are clear without focal "
          "airspace disease, pleural effusion or pneumothorax. There is no acute bony abnormality.")
ABNORMAL = ("Heart size is mildly enlarged. There is a small right pleural effusion. There is a left apical "
            "pneumothorax. Mild basilar atelectasis.")


@pytest.mark.parametrize("finding", list(STATEMENTS))
def test_each_statement_means_its_finding_and_no_other(finding):
    labels = label_report(STATEMENTS[finding])
    assert labels[finding] is Status.POSITIVE
    for other, status in labels.items():
        if other not in (finding, "No Finding"):
            assert status is Status.NOT_MENTIONED, (other, status)
    # CheXpert: support devices do not make a study abnormal; every other finding does
    assert labels["No Finding"] is (Status.POSITIVE if finding == "Support Devices" else Status.NEGATIVE)


@pytest.mark.parametrize("finding", list(HEDGES))
def test_each_hedge_is_uncertain_about_its_finding_only(finding):
    labels = label_report(HEDGES[finding])
    assert labels[finding] is Status.UNCERTAIN
    assert all(s is Status.NOT_MENTIONED for o, s in labels.items() if o not in (finding, "No Finding")), labels


@pytest.mark.parametrize("finding", list(NEGATIONS))
def test_each_negation_negates_its_finding_only(finding):
    labels = label_report(NEGATIONS[finding])
    assert labels[finding] is Status.NEGATIVE and labels["No Finding"] is Status.POSITIVE
    assert all(s is Status.NOT_MENTIONED for o, s in labels.items() if o not in (finding, "No Finding")), labels


def test_tables_cover_the_observations():
    assert set(STATEMENTS) == set(OBSERVATIONS) - {"No Finding"}
    assert set(HEDGES) == set(STATEMENTS) - {"Support Devices"}
    assert set(NEGATIONS) <= set(STATEMENTS)


def test_a_negating_sentence_is_replaced_in_place():
    report, stated = state_findings(NORMAL, ["Cardiomegaly"])
    assert stated == ["Cardiomegaly"]
    assert sentences(report)[0] == STATEMENTS["Cardiomegaly"]
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


def test_an_assertion_the_table_calls_negative_becomes_the_negation():
    report, edits = align_report(ABNORMAL, {"Pneumothorax": "negative", "Cardiomegaly": "positive",
                                            "Pleural Effusion": "positive", "Atelectasis": "positive"})
    assert sentences(report) == [sentences(ABNORMAL)[0], sentences(ABNORMAL)[1], NEGATIONS["Pneumothorax"],
                                 sentences(ABNORMAL)[3]]
    assert edits == {"stated": [], "hedged": [], "withdrawn": ["Pneumothorax"]}


def test_a_withdrawn_finding_is_negated_once_or_just_removed():
    text = "There is a pneumothorax. No pneumothorax is seen. Mild basilar atelectasis. Lungs are clear."
    report, edits = align_report(text, {"Pneumothorax": "negative", "Atelectasis": "negative"})
    assert report == "No pneumothorax is seen. Lungs are clear."  # negated already; atelectasis has no negation
    assert edits["withdrawn"] == ["Pneumothorax", "Atelectasis"]  # in the table's order


def test_a_sentence_with_a_wrong_and_a_right_finding_keeps_the_right_one():
    report, edits = align_report("There is cardiomegaly with a pneumothorax. The lungs are clear.",
                                 {"Cardiomegaly": "positive", "Pneumothorax": "negative"})
    labels = label_report(report)
    assert labels["Cardiomegaly"] is Status.POSITIVE and labels["Pneumothorax"] is Status.NEGATIVE
    assert edits["withdrawn"] == ["Pneumothorax"] and edits["stated"] == ["Cardiomegaly"]


@pytest.mark.parametrize("mode, expected", [
    ("hedge_stated", "Heart size is mildly enlarged. Possible pleural effusion. Possible pneumothorax. Mild basilar atelectasis."),
    ("hedge", "Heart size is mildly enlarged. Possible pleural effusion. Possible pneumothorax. Mild basilar atelectasis."),
    ("table", "Heart size is mildly enlarged. Mild basilar atelectasis."),
])
def test_borderline_modes_on_asserted_findings(mode, expected):
    decisions = {"Cardiomegaly": "positive", "Pleural Effusion": "borderline", "Pneumothorax": "borderline",
                 "Atelectasis": "positive"}
    assert align_report(ABNORMAL, decisions, mode)[0] == expected


def test_borderline_findings_the_report_negates_are_hedged_only_in_hedge_mode():
    decisions = {"Pleural Effusion": "borderline"}
    assert align_report(NORMAL, decisions, "hedge_stated") == (NORMAL, {"stated": [], "hedged": [], "withdrawn": []})
    assert align_report(NORMAL, decisions, "table")[0] == NORMAL
    report, edits = align_report(NORMAL, decisions, "hedge")
    assert label_report(report)["Pleural Effusion"] is Status.UNCERTAIN and edits["hedged"] == ["Pleural Effusion"]
    assert HEDGES["Pleural Effusion"] in sentences(report)


def test_bad_arguments():
    with pytest.raises(ValueError, match="borderline must be"):
        align_report(NORMAL, {}, "maybe")
    with pytest.raises(ValueError, match="unknown finding decisions"):
        align_report(NORMAL, {"Cardiomegaly": "uncertain"})


FINDINGS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Lung Opacity", "Atelectasis", "Support Devices"]


@pytest.mark.parametrize("mode", ["hedge_stated", "hedge", "table"])
@pytest.mark.parametrize("text", [NORMAL, ABNORMAL, "There is focal airspace disease. Sternotomy wires are present."])
def test_the_report_never_contradicts_the_table_and_a_second_pass_changes_nothing(text, mode):
    tables = list(itertools.product(("positive", "borderline", "negative"), repeat=len(FINDINGS)))
    for decisions in random.Random(0).sample(tables, 60):  # of 729: all of them take minutes
        table = dict(zip(FINDINGS, decisions))
        report, edits = align_report(text, table, mode)
        labels = label_report(report)
        for f, d in table.items():
            if d == "positive":
                assert labels[f] in STATED, (table, report)
            elif d == "negative":
                assert labels[f] not in STATED, (table, report)
            elif f in HEDGES:  # borderline
                assert labels[f] is not Status.POSITIVE, (table, report)
                if mode == "hedge":
                    assert labels[f] is Status.UNCERTAIN, (table, report)
                if mode == "table":
                    assert labels[f] not in STATED, (table, report)
        assert align_report(report, table, mode) == (report, {"stated": [], "hedged": [], "withdrawn": []}), (table, report)


def test_phrase_check_cuts_sentences_into_shared_fragments():
    """benchmarks/statement_phrases.py: the >= 5 distinct reports rule the shipped sentences follow."""
    from tests.conftest import load_benchmark

    bench = load_benchmark("statement_phrases")
    counts = bench.report_ngrams(["There is a small effusion. No pneumothorax."] * 5 + ["Heart is big."])
    assert counts["there is a small effusion"] == 5 and counts["heart is big"] == 1
    assert bench.fragments("There is no effusion.", counts, 5) == [("there is", 5), ("no", 5), ("effusion", 5)]
    assert bench.fragments("There is a small effusion.", counts, 5) == [("there is a small effusion", 5)]
    assert bench.fragments("Heart is big.", counts, 5) is None
    assert bench.fragments("Heart is big.", counts, 1) == [("heart is big", 1)]


# ---- the site's normal report (fit_template) ------------------------------------------------
SITE = ["The heart is normal in size. The lungs are clear. No pneumothorax.",
        "The heart is normal in size. The lungs are clear. No pneumothorax.",
        "The heart is normal in size. The lungs are clear.",
        "Heart size is enlarged. The lungs are clear. No pneumothorax.",
        "The heart is normal in size. The lungs are clear. No pneumothorax. Old rib fracture xxxx."]


def test_template_is_the_consensus_of_shared_sentences_in_their_usual_form():
    template = fit_template(SITE + ["the heart is normal in size. THE LUNGS ARE CLEAR."], min_reports=3)
    assert template == ("The heart is normal in size.", "The lungs are clear.", "No pneumothorax.")


def test_template_never_holds_a_sentence_fewer_reports_share_or_a_placeholder():
    for min_reports in (1, 2, 4):
        template = fit_template(SITE, min_reports=min_reports)
        assert template
        for sentence in template:
            assert "xxxx" not in sentence.lower()
            assert sum(sentence in report for report in SITE) >= min_reports, (min_reports, sentence)
    assert fit_template(SITE, min_reports=5) == ()  # only "The lungs are clear." is that common: no report is made of it


def test_template_edited_by_the_table_states_only_its_findings():
    template = " ".join(fit_template(SITE, min_reports=3))
    report, edits = align_report(template, {"Pneumothorax": "positive", "Cardiomegaly": "negative"})
    labels = label_report(report)
    assert labels["Pneumothorax"] is Status.POSITIVE and labels["Cardiomegaly"] is Status.NEGATIVE
    assert "The lungs are clear." in report and edits["stated"] == ["Pneumothorax"]


def test_template_sentences_go_where_the_site_discusses_their_findings():
    # the consensus sentence names the heart; most reports discuss the heart first, whatever their words
    reports = ["No pneumothorax. The heart is normal in size. The lungs are clear."] * 3 + \
              ["Heart size is normal. The lungs are clear. No pneumothorax.",
               "Heart size is enlarged. No pneumothorax. Lungs are clear.",
               "The cardiac silhouette is enlarged. Lungs are clear. No pneumothorax. Spine is normal."] * 2
    template = fit_template(reports, min_reports=3)
    assert template == ("The heart is normal in size.", "No pneumothorax.", "The lungs are clear.")


def test_site_order_places_a_sentence_naming_no_finding_by_its_own_position():
    reports = ["Spine is unremarkable. The lungs are clear.", "The lungs are clear. Spine is unremarkable.",
               "Spine is unremarkable. No pneumothorax. Lungs are clear."]
    assert site_order(["The lungs are clear.", "Spine is unremarkable."], reports) == [
        "Spine is unremarkable.", "The lungs are clear."]
    assert site_order(["Never seen.", "The lungs are clear."], reports) == ["The lungs are clear.", "Never seen."]


@pytest.mark.parametrize("finding", sorted(STATEMENTS))
def test_a_stated_finding_is_not_denied_in_the_same_words_by_the_shipped_template(finding):
    """The labeler reads "no focal airspace consolidation" as Consolidation only, but beside "there is
    focal airspace disease" a reader sees a contradiction: no kept negative sentence may repeat a
    two-word phrase of the statement."""
    template = " ".join(ModelDir.shipped("cxr").config(MedKitConfig).generator.template)
    report, _ = align_report(template, {finding: "positive"})
    stated = STATEMENTS[finding].lower().rstrip(".").split()
    pairs = {" ".join(p) for p in zip(stated, stated[1:])} - {"there is", "there are", "is a", "is an", "are present"}
    for sentence in sentences(report):
        if sentence != STATEMENTS[finding] and any(v is Status.NEGATIVE for v in label_report(sentence).values()):
            assert not {p for p in pairs if p in sentence.lower()}, (report, sentence)
