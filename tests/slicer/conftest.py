"""Fixtures for the Slicer module's logic: real MRML (slicer-core from PyPI) and a real MONAI Label server.

The server is the MONAI Label app's own test server (:class:`tests.monailabel.conftest.Server`,
tiny trained model) over the app's sample radiographs only: the CT volume and a second chest
X-ray are loaded into the scene from elsewhere, so the module has to upload them.
"""

from __future__ import annotations

import shutil
import sys

import pytest

from tests.conftest import ROOT
from tests.monailabel.conftest import APP, CT_VOLUME, Server, copy_app, ct_model_dir  # noqa: F401  (fixture)

MODULE_DIR = ROOT / "MedKitSlicer"


def import_slicer():
    """``slicer`` from slicer-core, or a loud skip saying why it cannot be imported."""
    try:
        import slicer  # noqa: F401
    except ImportError as e:
        pytest.skip(f"SKIPPED LOUDLY: slicer-core cannot be imported ({e}); "
                    f"pip install -e .[test] installs it (slicer-core==5.13.31053.0)")
    return slicer


@pytest.fixture(scope="session")
def module():
    """The MedKitSlicer.py module, imported as Slicer does (its folder on the module path)."""
    import_slicer()
    sys.path.insert(0, str(MODULE_DIR))
    import MedKitSlicer

    return MedKitSlicer


@pytest.fixture()
def scene(module):
    import slicer

    scene = slicer.vtkMRMLScene()
    yield scene
    scene.Clear(True)


@pytest.fixture(scope="session")
def slicer_server(tmp_path_factory, tiny_model_dir, ct_model_dir):  # noqa: F811
    """One server per session over the app's sample radiographs (CT served when the CT model exists)."""
    work = tmp_path_factory.mktemp("slicer_ml")
    studies = work / "studies"
    studies.mkdir()
    for f in (APP / "samples").iterdir():
        if f.suffix in (".png", ".dcm"):
            shutil.copy(f, studies / f.name)
    conf = {"model_path": tiny_model_dir}
    if ct_model_dir is not None:
        conf["ct_model_path"] = ct_model_dir
    server = Server(copy_app(work / "app"), str(studies), conf, work)
    server.studies = studies
    server.has_ct = ct_model_dir is not None and CT_VOLUME.exists()
    yield server
    server.stop()


@pytest.fixture()
def logic(module, scene, slicer_server):
    return module.MedKitSlicerLogic(slicer_server.url, scene=scene, timeout=300)
