"""The app over DICOMweb: a real Orthanc (+ DICOMweb plugin) as the study store.

A CR is uploaded to Orthanc, the server generates its report, the report comes back as a
DICOM SR in Orthanc referencing the CR's series; a submitted report becomes a final SR.
"""

from __future__ import annotations

import json

import pydicom
import pytest
import requests

from medkit.core.sr import read_report_sr
from tests.conftest import RSNA_DCM
from tests.monailabel.conftest import CT_SERIES, Server, copy_app


def qido_series(orthanc: str, **filters) -> list[pydicom.Dataset]:
    r = requests.get(f"{orthanc}/dicom-web/series", params={**filters, "includefield": "0008103E"}, timeout=30)
    r.raise_for_status()
    return [pydicom.Dataset.from_json(x) for x in (r.json() if r.text.strip() else [])]


def wado_instance(orthanc: str, study: str, series: str, sop: str) -> pydicom.Dataset:
    """The SR as Orthanc stores it, through Orthanc's REST API (DICOM file download)."""
    found = requests.post(f"{orthanc}/tools/lookup", data=sop, timeout=30).json()
    oid = next(x["ID"] for x in found if x["Type"] == "Instance")
    from io import BytesIO

    return pydicom.dcmread(BytesIO(requests.get(f"{orthanc}/instances/{oid}/file", timeout=30).content))


@pytest.fixture(scope="module")
def dicomweb_server(orthanc, tmp_path_factory, tiny_model_dir, ct_model_dir):
    for f in [RSNA_DCM, *(sorted(CT_SERIES.glob("*.dcm")) if CT_SERIES.exists() else [])]:
        assert requests.post(f"{orthanc}/instances", data=f.read_bytes(), timeout=30).ok
    work = tmp_path_factory.mktemp("ml_dicomweb")
    conf = {"model_path": tiny_model_dir}
    server = Server(copy_app(work / "app"), f"{orthanc}/dicom-web", conf, work)
    yield server
    server.stop()


def test_cr_report_written_back_as_sr(dicomweb_server, orthanc):
    cr = pydicom.dcmread(RSNA_DCM, stop_before_pixels=True)
    series = str(cr.SeriesInstanceUID)
    listed = requests.get(f"{dicomweb_server.url}/datastore/?output=stats", timeout=60).json()
    assert listed["total"] >= 1
    r = requests.post(f"{dicomweb_server.url}/infer/medkit_cxr?image={series}&output=json", timeout=300)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["report"].strip() and result["sr"]["StudyInstanceUID"] == str(cr.StudyInstanceUID)

    srs = qido_series(orthanc, Modality="SR")
    assert result["sr"]["SeriesInstanceUID"] in {str(s.SeriesInstanceUID) for s in srs}
    sr = wado_instance(orthanc, result["sr"]["StudyInstanceUID"], result["sr"]["SeriesInstanceUID"],
                       result["sr"]["SOPInstanceUID"])
    back = read_report_sr(sr)
    assert back["report"] == result["report"].strip() and back["final"] is False
    assert series in back["sources"]
    assert {f["name"] for f in back["findings"]} == {f["name"] for f in result["findings"]}
    assert sr.PatientID == cr.PatientID and sr.StudyInstanceUID == cr.StudyInstanceUID


def test_submitted_report_is_final_label_and_sr(dicomweb_server, orthanc):
    series = str(pydicom.dcmread(RSNA_DCM, stop_before_pixels=True).SeriesInstanceUID)
    report = {"report": "Heart size normal. No focal consolidation."}
    r = requests.put(f"{dicomweb_server.url}/datastore/label?image={series}",
                     files={"label": ("report.json", json.dumps(report).encode())}, timeout=120)
    assert r.status_code == 200, r.text
    info = requests.get(f"{dicomweb_server.url}/datastore/label/info?label={series}&tag=final", timeout=30).json()
    sr = wado_instance(orthanc, info["sr"]["StudyInstanceUID"], info["sr"]["SeriesInstanceUID"],
                       info["sr"]["SOPInstanceUID"])
    back = read_report_sr(sr)
    assert back["report"] == report["report"] and back["final"] is True and series in back["sources"]
    stats = requests.get(f"{dicomweb_server.url}/datastore/?output=stats", timeout=60).json()
    assert stats["completed"] == 1
    # the labelled series is no longer proposed
    pick = requests.post(f"{dicomweb_server.url}/activelearning/first", timeout=120).json()
    assert pick.get("id") != series


def test_ct_series_refused_by_cxr_model_and_reported_by_ct_model(dicomweb_server, ct_model_dir):
    if not CT_SERIES.exists():
        pytest.skip("SKIPPED LOUDLY: no CT DICOM sample in medkit/data/samples/ct")
    ct_series = str(pydicom.dcmread(sorted(CT_SERIES.glob("*.dcm"))[0], stop_before_pixels=True).SeriesInstanceUID)
    r = requests.post(f"{dicomweb_server.url}/infer/medkit_cxr?image={ct_series}", timeout=300)
    assert r.status_code == 400 and "modality CT" in r.json()["detail"]
    if ct_model_dir is None:
        pytest.skip("SKIPPED LOUDLY: no CT model (medkit.ct or medkit/weights/ct missing); no CT report to test")
    r = requests.post(f"{dicomweb_server.url}/infer/medkit_ct?image={ct_series}&output=json", timeout=600)
    assert r.status_code == 200, r.text
    assert r.json()["modality"] == "CT" and r.json()["sr"]["SeriesInstanceUID"]
