"""DICOM SR export (medkit.sr) and `medkit generate --sr FILE`."""

from __future__ import annotations

import json

import pydicom
import pytest

from medkit.labeler import OBSERVATIONS
from medkit.sr import SRInputError, build_report_sr, read_report_sr, write_report_sr
from tests.conftest import NIH_PNG, RSNA_DCM, nema_cr_path
from tests.test_cli import medkit

RESULT = {"report": "The heart is normal in size. No pleural effusion.",
          "findings": [{"name": n, "probability": round(i / 20, 2), "status": "positive" if i == 2 else "negative"}
                       for i, n in enumerate(OBSERVATIONS)],
          "knowledge": ["<Cardiomegaly, image representation, enlarged cardiac silhouette>"]}


@pytest.mark.parametrize("final", [False, True], ids=["draft", "final"])
def test_sr_round_trip_references_source(tmp_path, final):
    src = pydicom.dcmread(RSNA_DCM, stop_before_pixels=True)
    out = write_report_sr(RESULT, [RSNA_DCM], tmp_path / "sr.dcm", final=final)
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
    assert ds.CompletionFlag == ("COMPLETE" if final else "PARTIAL") and ds.VerificationFlag == "UNVERIFIED"
    back = read_report_sr(out)
    assert back["report"] == RESULT["report"] and back["final"] is final
    assert back["sources"] == [src.SeriesInstanceUID]
    assert back["findings"] == RESULT["findings"] and back["knowledge"] == RESULT["knowledge"]
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99MEDKIT"


def test_sr_from_second_source_without_type2_attributes(tmp_path):
    ds = pydicom.dcmread(nema_cr_path(), stop_before_pixels=True)
    for kw in ("AccessionNumber", "ReferringPhysicianName", "StudyID"):
        if kw in ds:
            delattr(ds, kw)
    sr = build_report_sr({"report": "Normal chest."}, [ds])
    assert sr.StudyInstanceUID == ds.StudyInstanceUID and read_report_sr(sr)["findings"] == []


@pytest.mark.parametrize("result,sources,needle", [
    ({"report": "  "}, [RSNA_DCM], "no text"),
    ({"report": "ok"}, [], "at least one DICOM source"),
    ({"report": "ok"}, [NIH_PNG], "not a readable DICOM"),
    ({"report": "ok", "findings": [{"status": "positive"}]}, [RSNA_DCM], "no 'name'"),
], ids=["empty-report", "no-source", "png-source", "unnamed-finding"])
def test_sr_bad_input(result, sources, needle):
    with pytest.raises(SRInputError, match=needle):
        build_report_sr(result, sources)


def test_cli_generate_sr(tmp_path, tiny_model_dir):
    out = tmp_path / "report_sr.dcm"
    r = medkit("generate", str(RSNA_DCM), str(NIH_PNG), "--model", str(tiny_model_dir), "--json", "--sr", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    printed = json.loads(r.stdout)
    back = read_report_sr(out)
    assert back["report"] == printed["report"].strip()
    assert back["sources"] == [pydicom.dcmread(RSNA_DCM, stop_before_pixels=True).SeriesInstanceUID]  # DICOM only
    assert [f["status"] for f in back["findings"]] == [f["status"] for f in printed["findings"]]


def test_cli_generate_sr_needs_dicom_input(tmp_path):
    r = medkit("generate", str(NIH_PNG), "--sr", str(tmp_path / "x.dcm"), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "no DICOM input" in lines[0]
    assert not (tmp_path / "x.dcm").exists()
