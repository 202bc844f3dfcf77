"""The uncertainty strategy ranks studies with the model the server serves, shipped default included.

A server started as ``run.sh`` starts it (no ``--conf model_path``) serves medkit's shipped model;
the entropy scorer must use that model's student and findings head, not an untrained one. The
ranking is checked against the entropies of the probabilities that ``/infer`` returns for the
same studies.
"""

from __future__ import annotations

import shutil

import pytest
import requests

from tests.monailabel.conftest import APP, Server, copy_app

SAMPLES = ("nih_00000001_000.png", "nih_00027426_000.png", "rsna_pneumonia_sample.dcm")


def entropy(probs: list[float]) -> float:
    import math

    probs = [min(max(p, 1e-6), 1 - 1e-6) for p in probs]
    return sum(-(p * math.log2(p) + (1 - p) * math.log2(1 - p)) for p in probs) / len(probs)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory, request):
    from medkit.cxr.model import default_model_dir

    if not (default_model_dir() / "config.json").exists():
        pytest.skip("SKIPPED LOUDLY: no shipped chest X-ray model in this install; default-model ranking untested")
    work = tmp_path_factory.mktemp("al_default")
    studies = work / "studies"
    studies.mkdir()
    for name in SAMPLES:
        shutil.copy(APP / "samples" / name, studies / name)
    server = Server(copy_app(work / "app"), str(studies), {"models": "medkit_cxr"}, work)  # no model_path
    request.addfinalizer(server.stop)
    return server


def test_uncertainty_ranking_uses_the_served_default_model(default_server):
    served = {}
    for name in SAMPLES:
        image = name.rsplit(".", 1)[0]
        r = requests.post(f"{default_server.url}/infer/medkit_cxr?image={image}&output=json&params=%7B%7D",
                          timeout=900)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "base"
        served[image] = entropy([f["probability"] for f in r.json()["findings"]])
    pick = requests.post(f"{default_server.url}/activelearning/medkit_cxr_uncertainty", timeout=900)
    assert pick.status_code == 200, pick.text
    best = max(served, key=served.get)
    assert pick.json()["id"] == best, (pick.json(), served)
    assert pick.json()["path"] == next(n for n in SAMPLES if n.startswith(best))  # relative: no server path
    # probabilities in /infer are rounded to 4 digits; the scorer's entropy is computed unrounded
    assert pick.json()["score"] == pytest.approx(served[best], abs=1e-3)
    scores = requests.get(f"{default_server.url}/datastore/image/info?image={best}", timeout=60).json()
    assert scores["medkit_cxr_entropy"]["value"] == pytest.approx(served[best], abs=1e-3)
