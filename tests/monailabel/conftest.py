"""Fixtures for the MONAI Label app: real `monailabel start_server` processes on 127.0.0.1.

One server per session for the local study folder (a copy of the app's samples) and one for
the DICOMweb datastore (a real Orthanc started here); both serve the tiny trained model of
``tests/conftest.py`` so that inference and training take seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

APP = ROOT / "monailabel_app"
CT_SAMPLES = ROOT / "medkit" / "data" / "samples" / "ct"
CT_VOLUME = CT_SAMPLES / "totalsegmentator" / "example_ct_sm.nii.gz"
CT_SERIES = CT_SAMPLES / "dcmqi" / "ct-3slice"
CT_MASK = CT_SAMPLES / "totalsegmentator" / "example_seg.nii.gz"  # TotalSegmentator v2 values
SAMPLE_SUFFIXES = (".png", ".dcm", ".nii.gz")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_app(dest: Path) -> Path:
    """The app without its run-time folders, so that a test never writes into the repository."""
    return Path(shutil.copytree(APP, dest, ignore=shutil.ignore_patterns("samples", "model", "logs", "bin",
                                                                         "__pycache__")))


class Server:
    """A `monailabel start_server` subprocess in its own process group (its task subprocesses too)."""

    def __init__(self, app: Path, studies: str, conf: dict, workdir: Path, env: dict | None = None,
                 host: str | None = "127.0.0.1", log_name: str = "server.log"):
        """``host=None`` leaves ``--host`` out (MONAI Label's default, every interface)."""
        import requests

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / log_name
        cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", studies,
               "--port", str(self.port)] + (["--host", host] if host else [])
        for k, v in conf.items():
            cmd += ["--conf", k, str(v)]
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(workdir / "dwcache"),
                    **(env or {})}
        # cwd: monailabel reads a `.env` settings file from the working directory
        self.proc = subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=self.log.open("w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 240
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"monailabel exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"monailabel did not answer /info within 240 s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text()[-n:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server and its task subprocesses (its process group): a crash, no clean-up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def ct_model_dir() -> Path | None:
    """The CT model shipped in medkit/weights/ct; None (CT tests skip loudly) without the CT path
    or its weights: training a CT model inside the test run takes minutes on two CPU cores."""
    try:
        from medkit.ct.model import default_ct_model_dir
    except ModuleNotFoundError:
        return None
    return default_ct_model_dir() if (default_ct_model_dir() / "config.json").exists() else None


_SHARED: dict = {}


def shared_local_server(request, tmp_path_factory, tiny_model_dir, ct_model_dir) -> Server:
    """One server per pytest session over a copy of the app's sample studies (CXR + CT), shared
    by tests/monailabel and tests/reliability (each folder's ``local_server`` fixture returns it)."""
    if "local" not in _SHARED:
        work = tmp_path_factory.mktemp("ml_local")
        studies = work / "studies"
        studies.mkdir()
        for f in (APP / "samples").iterdir():
            if f.name.endswith(SAMPLE_SUFFIXES) and (ct_model_dir is not None or not f.name.endswith(".nii.gz")):
                shutil.copy(f, studies / f.name)
        server = Server(copy_app(work / "app"), str(studies), {"model_path": tiny_model_dir}, work)
        server.studies = studies
        server.app = work / "app"
        _SHARED["local"] = server
        request.session.config.add_cleanup(server.stop)
    return _SHARED["local"]


@pytest.fixture(scope="session")
def local_server(request, tmp_path_factory, tiny_model_dir, ct_model_dir):
    return shared_local_server(request, tmp_path_factory, tiny_model_dir, ct_model_dir)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A real Orthanc with its DICOMweb plugin on a free port (Debian: orthanc, orthanc-dicomweb)."""
    import requests

    binary = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)
    plugin = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
    if binary is None or not plugin.exists():
        pytest.skip("SKIPPED LOUDLY: Orthanc or its DICOMweb plugin is not installed "
                    "(apt-get install -y orthanc orthanc-dicomweb); the DICOMweb / DICOM SR path is untested")
    work = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {"Name": "medkit-test", "StorageDirectory": str(work / "db"), "IndexDirectory": str(work / "db"),
              "HttpPort": port, "DicomPort": free_port(), "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "Plugins": [str(plugin)],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (work / "orthanc.json").write_text(json.dumps(config))
    log = (work / "orthanc.log").open("w")
    proc = subprocess.Popen([binary, str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(60):
        try:
            if requests.get(f"{url}/system", timeout=2).ok:
                break
        except requests.RequestException:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError(f"Orthanc did not start: {(work / 'orthanc.log').read_text()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=20)
