"""MedKitSlicerLogic against real MRML (slicer-core) and a live MONAI Label server on 127.0.0.1.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/slicer -q -x
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import requests

from tests.conftest import RSNA_DCM
from tests.monailabel.conftest import CT_VOLUME
from tests.monailabel.test_app import wait_for_training


def datastore_ids(server) -> set:
    return set(requests.get(f"{server.url}/datastore/?output=all", timeout=30).json()["objects"])


def closed_port() -> int:
    with socket.socket() as s:  # bound, never listening, released: a URL with no server behind it
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connect_reads_info(logic, module):
    info = logic.connect()
    assert module.CXR_MODEL in info["models"] and logic.serverInfo is info
    assert "first" in info["strategies"] and module.CXR_MODEL in info["trainers"]


@pytest.mark.parametrize("url, needle", [
    ("http://127.0.0.1:{port}", "Is it running?"),                       # nothing listens
    ("{server}/not-monailabel", "is this the MedKit MONAI Label server?"),  # wrong URL, a web server answers
])
def test_unreachable_or_wrong_server_says_what_to_do(module, scene, slicer_server, url, needle):
    logic = module.MedKitSlicerLogic(url.format(port=closed_port(), server=slicer_server.url), scene=scene)
    with pytest.raises(module.MedKitServerError) as e:
        logic.connect()
    assert needle in str(e.value)


def test_bad_url_and_missing_model_are_readable(logic, module):
    with pytest.raises(ValueError, match="ftp://x"):
        logic.setServerUrl("ftp://x")
    with pytest.raises(module.MedKitServerError, match="does not serve 'medkit_mri'.*medkit_cxr"):
        logic.checkModel("medkit_mri")
    with pytest.raises(ValueError, match="path separators"):
        logic.fetchReport("../etc/passwd")


def test_model_follows_volume_dimensionality(logic, module):
    cxr = logic.loadImageFile(str(RSNA_DCM))
    assert cxr.GetImageData().GetDimensions()[2] == 1 and logic.modelForVolume(cxr) == module.CXR_MODEL
    ct = logic.loadImageFile(str(CT_VOLUME))
    assert ct.GetImageData().GetDimensions() == (122, 101, 30) and logic.modelForVolume(ct) == module.CT_MODEL


def test_cxr_generate_edit_submit_read_back(logic, module, slicer_server, tmp_path):
    volume = logic.loadImageFile(str(RSNA_DCM))  # not from the server: uploaded
    before = datastore_ids(slicer_server)
    out = logic.generateReport(volume)
    assert out.model == module.CXR_MODEL and out.imageId not in before
    assert out.imageId in datastore_ids(slicer_server)
    assert volume.GetAttribute(module.ATTR_IMAGE_ID) == out.imageId
    assert isinstance(out.result["report"], str) and len(out.result["findings"]) == 14
    assert out.segmentationNode is None  # the chest X-ray model makes no segmentation
    table = out.tableNode.GetTable()
    assert out.tableNode.GetNumberOfRows() == 14
    assert [table.GetColumnName(i) for i in range(4)] == list(module.TABLE_COLUMNS)
    probs = [table.GetValue(r, 2).ToDouble() for r in range(14)]
    assert probs == pytest.approx([f["probability"] for f in out.result["findings"]])

    # the volume is now the server's study: a second request sends its id, no new upload
    assert logic.prepareUpload(volume, out.model) == ("id", out.imageId)

    edited = "Edited in Slicer: no acute cardiopulmonary abnormality."
    logic.submitReport(out.imageId, edited, out.result)
    stored = logic.fetchReport(out.imageId)
    assert stored["report"] == edited
    assert [f["name"] for f in stored["findings"]] == [f["name"] for f in out.result["findings"]]
    assert stored["knowledge"] == out.result["knowledge"]
    with pytest.raises(ValueError, match="empty"):
        logic.submitReport(out.imageId, "   ", out.result)

    # Save: text and DICOM SR; the SR joins the source DICOM's study
    import highdicom
    import pydicom

    txt = logic.saveReportText(str(tmp_path / "r.txt"), edited, out.result)
    assert edited in open(txt).read() and "Cardiomegaly" in open(txt).read()
    sr_path = logic.saveReportSR(str(tmp_path / "r.dcm"), edited, out.result, volume)
    ds = pydicom.dcmread(sr_path)
    sr = highdicom.sr.ComprehensiveSR.from_dataset(ds)
    source = pydicom.dcmread(str(RSNA_DCM), stop_before_pixels=True)
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    texts = [i.TextValue for c in sr.ContentSequence if c.ValueType == "CONTAINER"
             for i in c.ContentSequence if i.ValueType == "TEXT"]
    assert edited in texts
    assert ds.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == source.StudyInstanceUID


def test_ct_generate_segmentation_on_volume_geometry(logic, module, slicer_server, tmp_path):
    if not slicer_server.has_ct:
        pytest.skip("SKIPPED LOUDLY: no CT model (medkit/weights/ct) or CT sample; the CT path is untested")
    import SimpleITK as sitk
    import slicer

    volume = logic.loadImageFile(str(CT_VOLUME))
    model = logic.modelForVolume(volume)
    imageId, result, label_path = logic.sendAndInfer(logic.prepareUpload(volume, model), model)
    assert model == module.CT_MODEL and result["modality"] == "CT" and label_path.endswith(".nii.gz")
    server_labels = sitk.GetArrayFromImage(sitk.ReadImage(label_path))  # (K, J, I) as the server wrote it
    seg = logic.loadSegmentation(volume, label_path, result["segmentation_labels"])
    present = sorted(int(v) for v in np.unique(server_labels) if v > 0)
    assert present, "the CT model segmented nothing in the sample"

    segmentation = seg.GetSegmentation()
    names = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegmentID(i)
             for i in range(segmentation.GetNumberOfSegments())}
    organs = {v: result["segmentation_labels"][str(v)] for v in present}
    assert set(names) == {module.prettyOrgan(o) for o in organs.values()}
    for value, organ in organs.items():
        color = segmentation.GetSegment(names[module.prettyOrgan(organ)]).GetColor()
        assert color == pytest.approx([c / 255 for c in module.ORGAN_COLORS[organ]], abs=1e-3)

    # geometry: the segments, exported on the volume's grid, are the server's label volume voxel by voxel
    labelmap = logic.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = [names[module.prettyOrgan(organs[v])] for v in present]
    import vtk

    id_list = vtk.vtkStringArray()
    for i in ids:
        id_list.InsertNextValue(i)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg, id_list, labelmap, volume)
    assert labelmap.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    m1, m2 = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    labelmap.GetIJKToRASMatrix(m1)
    volume.GetIJKToRASMatrix(m2)
    assert [m1.GetElement(r, c) for r in range(4) for c in range(4)] == \
        pytest.approx([m2.GetElement(r, c) for r in range(4) for c in range(4)])
    from vtk.util.numpy_support import vtk_to_numpy

    exported = vtk_to_numpy(labelmap.GetImageData().GetPointData().GetScalars())
    exported = exported.reshape(volume.GetImageData().GetDimensions()[::-1])  # (K, J, I)
    expected = np.zeros_like(server_labels)
    for n, v in enumerate(present, 1):  # export numbers segments 1..n in the order given
        expected[server_labels == v] = n
    np.testing.assert_array_equal(exported, expected)
    assert segmentation.ContainsRepresentation("Closed surface")  # shown in 3D views
    assert seg.GetDisplayNode().GetVisibility3D() and seg.GetDisplayNode().GetVisibility2D()

    # findings and organ measurements in the table; edit, submit, read back
    table = logic.findingsTableNode(result)
    rows = module.findingRows(result)
    assert table.GetNumberOfRows() == len(result["findings"]) + len(result["measurements"]) == len(rows)
    measured = [r for r in rows if r[1] == "measured"]
    assert measured and all("mL" in r[3] for r in measured)
    edited = result["report"] + " Reviewed in Slicer."
    logic.submitReport(imageId, edited, result)
    stored = logic.fetchReport(imageId)
    assert stored["report"] == edited and len(stored["findings"]) == len(result["findings"])


def test_ct_generate_report_in_one_call(logic, module, slicer_server):
    if not slicer_server.has_ct:
        pytest.skip("SKIPPED LOUDLY: no CT model (medkit/weights/ct) or CT sample; the CT path is untested")
    volume = logic.loadImageFile(str(CT_VOLUME))
    out = logic.generateReport(volume)
    assert out.segmentationNode is not None and out.segmentationNode.GetSegmentation().GetNumberOfSegments() > 0
    assert out.tableNode.GetNumberOfRows() == len(module.findingRows(out.result))
    assert logic.scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0  # temporaries removed


def test_next_study_is_loaded_and_sent_by_id(logic, module, slicer_server, tmp_path):
    before = datastore_ids(slicer_server)
    image_id, path = logic.nextStudyFile("first", str(tmp_path))
    assert image_id in before
    volume = logic.loadImageFile(path, name=image_id, imageId=image_id)
    assert logic.prepareUpload(volume, logic.modelForVolume(volume)) == ("id", image_id)
    out = logic.generateReport(volume)
    assert out.imageId == image_id and datastore_ids(slicer_server) == before  # nothing uploaded
    with pytest.raises(module.MedKitServerError, match="404|not found|strategy"):
        logic.nextStudy("no_such_strategy")


def test_train_starts_shows_progress_and_cancels(logic, module, slicer_server):
    """Start, poll, cancel; a run to DONE (epochs, promotion) is tests/monailabel's training test."""
    with pytest.raises(module.MedKitServerError, match="need at least 50"):
        logic.startTraining(module.CXR_MODEL, {"min_studies": 50})
    report = "The heart is normal in size. The lungs are clear."
    for name in ("nih_00000001_000", "nih_00027426_000", "rsna_pneumonia_sample"):
        logic.submitReport(name, report)
    logic.startTraining(module.CXR_MODEL, {"max_epochs": 20, "min_studies": 2})  # stopped long before the end
    running = module.trainingProgress(logic.trainingStatus())
    assert not running.finished and running.message.startswith(("Training running", "Training submitted"))
    logic.stopTraining()
    task = wait_for_training(slicer_server)
    stopped = module.trainingProgress(logic.trainingStatus())
    assert task["status"] == "STOPPED" and stopped.finished and stopped.message.startswith("Training stopped")


