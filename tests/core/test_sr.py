"""DICOM SR export (medkit.core.sr: the server's, the CLI's and the Slicer module's writer) and
`medkit generate --sr FILE`."""

from __future__ import annotations

import io
import json

import pydicom
import pytest

from medkit.cxr.labeler import OBSERVATIONS
from medkit.core.sr import CODE_STATUS, SRInputError, build_report_sr, read_report_sr, status_code, write_report_sr
from tests.conftest import NIH_PNG, RSNA_DCM, nema_cr_path

RESULT = {"report": "The heart is normal in size. No pleural effusion.",
          "findings": [{"name": n, "probability": round(i / 20, 2),
                        "status": "positive" if i == 2 else "borderline" if i == 3 else "negative"}
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
    assert back["findings"] == [{**f, "status": CODE_STATUS[status_code(f["status"])[0]]} for f in RESULT["findings"]]
    assert back["knowledge"] == RESULT["knowledge"]
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99MEDKIT"
    import highdicom  # the SR is one highdicom (a DICOM SR toolkit) reads

    assert highdicom.sr.ComprehensiveSR.from_dataset(ds).StudyInstanceUID == src.StudyInstanceUID


@pytest.mark.parametrize("status,code", [
    ("positive", ("52101004", "Present")),
    ("negative", ("2667000", "Absent")),
    ("borderline", ("373068000", "Undetermined")),  # chest X-ray: flagged, below the statement threshold
    ("not assessable", ("373068000", "Undetermined")),  # CT: the organ was not measured reliably
    ("uncertain", ("373068000", "Undetermined")),  # a reviewer's corrected report label
], ids=["present", "absent", "borderline", "not-assessable", "uncertain"])
def test_sr_codes_each_status_with_its_measurement(tmp_path, status, code):
    """Present only for a positive finding, Absent only for a negative one, Undetermined for the rest;
    the probability and the measured value are numeric content items, read back with pydicom."""
    finding = {"name": "Hepatomegaly", "status": status, "probability": 0.7, "value": 2100.5, "unit": "mL"}
    out = write_report_sr({"report": "Liver 2100.5 mL.", "findings": [finding]}, [RSNA_DCM], tmp_path / "sr.dcm")
    ds = pydicom.dcmread(out)
    container = next(c for c in ds.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "121070")
    item = next(i for i in container.ContentSequence if i.ValueType == "CODE")
    assert item.ConceptNameCodeSequence[0].CodeMeaning == "Hepatomegaly"
    value = item.ConceptCodeSequence[0]
    assert (value.CodeValue, value.CodeMeaning) == code and value.CodingSchemeDesignator == "SCT"
    nums = {n.ConceptNameCodeSequence[0].CodeValue: n.MeasuredValueSequence[0] for n in item.ContentSequence}
    assert all(n.ValueType == "NUM" and n.RelationshipType == "HAS PROPERTIES" for n in item.ContentSequence)
    assert float(nums["PROB"].NumericValue) == 0.7 and nums["PROB"].MeasurementUnitsCodeSequence[0].CodeValue == "1"
    assert float(nums["MEASURED"].NumericValue) == 2100.5
    assert nums["MEASURED"].MeasurementUnitsCodeSequence[0].CodeValue == "mL"
    assert read_report_sr(out)["findings"][0]["status"] == CODE_STATUS[code[0]]


def test_sr_without_source_starts_a_new_study():
    """The Slicer module saves reports of volumes not read from DICOM: a new study, no evidence."""
    ds = build_report_sr({"report": "Normal chest."}, [], new_study=True, final=True)
    assert ds.StudyInstanceUID and ds.PatientID == "" and "CurrentRequestedProcedureEvidenceSequence" not in ds
    assert ds.CompletionFlag == "COMPLETE"
    written = io.BytesIO()
    pydicom.dcmwrite(written, ds)  # as dicomweb-client writes it for STOW-RS: still a Part 10 file
    assert written.getvalue()[128:132] == b"DICM"


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


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, tiny_model_dir):
    """Both `medkit generate --sr` command lines in one interpreter (tests/reliability/cli_driver.py):
    on a loaded CPU each Python + torch start-up costs tens of seconds."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    work = tmp_path_factory.mktemp("cli_sr")
    cases = {"sr": ["generate", str(RSNA_DCM), str(NIH_PNG), "--model", str(tiny_model_dir), "--json",
                    "--sr", str(work / "report_sr.dcm")],
             "no_dicom": ["generate", str(NIH_PNG), "--sr", str(work / "x.dcm")]}
    (work / "cases.json").write_text(json.dumps(cases))
    subprocess.run([sys.executable, "-m", "tests.reliability.cli_driver", str(work / "cases.json"),
                    str(work / "out.json")], cwd=ROOT, check=True, timeout=900)
    return work, json.loads((work / "out.json").read_text())


def test_cli_generate_sr(cli_runs):
    work, runs = cli_runs
    r = runs["sr"]
    assert r["rc"] == 0, r["stderr"][-2000:]
    printed = json.loads(r["stdout"])
    back = read_report_sr(work / "report_sr.dcm")
    assert back["report"] == printed["report"].strip()
    assert back["sources"] == [pydicom.dcmread(RSNA_DCM, stop_before_pixels=True).SeriesInstanceUID]  # DICOM only
    assert [f["status"] for f in back["findings"]] == [CODE_STATUS[status_code(f["status"])[0]]
                                                        for f in printed["findings"]]


def test_cli_generate_sr_needs_dicom_input(cli_runs):
    work, runs = cli_runs
    r = runs["no_dicom"]
    assert r["rc"] == 2 and "Traceback" not in r["stderr"]
    lines = [x for x in r["stderr"].splitlines() if x.strip()]
    assert len(lines) == 1 and "no DICOM input" in lines[0]
    assert not (work / "x.dcm").exists()
