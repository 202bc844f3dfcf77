"""benchmarks/prompt_following.py: the adherence counts that say whether reports follow the knowledge prompt."""

from __future__ import annotations

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("prompt_following")


def test_adherence_counts_prompted_stated_and_unprompted_findings(bench):
    prompted = [["Cardiomegaly", "Pleural Effusion"], [], ["Pneumothorax"]]
    reports = ["The heart is enlarged. No pleural effusion.",  # states one of the two prompted findings
               "Small right pleural effusion.",  # a finding the prompt did not name
               "The lungs are clear. No pneumothorax."]  # ignores its prompt
    a = bench.adherence(prompted, reports)
    assert (a["prompted_findings"], a["prompted_and_stated"]) == (3, 1)
    assert (a["stated_findings"], a["stated_unprompted"]) == (2, 1)
    assert a["adherence"] == pytest.approx(1 / 3) and a["unprompted_share"] == pytest.approx(1 / 2)


def test_adherence_of_nothing_is_zero_not_an_error(bench):
    assert bench.adherence([[]], ["Normal chest."])["adherence"] == 0.0