def test_training_progress_reads_the_trainers_epoch_lines(module):
    # the line format of monailabel_app/lib/trainers/medkit_cxr.py's per-epoch log
    status = {"status": "RUNNING", "details": ["medkit_cxr train: 3 studies for training, 1 held out, device cpu",
                                               "medkit_cxr train: epoch 1/4 validation loss 2.3456",
                                               "medkit_cxr train: epoch 2/4 validation loss 2.1000"]}
    progress = module.trainingProgress(status)
    assert (progress.epoch, progress.total, progress.finished) == (2, 4, False)
    assert "epoch 2/4" in progress.message and "2.1000" in progress.message
    assert module.trainingProgress({"status": "DONE", "details": []}).finished


def test_background_task_keeps_result_or_error(logic, module):
    task = module.BackgroundTask(logic.connect)
    assert task.wait(60) and task.error is None and module.CXR_MODEL in task.value["models"]
    bad = module.MedKitSlicerLogic(f"http://127.0.0.1:{closed_port()}", scene=logic.scene)
    task = module.BackgroundTask(bad.connect)
    assert task.wait(60) and task.value is None
    assert "Is it running?" in module.readableError(task.error)


def test_infer_response_parsing_of_multipart(module):
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\nContent-Type: application/json\r\n\r\n"
            + json.dumps({"report": "r"}) + f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"x.nii.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + b"\x1f\x8b\x00\r\n" \
        + f"\r\n--{boundary}--\r\n".encode()
    result, path = module.parseInferResponse(f"multipart/form-data; boundary={boundary}", body)
    assert result == {"report": "r"} and path.endswith(".nii.gz")
    assert open(path, "rb").read() == b"\x1f\x8b\x00\r\n"


