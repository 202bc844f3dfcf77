"""Load (CI size): concurrent clients against the shared server; the full 8 x 50 is benchmarks/load.py."""

from __future__ import annotations

from tests.conftest import load_benchmark
from tests.reliability.cases import DCM_ID, LOAD_CI, PNG2_ID, PNG_ID


def load_module():
    return load_benchmark("load")


def test_concurrent_infer_no_errors_identical_results_flat_memory(local_server):
    load = load_module()
    res = load.run_load(local_server.url, "medkit_cxr", [PNG_ID, PNG2_ID, DCM_ID], LOAD_CI["clients"],
                        LOAD_CI["requests_per_client"], pid=local_server.proc.pid, log=local_server.log)
    print("\n" + load.table(res))
    assert res["requests"] == LOAD_CI["clients"] * LOAD_CI["requests_per_client"]
    assert res["errors"] == 0, res["error_samples"]
    assert res["mismatches_vs_sequential"] == 0, res["mismatch_samples"]
    assert res["model_loads_during_load"] == 0  # loaded once, before the load
    assert res["rss_after_mib"] - res["rss_before_mib"] < 300, res
    assert res["peak_rss_mib"] >= res["rss_after_mib"] > 0


def test_no_patient_name_or_upload_name_in_logs(local_server, bad_inputs):
    """A DICOM with a patient name, uploaded as DOE_JANE_chest.dcm to infer and to the datastore."""
    import requests

    phi = bad_inputs["phi_dicom"]
    r = requests.post(f"{local_server.url}/infer/medkit_cxr?output=json",
                      files={"file": (phi.name, phi.read_bytes())}, timeout=300)
    assert r.status_code == 200, r.text
    r = requests.put(f"{local_server.url}/datastore/image?image=phi_upload",
                     files={"file": (phi.name, phi.read_bytes())}, timeout=120)
    assert r.status_code == 200, r.text
    r = requests.post(f"{local_server.url}/infer/medkit_cxr?image=phi_upload&output=json", timeout=300)
    assert r.status_code == 200, r.text
    logs = local_server.tail(10**8) + "".join(p.read_text() for p in (local_server.app / "logs").glob("*.log"))
    assert "phi_upload" in logs  # image ids are logged ...
    for secret in ("Doe^Jane", "DOE_JANE", "MRN-4417"):  # ... patient data and file names are not
        assert secret not in logs, secret
