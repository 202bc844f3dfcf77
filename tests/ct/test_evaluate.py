"""``medkit evaluate-ct`` on the committed CT manifest: Dice and volume error per organ against the
reference masks, organs rejected by the plausibility checks, latency; seen and unseen kept apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from medkit.ct.evaluate import _dice
from medkit.ct.model import default_ct_model_dir
from tests.ct.samples import CT, ROOT

pytestmark = pytest.mark.skipif(not (default_ct_model_dir() / "config.json").exists(),
                                reason="NO SHIPPED CT MODEL in medkit/weights/ct: run medkit train-ct first")


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "ct_eval.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "medkit.cli", "--threads", "1", "evaluate-ct", "--manifest",
                        str(CT / "manifest.jsonl"), "--out", str(out)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, json.loads(out.read_text())


def test_table_and_json(evaluation):
    stdout, res = evaluation
    assert "| volume | seen in training | organ | Dice |" in stdout
    ids = {s["id"]: s for s in res["studies"]}
    assert set(ids) == {"totalseg_nifti", "totalseg_dicom", "dcmqi_3slice"}
    assert ids["totalseg_nifti"]["seen"] and not ids["dcmqi_3slice"]["seen"]
    assert set(res["summary"]) == {"seen", "unseen"}
    assert res["summary"]["unseen"]["volumes"] == 1 and res["summary"]["seen"]["volumes"] == 2
    assert set(ids["dcmqi_3slice"]["organs"]) == {"liver"}  # its reference labels the liver only
    for s in res["studies"]:
        assert s["latency_s"] > 0
        for organ, o in s["organs"].items():
            assert 0 <= o["dice"] <= 1 and o["report"] in ("measured", "rejected", "absent")
            if o["report"] == "rejected":
                assert organ in s["rejected"] and o["implausible"]


def test_numbers_are_those_of_the_masks(evaluation):
    _, res = evaluation
    s = next(s for s in res["studies"] if s["id"] == "totalseg_nifti")
    liver = s["organs"]["liver"]
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(CT / "totalsegmentator" / "example_seg.nii.gz"))) == 5
    assert liver["reference_ml"] == pytest.approx(truth.sum() * 0.027, abs=0.1)
    assert liver["dice"] > 0.9 and liver["report"] == "measured"  # seen in training (README)
    assert abs(liver["volume_error_pct"]) < 10
    unseen = next(s for s in res["studies"] if s["id"] == "dcmqi_3slice")
    assert unseen["organs"]["liver"]["report"] == "rejected"  # spills over the slab: not stated
    assert res["summary"]["unseen"]["organs_rejected"] >= 1


def test_dice_edge_cases():
    a = np.zeros((4, 4), bool)
    assert _dice(a, a) is None
    b = a.copy()
    b[0, 0] = True
    assert _dice(b, a) == 0.0 and _dice(b, b) == 1.0


def test_manifest_without_masks_is_an_error(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"id": "x", "images": [str(CT / "totalsegmentator" / "example_ct_sm.nii.gz")],
                             "report": "", "split": "val"}) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "medkit.cli", "evaluate-ct", "--manifest", str(m)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "no study with a reference mask" in r.stderr