def test_module_self_test_runs_on_mrml(module, monkeypatch):
    """The self-test Slicer's "Reload and Test" runs, here on slicer-core's MRML (no application)."""
    import slicer

    monkeypatch.setattr(slicer, "mrmlScene", slicer.vtkMRMLScene(), raising=False)
    result = module.MedKitSlicerTest("runTest").run()
    assert result.wasSuccessful(), result.errors + result.failures


def exported_mask(logic, volume, seg) -> np.ndarray:
    from vtk.util.numpy_support import vtk_to_numpy

    labelmap = logic.organLabelmap(volume, seg)
    dims = labelmap.GetImageData().GetDimensions()
    out = vtk_to_numpy(labelmap.GetImageData().GetPointData().GetScalars()).reshape(dims[::-1]).copy()
    logic.scene.RemoveNode(labelmap)
    return out


def test_ct_submit_segmentation_train_reinfer(logic, module, slicer_server, tmp_path):
    """Edit the organ segmentation -> Submit segmentation -> Train -> the next inference is the new model."""
    if not slicer_server.has_ct:
        pytest.skip("SKIPPED LOUDLY: no CT model (medkit/weights/ct) or CT sample; segmentation teaching untested")
    import SimpleITK as sitk
    from vtk.util.numpy_support import vtk_to_numpy

    copy = tmp_path / "ct_copy.nii.gz"  # a second study (one voxel differs: another file, another id)
    img = sitk.ReadImage(str(CT_VOLUME))
    img[0, 0, 0] = img[0, 0, 0] + 1
    sitk.WriteImage(img, str(copy), useCompression=True)
    studies = []
    for path in (CT_VOLUME, copy):
        volume = logic.loadImageFile(str(path))
        studies.append((volume, logic.generateReport(volume)))
    volume, out = studies[0]
    seg = out.segmentationNode
    values = {organ: int(v) for v, organ in out.result["segmentation_labels"].items()}
    liver = seg.GetSegmentation().GetSegmentIdBySegmentName(module.prettyOrgan("liver"))
    assert liver, "the CT model found no liver in its own training sample"
    before = exported_mask(logic, volume, seg)  # (K, J, I) on the volume's grid, MedKit's organ values
    top = int(np.nonzero((before == values["liver"]).any(axis=(1, 2)))[0].max())
    # the radiologist erases the liver's top slice in the Segment Editor: the segment's own labelmap
    segment = seg.GetSegmentation().GetSegment(liver)
    layer = segment.GetRepresentation("Binary labelmap")
    extent = layer.GetExtent()
    voxels = vtk_to_numpy(layer.GetPointData().GetScalars()).reshape(
        extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    plane = voxels[top - extent[4]]
    plane[plane == segment.GetLabelValue()] = 0
    layer.Modified()
    expected = before.copy()
    expected[top][expected[top] == values["liver"]] = 0
    assert (expected != before).any()
    np.testing.assert_array_equal(exported_mask(logic, volume, seg), expected)

    with pytest.raises(ValueError, match="Generate Report first"):
        logic.submitSegmentation(logic.loadImageFile(str(copy), name="not sent"), seg)
    for vol, o in studies:
        logic.submitReport(o.imageId, o.result["report"], o.result)
        assert logic.submitSegmentation(vol, o.segmentationNode)["label"] == o.imageId

    # what the server stored: the edited segments on the volume's grid, with MedKit's organ values
    r = requests.get(f"{slicer_server.url}/datastore/label", params={"label": out.imageId, "tag": "organs"},
                     timeout=60)
    assert r.status_code == 200
    (tmp_path / "stored.nrrd").write_bytes(r.content)
    stored = sitk.ReadImage(str(tmp_path / "stored.nrrd"))
    assert stored.GetSize() == volume.GetImageData().GetDimensions()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(stored), expected)

    logic.startTraining(module.CT_MODEL, {"max_epochs": 2, "min_studies": 2, "crops_per_volume": 1,
                                          "promote_tolerance": 1000.0})  # the flow, not the learning, is tested
    task = wait_for_training(slicer_server, timeout=900)
    assert task["status"] == "DONE", task
    stats = requests.get(f"{slicer_server.url}/info/", timeout=30).json()["train_stats"]["medkit_ct"]
    assert stats["studies_with_masks"] == 2 and stats["promoted"], stats
    again = logic.generateReport(volume)
    assert again.result["model"] == stats["version"] != out.result["model"]


