"""The ``medkit`` command line, run as a real subprocess: generate, evaluate, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pydicom
import pytest

from medkit.cxr.labeler import OBSERVATIONS, Status, label_report
from tests.conftest import NIH_PNG, NIH_PNG_2, ROOT, RSNA_DCM, write_tiny_iu_folder


def medkit(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "medkit.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _check_report(obj: dict):
    assert set(obj) >= {"report", "findings", "knowledge", "modality"}
    assert obj["modality"] == "CXR"
    assert isinstance(obj["report"], str) and obj["report"].strip()
    assert [f["name"] for f in obj["findings"]] == list(OBSERVATIONS)
    for f in obj["findings"]:
        assert 0.0 <= f["probability"] <= 1.0 and f["status"] in ("positive", "borderline", "negative")
        assert f["borderline_threshold"] <= f["threshold"] <= 1.0
        positive = f["threshold"] < 1.0 and f["probability"] >= f["threshold"]
        assert positive == (f["status"] == "positive")
        assert (not positive and f["probability"] >= f["borderline_threshold"]) == (f["status"] == "borderline")
    assert obj["knowledge"] and all(t.startswith("<") and t.endswith(">") for t in obj["knowledge"])
    # the report agrees with the table (medkit.cxr.consistency): it states what the table calls positive
    # and asserts nothing the table calls negative
    status = {f["name"]: f["status"] for f in obj["findings"] if f["name"] != "No Finding"}
    said = label_report(obj["report"])
    stated = (Status.POSITIVE, Status.UNCERTAIN)
    assert all(said[f] in stated for f, s in status.items() if s == "positive"), (status, obj["report"])
    assert not any(said[f] in stated for f, s in status.items() if s == "negative"), (status, obj["report"])
    assert set(obj["stated_findings"]) <= {f for f, s in status.items() if s == "positive"}
    assert set(obj["hedged_findings"]) <= {f for f, s in status.items() if s == "borderline"}
    assert set(obj["withdrawn_findings"]) <= {f for f, s in status.items() if s != "positive"}


@pytest.mark.parametrize("images", [[NIH_PNG], [RSNA_DCM], [NIH_PNG, NIH_PNG_2]], ids=["png", "dicom", "two-views"])
def test_generate_default_model_json(images):
    r = medkit("generate", *map(str, images), "--json", "--num-beams", "1", "--max-new-tokens", "24")
    assert r.returncode == 0, r.stderr[-2000:]
    _check_report(json.loads(r.stdout))


@pytest.mark.parametrize("image", [NIH_PNG, NIH_PNG_2], ids=["nih1", "nih2"])
def test_generate_no_state_findings_gives_the_base_text_alone(image):
    r = medkit("generate", str(image), "--json", "--no-state-findings")
    assert r.returncode == 0, r.stderr[-2000:]
    raw = json.loads(r.stdout)
    assert raw["stated_findings"] == raw["hedged_findings"] == raw["withdrawn_findings"] == []
    r = medkit("generate", str(image), "--json")
    aligned = json.loads(r.stdout)
    from medkit.cxr.consistency import align_report
    from medkit.cxr.model import read_config

    assert aligned["findings"] == raw["findings"]
    report, edits = align_report(raw["report"], {f["name"]: f["status"] for f in raw["findings"]},
                                 read_config().generator.borderline)
    assert (aligned["report"], aligned["stated_findings"], aligned["hedged_findings"],
            aligned["withdrawn_findings"]) == (report, edits["stated"], edits["hedged"], edits["withdrawn"])


def test_generate_with_model_dir(tiny_model_dir):
    r = medkit("generate", str(NIH_PNG), "--model", str(tiny_model_dir), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    _check_report(json.loads(r.stdout))


def _no_pixels(tmp_path):
    ds = pydicom.dcmread(RSNA_DCM)
    del ds.PixelData
    p = tmp_path / "nopix.dcm"
    ds.save_as(p)
    return p


def _file(name: str, content: bytes):
    def make(tmp_path):
        (tmp_path / name).write_bytes(content)
        return tmp_path / name
    return make


@pytest.mark.parametrize("make,needle", [
    (_file("x.png", b"hello"), "not a readable image"),
    (lambda t: t / "missing.png", "file not found"),
    (_file("vol.nii.gz", b"\x1f\x8b00"), "3D volume"),
    (_no_pixels, "no pixel data"),
    (_file("empty.jpg", b""), "empty"),
])
def test_generate_bad_input_one_line(tmp_path, make, needle):
    path = make(tmp_path)
    r = medkit("generate", str(path), "--json", timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    assert str(path) in lines[0] and needle in lines[0]
    assert r.stdout == ""


def test_debug_shows_traceback(tmp_path):
    r = medkit("--debug", "generate", str(tmp_path / "missing.png"), timeout=120)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_unknown_model_dir(tmp_path):
    r = medkit("generate", str(NIH_PNG), "--model", str(tmp_path), timeout=120)
    assert r.returncode == 2 and "not a MedKit model directory" in r.stderr


def test_evaluate_writes_json(tmp_path, tiny_model_dir):
    data = write_tiny_iu_folder(tmp_path / "data")
    out = tmp_path / "x.json"
    r = medkit("evaluate", "--data", str(data), "--split", "val", "--model", str(tiny_model_dir),
               "--out", str(out), "--limit", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| model |" in r.stdout and "nearest_neighbour" in r.stdout and "| floor: consensus |" in r.stdout
    assert "| Cardiomegaly |" in r.stdout and "mean AUC" in r.stdout
    res = json.loads(out.read_text())
    keys = {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "ce_precision", "ce_recall",
            "ce_f1_micro", "ce_f1_macro"}
    assert res["n_studies"] == 2
    assert keys <= set(res["model"])
    keys |= {"false_alarm_rate", "false_alarm_rate_hedged", "per_observation"}
    for system in ("most_frequent", "nearest_neighbour", "consensus"):
        assert keys <= set(res["floors"][system]), system
    assert set(res["findings_head"]["per_observation"]) == set(OBSERVATIONS)
    assert "examples" not in res  # report text only with --examples (the dataset's licence)
    assert res["latency_s"]["p50"] > 0 and res["latency_s"]["p95"] >= res["latency_s"]["p50"]
    assert res["peak_rss_mb"] > 0


def test_the_readme_quotes_what_generate_prints_for_the_nih_sample():
    r = medkit("generate", str(NIH_PNG))
    assert r.returncode == 0, r.stderr[-2000:]
    report = r.stdout.splitlines()[0]
    readme = (ROOT / "README.md").read_text()
    quoted = readme.split("`medkit generate medkit/data/samples/nih_00000001_000.png` prints \"", 1)[1].split('"', 1)[0]
    assert quoted == report
