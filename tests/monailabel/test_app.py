"""The MONAI Label app over a local study folder, through HTTP against a real server.

Order matters within this module (one shared server): reports are submitted before active
learning and training use them.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest
import requests

from medkit.cxr.labeler import OBSERVATIONS
from tests.conftest import NIH_PNG_2
from tests.monailabel.conftest import CT_VOLUME

PNG_ID, PNG2_ID, DCM_ID = "nih_00000001_000", "nih_00027426_000", "rsna_pneumonia_sample"
REPORT = "The heart is normal in size. The lungs are clear. No pneumothorax or pleural effusion."


def post(server, path, **kw):
    return requests.post(f"{server.url}{path}", timeout=300, **kw)


def check_cxr_result(obj: dict):
    assert set(obj) >= {"report", "findings", "knowledge", "modality", "model"}
    assert obj["modality"] == "CXR" and isinstance(obj["report"], str) and obj["report"].strip()
    assert [f["name"] for f in obj["findings"]] == list(OBSERVATIONS)
    assert all(0 <= f["probability"] <= 1 and f["status"] in ("positive", "borderline", "negative")
               for f in obj["findings"])
    assert obj["knowledge"] and all(t.startswith("<") for t in obj["knowledge"])


def test_info_lists_models_strategies_scoring(local_server, ct_model_dir):
    info = requests.get(f"{local_server.url}/info/", timeout=30).json()
    assert "medkit_cxr" in info["models"] and info["models"]["medkit_cxr"]["dimension"] == 2
    assert "medkit_cxr" in info["trainers"]
    assert {"random", "first", "medkit_cxr_uncertainty"} <= set(info["strategies"])
    assert "medkit_cxr_entropy" in info["scoring"]
    if ct_model_dir is None:
        pytest.skip("SKIPPED LOUDLY: no CT model (medkit.ct or medkit/weights/ct missing); medkit_ct is not listed")
    assert "medkit_ct" in info["models"] and info["models"]["medkit_ct"]["dimension"] == 3
    assert "medkit_ct" in info["trainers"]


@pytest.mark.parametrize("image", [PNG_ID, DCM_ID], ids=["png", "dicom"])
def test_infer_json(local_server, image):
    r = post(local_server, f"/infer/medkit_cxr?image={image}&output=json")
    assert r.status_code == 200, r.text
    check_cxr_result(r.json())


def test_infer_aligns_the_report_with_the_findings_unless_asked_not_to(local_server, tiny_model_dir):
    from medkit.cxr.consistency import align_report

    url = f"/infer/medkit_cxr?image={PNG_ID}&output=json"
    raw = post(local_server, url, data={"params": json.dumps({"state_findings": False})})
    stated = post(local_server, url)
    assert raw.status_code == stated.status_code == 200, raw.text + stated.text
    raw, stated = raw.json(), stated.json()
    assert raw["stated_findings"] == raw["hedged_findings"] == raw["withdrawn_findings"] == []
    assert stated["findings"] == raw["findings"]
    from medkit.cxr.model import read_config  # the server serves tiny_model_dir

    report, edits = align_report(raw["report"], {f["name"]: f["status"] for f in raw["findings"]},
                                 read_config(tiny_model_dir).generator.borderline)
    assert (stated["report"], stated["stated_findings"], stated["hedged_findings"],
            stated["withdrawn_findings"]) == (report, edits["stated"], edits["hedged"], edits["withdrawn"])


def test_infer_uploaded_file(local_server):
    with open(NIH_PNG_2, "rb") as f:
        r = post(local_server, "/infer/medkit_cxr?output=json", files={"file": ("view.png", f)})
    assert r.status_code == 200, r.text
    check_cxr_result(r.json())


def test_infer_ct_volume(local_server, ct_model_dir):
    if ct_model_dir is None:
        pytest.skip("SKIPPED LOUDLY: no CT model (medkit.ct or medkit/weights/ct missing); no CT inference to test")
    image = CT_VOLUME.name[: -len(".nii.gz")]
    r = post(local_server, f"/infer/medkit_ct?image={image}&output=json")
    assert r.status_code == 200, r.text
    obj = r.json()
    assert obj["modality"] == "CT" and obj["report"].strip() and isinstance(obj["findings"], list)
    r = post(local_server, f"/infer/medkit_ct?image={image}&output=image")
    assert r.status_code == 200 and len(r.content) > 100  # the organ label volume (NIfTI, gzip)
    assert r.content[:2] == b"\x1f\x8b"
    assert {"lungs", "bone", "body"} <= set(obj["segmentation_labels"].values())
    assert all("reliable" in m for m in obj["measurements"].values())
    # the label volume as returned (organs 1..8 and lungs / bone / body 9..11) is accepted back as
    # the study's organ mask, on a study of its own (no report: the training tests do not see it)
    with open(CT_VOLUME, "rb") as f:
        up = requests.put(f"{local_server.url}/datastore/image?image=ct_seg_roundtrip",
                          files={"file": ("v.nii.gz", f)}, timeout=120)
    assert up.status_code == 200, up.text
    up = requests.put(f"{local_server.url}/datastore/label?image=ct_seg_roundtrip&tag=organs",
                      files={"label": ("organs.nii.gz", r.content)}, timeout=120)
    assert up.status_code == 200, up.text


@pytest.mark.parametrize("path,kwargs,status,needle", [
    ("/infer/nope?image=" + PNG_ID, {}, 404, "unknown model 'nope'"),
    ("/infer/medkit_cxr?image=ghost", {}, 404, "image 'ghost' not found"),
    ("/infer/medkit_cxr?image=../../etc/passwd", {}, 400, "invalid image id"),
    ("/infer/medkit_cxr?image=/etc/passwd", {}, 400, "not a server path"),
    ("/infer/medkit_cxr?image=" + PNG_ID, {"data": {"params": "{not json"}}, 400, "malformed JSON"),
    ("/infer/medkit_cxr?image=" + PNG_ID, {"data": {"params": '{"num_beams": 99}'}}, 400, "num_beams"),
    ("/infer/medkit_cxr?image=" + PNG_ID, {"data": {"params": '{"max_new_tokens": "x"}'}}, 400, "max_new_tokens"),
    ("/infer/medkit_cxr?image=" + PNG_ID, {"data": {"params": '{"state_findings": "maybe"}'}}, 400, "state_findings"),
    ("/infer/medkit_cxr?image=" + PNG_ID, {"data": {"params": '{"report_base": "retrieval"}'}}, 400, "report_base"),
    ("/infer/medkit_cxr", {"files": {"file": ("x.png", b"hello")}}, 400, "not a readable image"),
    ("/infer/medkit_cxr", {"files": {"file": ("v.nii.gz", b"\x1f\x8b00")}}, 400, "3D volume"),
    ("/activelearning/nope", {}, 404, "unknown strategy 'nope'"),
    ("/train/nope", {"json": {}}, 404, "unknown model 'nope'"),
], ids=["model", "image", "traversal", "server-path", "params-json", "num-beams", "max-new-tokens",
        "state-findings", "report-base", "non-image-upload", "volume-to-cxr", "strategy", "train-model"])
def test_bad_requests_are_4xx_and_server_keeps_serving(local_server, path, kwargs, status, needle):
    r = post(local_server, path, **kwargs)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    assert "Traceback" not in r.text
    assert requests.get(f"{local_server.url}/info/", timeout=30).status_code == 200


def put_label(server, image, content: bytes, name="report.json", tag=None):
    url = f"{server.url}/datastore/label?image={image}" + (f"&tag={tag}" if tag else "")
    return requests.put(url, files={"label": (name, content)}, timeout=60)


def get_label(server, image, tag="final"):
    return requests.get(f"{server.url}/datastore/label?label={image}&tag={tag}", timeout=60)


def test_report_label_saved_read_back_and_versioned(local_server):
    r = put_label(local_server, PNG_ID, json.dumps({"report": "First draft."}).encode())
    assert r.status_code == 200, r.text
    body = {"report": REPORT, "findings": [{"name": "Cardiomegaly", "status": "negative"}]}
    r = put_label(local_server, PNG_ID, json.dumps(body).encode())
    assert r.status_code == 200, r.text
    got = get_label(local_server, PNG_ID)
    assert got.status_code == 200
    saved = got.json()
    assert saved["report"] == REPORT and saved["version"] == 2 and saved["findings"] == body["findings"]
    final_dir = local_server.studies / "labels" / "final"
    assert json.loads((final_dir / ".history" / PNG_ID / "1.json").read_text())["report"] == "First draft."
    assert not list(final_dir.glob(".*.tmp")) and not list(final_dir.glob(f".{PNG_ID}.json.*"))  # no temp left
    stats = requests.get(f"{local_server.url}/datastore/?output=stats", timeout=30).json()
    assert stats["completed"] >= 1 and stats["label_tags"]["final"] >= 1
    # plain text is wrapped into the same JSON form
    r = put_label(local_server, DCM_ID, REPORT.encode(), name="report.txt")
    assert r.status_code == 200, r.text
    assert get_label(local_server, DCM_ID).json()["report"] == REPORT


@pytest.mark.parametrize("image,content,name,tag,status,needle", [
    (PNG2_ID, b'{"nope": 1}', "r.json", None, 400, "'report'"),
    (PNG2_ID, b"{broken", "r.json", None, 400, "not valid JSON"),
    (PNG2_ID, b"\x89PNG\r\n", "r.png", None, 400, "final label of a study is its report"),
    (PNG2_ID, b"\xff\xfe\x00", "r.txt", None, 400, "not UTF-8"),
    ("ghost", b'{"report": "x"}', "r.json", None, 404, "not found"),
    ("../etc", b'{"report": "x"}', "r.json", None, 400, "invalid image id"),
    (PNG2_ID, b'{"report": "x"}', "r.json", "../../x", 400, "invalid label tag"),
], ids=["no-report", "bad-json", "image-as-final", "not-utf8", "unknown-image", "traversal", "bad-tag"])
def test_bad_report_labels(local_server, image, content, name, tag, status, needle):
    r = put_label(local_server, image, content, name, tag)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    assert get_label(local_server, PNG2_ID).status_code == 404  # nothing was stored for it


def test_active_learning_proposes_unlabelled_study(local_server):
    labelled = {PNG_ID, DCM_ID}
    r = post(local_server, "/activelearning/medkit_cxr_uncertainty")
    assert r.status_code == 200, r.text
    pick = r.json()
    assert pick["id"] not in labelled and 0.0 <= pick["score"] <= 1.0
    for strategy in ("first", "random"):
        r = post(local_server, f"/activelearning/{strategy}")
        assert r.status_code == 200 and r.json()["id"] not in labelled


def wait_for_training(server, timeout=600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        task = requests.get(f"{server.url}/train/", timeout=30).json()
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            return task
        time.sleep(2)
    raise AssertionError(f"training still running after {timeout} s")


def label_three_studies(server) -> None:
    for image in (PNG_ID, PNG2_ID, DCM_ID):
        assert put_label(server, image, json.dumps({"report": REPORT}).encode()).status_code == 200


def test_train_fine_tunes_validates_and_promotes(local_server, tiny_model_dir):
    from safetensors.torch import load_file

    label_three_studies(local_server)  # the same report: the held-out loss must go down
    r = post(local_server, "/train/medkit_cxr", json={"max_epochs": 4, "lr": 0.01, "min_studies": 2})
    assert r.status_code == 200, r.text
    task = wait_for_training(local_server)
    assert task["status"] == "DONE", task.get("details")
    stats = requests.get(f"{local_server.url}/info/", timeout=30).json()["train_stats"]["medkit_cxr"]
    assert stats["status"] == "DONE" and stats["train_studies"] == 2 and stats["val_studies"] == 1
    assert stats["val_loss_after"] < stats["val_loss_before"] and stats["promoted"] is True
    assert any("validation loss" in line for line in task["details"])  # progress visible via /train
    new = load_file(str(local_server.app / "model" / "medkit_cxr" / "versions" / stats["version"] / "model.safetensors"))
    old = load_file(str(tiny_model_dir / "model.safetensors"))
    changed = [k for k in old if k.startswith("generator.") and not k.endswith(("report_vocab", "draft_table"))
               and not (old[k] == new[k]).all()]
    assert changed, "training did not change the generator's weights"
    from medkit.cxr.consistency import fit_template
    from medkit.cxr.model import read_config

    base = read_config(tiny_model_dir).generator
    version = read_config(local_server.app / "model" / "medkit_cxr" / "versions" / stats["version"]).generator
    site = fit_template([REPORT] * 3, base.draft_min_reports)  # the site's reports refit the template when they can
    assert version.template == (site or base.template)
    r = post(local_server, f"/infer/medkit_cxr?image={PNG_ID}&output=json")
    assert r.status_code == 200 and r.json()["model"] == stats["version"]  # the server serves the new version

    # A run that must not be promoted (tolerance below any improvement) keeps the current model.
    # run_sync: MONAI Label runs it in the server process (no subprocess start-up); same task code.
    r = post(local_server, "/train/medkit_cxr?run_sync=true",
             json={"max_epochs": 1, "min_studies": 2, "promote_tolerance": -1e6})
    assert r.status_code == 200, r.text
    assert r.json()["promoted"] is False and r.json()["version"] is None
    again = requests.get(f"{local_server.url}/info/", timeout=30).json()["train_stats"]["medkit_cxr"]
    assert again["status"] == "DONE" and again["promoted"] is False and again["version"] is None
    assert (local_server.app / "model" / "medkit_cxr" / "current").read_text().strip() == stats["version"]


def test_train_in_two_processes_promotes_one_version(local_server):
    """The multi-GPU path (DistributedDataParallel, one process per device, rank 0 saves) with two
    CPU processes over gloo: the same code as on GPUs, but NCCL needs GPUs this machine lacks."""
    label_three_studies(local_server)
    versions = local_server.app / "model" / "medkit_cxr" / "versions"
    before = set(versions.glob("*")) if versions.exists() else set()
    r = post(local_server, "/train/medkit_cxr", json={"processes": 2, "max_epochs": 3, "lr": 0.01, "min_studies": 2})
    assert r.status_code == 200, r.text
    task = wait_for_training(local_server)
    assert task["status"] == "DONE", task.get("details")
    stats = requests.get(f"{local_server.url}/info/", timeout=30).json()["train_stats"]["medkit_cxr"]
    assert stats["status"] == "DONE" and stats["processes"] == 2 and stats["train_studies"] == 2
    assert stats["val_loss_after"] < stats["val_loss_before"] and stats["promoted"] is True
    assert [e["epoch"] for e in stats["epochs"]] == [1, 2, 3]  # rank 0 alone reports each epoch once
    log = local_server.tail(10**7)  # the task log (/train keeps only its last 20 lines)
    assert "medkit_cxr train: 2 processes (CPU, gloo)" in log
    assert log.count("medkit_cxr train: epoch 3/3 validation loss") == 1
    new = set(versions.glob("*")) - before
    assert [v.name for v in new] == [stats["version"]]  # one version, saved once
    assert not (local_server.app / "model" / "medkit_cxr" / "runs").exists() or \
        not any((local_server.app / "model" / "medkit_cxr" / "runs").iterdir())  # optimiser state removed
    r = post(local_server, f"/infer/medkit_cxr?image={PNG_ID}&output=json")
    assert r.status_code == 200 and r.json()["model"] == stats["version"]


def test_training_with_too_few_reports_fails_clearly(local_server):
    r = post(local_server, "/train/medkit_cxr", json={"min_studies": 50})
    assert r.status_code == 400 and "need at least 50 chest X-ray studies" in r.json()["detail"], r.text
    r = post(local_server, "/train/medkit_cxr", json={"max_epochs": "many"})
    assert r.status_code == 400 and "max_epochs must be int" in r.json()["detail"], r.text
    r = post(local_server, "/train/medkit_cxr", json={"multi_gpu": "maybe"})
    assert r.status_code == 400 and "multi_gpu must be true or false" in r.json()["detail"], r.text
    r = post(local_server, "/train/medkit_cxr", json={"processes": 0})
    assert r.status_code == 400 and "processes must be at least 1" in r.json()["detail"], r.text


def test_no_report_text_in_logs(local_server):
    logs = local_server.tail(10**7) + "".join(p.read_text() for p in (local_server.app / "logs").glob("*.log"))
    assert REPORT not in logs and "First draft." not in logs


def totalseg_to_medkit_mask(dest) -> None:
    """The sample's TotalSegmentator label map in MedKit's organ values 1..8 (what /infer/medkit_ct returns)."""
    import numpy as np
    import SimpleITK as sitk

    from medkit.ct.config import TOTALSEG_LABELS, CTEncoderConfig
    from tests.monailabel.conftest import CT_MASK

    src = sitk.ReadImage(str(CT_MASK))
    arr = sitk.GetArrayFromImage(src)
    out = np.zeros(arr.shape, dtype=np.uint8)
    for i, organ in enumerate(CTEncoderConfig().organs, 1):
        out[arr == TOTALSEG_LABELS[organ]] = i
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(src)
    sitk.WriteImage(img, str(dest), useCompression=True)


def test_ct_train_with_reports_and_masks_promotes(local_server, ct_model_dir, tmp_path):
    from safetensors.torch import load_file

    if ct_model_dir is None:
        pytest.skip("SKIPPED LOUDLY: no CT model (medkit.ct or medkit/weights/ct missing); no CT training to test")
    ct_id = CT_VOLUME.name[: -len(".nii.gz")]
    with open(CT_VOLUME, "rb") as f:  # a second CT study (the same scan): training needs a held-out one
        r = requests.put(f"{local_server.url}/datastore/image?image=ct_copy", files={"file": ("v.nii.gz", f)},
                         timeout=120)
    assert r.status_code == 200, r.text
    ct_report = {"report": "The liver and spleen are normal in size. No ascites. Kidneys unremarkable."}
    for image in (ct_id, "ct_copy"):
        assert put_label(local_server, image, json.dumps(ct_report).encode()).status_code == 200
    # without masks and with a report that names no finding, there is nothing to learn: it says so
    r = post(local_server, "/train/medkit_ct", json={"max_epochs": 1, "min_studies": 2})
    assert r.status_code == 400 and "none has an organ mask" in r.json()["detail"], r.text

    mask = tmp_path / "organs.nii.gz"
    totalseg_to_medkit_mask(mask)
    for image in (ct_id, "ct_copy"):
        with open(mask, "rb") as f:
            r = requests.put(f"{local_server.url}/datastore/label?image={image}&tag=organs",
                             files={"label": ("organs.nii.gz", f)}, timeout=120)
        assert r.status_code == 200, r.text
    # run_sync: in the server process (the subprocess path is the chest X-ray test's); same task code
    r = post(local_server, "/train/medkit_ct?run_sync=true", json={"max_epochs": 3, "min_studies": 2, "lr": 1e-4,
                                                                    "crops_per_volume": 1})
    assert r.status_code == 200, r.text
    stats = requests.get(f"{local_server.url}/info/", timeout=30).json()["train_stats"]["medkit_ct"]
    assert stats["status"] == "DONE" and stats["version"] == r.json()["version"]
    assert stats["studies_with_masks"] == 2 and stats["train_studies"] == 1 and stats["val_studies"] == 1
    assert stats["promoted"] is (stats["val_loss_after"] <= stats["val_loss_before"])
    assert stats["promoted"], stats  # the same scan held out: the loss must go down
    new = load_file(str(local_server.app / "model" / "medkit_ct" / "versions" / stats["version"] / "model.safetensors"))
    old = load_file(str(ct_model_dir / "model.safetensors"))
    assert any(not (old[k].float() == new[k].float()).all() for k in old if k.startswith("student."))
    r = post(local_server, f"/infer/medkit_ct?image={ct_id}&output=json")
    assert r.status_code == 200 and r.json()["model"] == stats["version"]


def test_import_totalsegmentator_masks_as_organ_labels(local_server, ct_model_dir, tmp_path, capsys):
    """`medkit import-masks`: a TotalSegmentator multi-label map or per-organ folder becomes a study's
    organ mask in MedKit's values; a mask for a radiograph is refused by the server, named."""
    import numpy as np
    import SimpleITK as sitk

    from medkit.cli import main
    from tests.monailabel.conftest import CT_MASK

    if ct_model_dir is None:
        pytest.skip("SKIPPED LOUDLY: no CT model, so no CT study in the test datastore; mask import untested")
    ct_id = CT_VOLUME.name[: -len(".nii.gz")]
    multi = tmp_path / f"{ct_id}.nii.gz"
    shutil.copy(CT_MASK, multi)
    expected = tmp_path / "expected.nii.gz"
    totalseg_to_medkit_mask(expected)

    def stored() -> np.ndarray:
        r = requests.get(f"{local_server.url}/datastore/label", params={"label": ct_id, "tag": "organs"}, timeout=60)
        assert r.status_code == 200
        (tmp_path / "stored.nii.gz").write_bytes(r.content)
        return sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "stored.nii.gz")))

    assert main(["import-masks", "--server", local_server.url, str(multi)]) == 0
    np.testing.assert_array_equal(stored(), sitk.GetArrayFromImage(sitk.ReadImage(str(expected))))

    folder = tmp_path / "per_organ" / ct_id  # TotalSegmentator's default output: one file per class
    folder.mkdir(parents=True)
    src = sitk.ReadImage(str(CT_MASK))
    for organ, value in (("liver", 5), ("spleen", 1)):
        sitk.WriteImage(sitk.Cast(src == value, sitk.sitkUInt8), str(folder / f"{organ}.nii.gz"))
    assert main(["import-masks", "--server", local_server.url, str(folder)]) == 0
    mask = stored()
    assert set(np.unique(mask)) == {0, 1, 2}  # MedKit: liver 1, spleen 2
    np.testing.assert_array_equal(mask == 1, sitk.GetArrayFromImage(src) == 5)

    capsys.readouterr()
    radiograph = tmp_path / f"{PNG_ID}.nii.gz"
    shutil.copy(CT_MASK, radiograph)
    assert main(["import-masks", "--server", local_server.url, str(radiograph)]) == 1
    assert "2D image" in capsys.readouterr().err