def test_ct_rows_mark_organs_that_failed_the_plausibility_checks(module):
    result = {"findings": [{"name": "Hepatomegaly", "status": "not assessable", "value": None}],
              "measurements": {
                  "liver": {"volume_ml": 408.8, "mean_hu": 524.6, "reliable": False,
                            "implausible": ["mean attenuation 524.6 HU is outside -100..300 HU"]},
                  "spleen": {"volume_ml": 223.1, "mean_hu": 45.0, "reliable": True, "implausible": []},
                  "lungs": {"volume_ml": 116.0, "mean_hu": -750.9, "emphysema_index_pct": 0.1, "reliable": True}}}
    rows = {r[0]: r for r in module.findingRows(result)}
    assert rows["Liver"][1] == "not measured reliably" and "524.6 HU" in rows["Liver"][3]
    assert "mL" not in rows["Liver"][3]  # its numbers are not stated as a measurement
    assert rows["Spleen"][1] == "measured" and rows["Spleen"][3].startswith("223.1 mL")
    assert "emphysema index 0.1 %" in rows["Lungs"][3]
    assert {"lungs", "bone", "body"} <= set(module.ORGAN_COLORS) and module.HIDDEN_IN_3D == {"body"}


def test_borderline_findings_go_back_as_uncertain_and_undetermined(module):
    """The findings table's borderline decision (medkit.cxr.consistency): the report label the server
    accepts calls it uncertain, the module's SR codes it Undetermined."""
    found = {"name": "Pleural Effusion", "status": "borderline", "probability": 0.3}
    assert module.reportFinding(found) == {"name": "Pleural Effusion", "status": "uncertain", "probability": 0.3}
    assert module.reportFinding({**found, "status": "positive"})["status"] == "positive"
    sr = module.medkitSR()
    assert sr.status_code("borderline") == sr.UNDETERMINED != sr.status_code("negative")
