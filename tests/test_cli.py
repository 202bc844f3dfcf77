"""The ``medkit`` command line, run as a real subprocess: generate, evaluate, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pydicom
import pytest

from medkit.labeler import OBSERVATIONS, Status, label_report
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
        assert 0.0 <= f["probability"] <= 1.0 and f["status"] in ("positive", "negative")
        assert (f["probability"] >= f["threshold"]) == (f["status"] == "positive")
    assert obj["knowledge"] and all(t.startswith("<") and t.endswith(">") for t in obj["knowledge"])
    # the report states every finding the table calls positive (medkit.consistency)
    positive = {f["name"] for f in obj["findings"] if f["status"] == "positive"} - {"No Finding"}
    said = label_report(obj["report"])
    assert all(said[f] in (Status.POSITIVE, Status.UNCERTAIN) for f in positive), (positive, obj["report"])
    assert set(obj["stated_findings"]) <= positive


@pytest.mark.parametrize("images", [[NIH_PNG], [RSNA_DCM], [NIH_PNG, NIH_PNG_2]], ids=["png", "dicom", "two-views"])
def test_generate_default_model_json(images):
    r = medkit("generate", *map(str, images), "--json", "--num-beams", "1", "--max-new-tokens", "24")
    assert r.returncode == 0, r.stderr[-2000:]
    _check_report(json.loads(r.stdout))


def test_generate_no_state_findings_gives_the_generator_text_alone():
    r = medkit("generate", str(NIH_PNG_2), "--json", "--no-state-findings")
    assert r.returncode == 0, r.stderr[-2000:]
    raw = json.loads(r.stdout)
    assert raw["stated_findings"] == []
    r = medkit("generate", str(NIH_PNG_2), "--json")
    stated = json.loads(r.stdout)
    from medkit.consistency import state_findings

    positive = [f["name"] for f in raw["findings"] if f["status"] == "positive" and f["name"] != "No Finding"]
    assert (stated["report"], stated["stated_findings"]) == state_findings(raw["report"], positive)


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
    assert "| model |" in r.stdout and "nearest_neighbour" in r.stdout
    res = json.loads(out.read_text())
    keys = {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "ce_precision", "ce_recall",
            "ce_f1_micro", "ce_f1_macro"}
    assert res["n_studies"] == 2
    assert keys <= set(res["model"])
    assert keys <= set(res["floors"]["most_frequent"]) and keys <= set(res["floors"]["nearest_neighbour"])
    assert res["latency_s"]["p50"] > 0 and res["latency_s"]["p95"] >= res["latency_s"]["p50"]
    assert res["peak_rss_mb"] > 0
