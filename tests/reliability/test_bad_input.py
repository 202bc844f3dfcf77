"""Bad input through the server and the CLI: a 4xx (or exit 2) naming the problem, nothing saved
changes, and the server keeps answering /info and valid infer requests with the same report."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.reliability.cases import CLI_CASES, PNG_ID, SERVER_CASES


def extra_payloads(folder: Path) -> dict[str, Path]:
    out = {"json_no_report": b'{"text": "no report field"}', "broken_json": b'{"report": "unterminated',
           "huge_report": json.dumps({"report": "x" * 300_000}).encode(), "report": b'{"report": "Fine."}',
           "exe": b"MZ\x90\x00 not a medical image"}
    names = {"exe": "tool.exe", "json_no_report": "r.json", "broken_json": "r.json", "huge_report": "r.json",
             "report": "r.json"}
    paths = {}
    for key, data in out.items():
        paths[key] = folder / f"{key}_{names[key]}"
        paths[key].write_bytes(data)
    return paths


def labels_snapshot(server) -> dict[str, str]:
    """Hash of every file under the study folder's labels/ (reports, history, masks)."""
    root = server.studies / "labels"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def declared_upload(server, path: str, size: int) -> tuple[int, dict]:
    """Headers announcing ``size`` bytes and the first few of them; the server must answer without the rest."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xx\r\n"
                   f"Content-Length: {size}\r\n\r\n--xx\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}")


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


@pytest.fixture(scope="module")
def baseline(local_server, bad_inputs, tmp_path_factory):
    extra = extra_payloads(tmp_path_factory.mktemp("payloads"))
    r = requests.post(f"{local_server.url}/infer/medkit_cxr?image={PNG_ID}&output=json", timeout=300)
    assert r.status_code == 200, r.text
    return {"files": {**bad_inputs, **extra}, "report": r.json()["report"], "findings": r.json()["findings"]}


@pytest.mark.parametrize("case", SERVER_CASES, ids=[c[0] for c in SERVER_CASES])
def test_server_bad_input(local_server, baseline, case):
    name, (method, path, kind, payload), status, needles = case
    before = labels_snapshot(local_server)
    url = f"{local_server.url}{path}"
    if kind == "declared":
        code, body = declared_upload(local_server, path, payload)
    else:
        kw = {}
        if kind in ("upload", "label"):
            f = baseline["files"][payload]
            kw["files"] = {"file" if kind == "upload" else "label": (f.name, f.read_bytes())}
        elif kind == "json":
            kw["json"] = payload
        elif kind == "form":
            kw["data"] = payload
        r = requests.request(method, url, timeout=300, **kw)
        code, body = r.status_code, (r.json() if r.headers.get("content-type", "").startswith("application/json")
                                     else {"detail": r.text})
    assert code == status, (code, body)
    detail = str(body.get("detail", ""))
    assert all(n in detail for n in needles), detail
    assert "Traceback" not in detail and "/tmp/" not in detail  # no server paths echoed back
    # the server is intact: /info, the same report for a valid study, saved reports unchanged
    assert requests.get(f"{local_server.url}/info/", timeout=60).status_code == 200
    r = requests.post(f"{local_server.url}/infer/medkit_cxr?image={PNG_ID}&output=json", timeout=300)
    assert r.status_code == 200 and r.json()["report"] == baseline["report"]
    assert r.json()["findings"] == baseline["findings"]
    assert labels_snapshot(local_server) == before


@pytest.fixture(scope="module")
def cli_results(bad_inputs, tiny_model_dir, tmp_path_factory):
    """Every CLI case in one interpreter (tests/reliability/cli_driver.py): one start-up, not 18."""
    work = tmp_path_factory.mktemp("cli")
    cases = {name: ["generate", *[str(bad_inputs[a]) for a in args], "--json", "--model", str(tiny_model_dir)]
             for name, args, _ in CLI_CASES}
    (work / "cases.json").write_text(json.dumps(cases))
    subprocess.run([sys.executable, "-m", "tests.reliability.cli_driver", str(work / "cases.json"),
                    str(work / "out.json")], cwd=ROOT, check=True, timeout=600,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads((work / "out.json").read_text())


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(cli_results, bad_inputs, case):
    name, args, needles = case
    res = cli_results[name]
    assert res["rc"] == 2, res
    assert "Traceback" not in res["stderr"] and res["stdout"] == ""
    last = res["stderr"].strip().splitlines()[-1]
    assert last.startswith("medkit generate: error: ")
    assert all(n in last for n in needles), last
    assert any(str(bad_inputs[a]) in last for a in args), last  # names the file
