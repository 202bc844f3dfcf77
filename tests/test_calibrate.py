"""Per-observation finding thresholds: the fit, the config they live in, and `medkit calibrate`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medkit.calibrate import MIN_POSITIVES, fit_thresholds
from medkit.config import GeneratorConfig, MedKitConfig
from medkit.labeler import OBSERVATIONS
from medkit.model import findings_from_probs
from tests.conftest import write_tiny_iu_folder
from tests.test_cli import medkit


def test_fit_finds_the_separating_threshold_and_keeps_the_default_otherwise():
    rng = np.random.default_rng(0)
    n = 400
    labels = np.zeros((n, 3))
    probs = rng.uniform(0.0, 0.15, (n, 3))
    labels[:40, 0] = 1
    probs[:40, 0] = rng.uniform(0.25, 0.4, 40)  # rare finding, always below 0.5, cleanly separated
    labels[: MIN_POSITIVES - 1, 1] = 1  # too few positives to fit
    probs[: MIN_POSITIVES - 1, 1] = 0.3
    labels[rng.permutation(n)[:20], 2] = 1  # positives the probabilities say nothing about
    thresholds, rows = fit_thresholds(probs, labels, default=0.5)
    assert 0.15 < thresholds[0] <= 0.25 and rows[0]["f1"] == 1.0 and rows[0]["f1_at_default"] == 0.0
    assert thresholds[1] == 0.5 and rows[1]["positives"] == MIN_POSITIVES - 1
    assert thresholds[2] == 0.5  # best F1 < MIN_F1: flagging it would only add noise to the prompt
    with pytest.raises(ValueError, match="same"):
        fit_thresholds(probs, labels[:, :2], default=0.5)


def test_findings_use_each_observations_threshold():
    cfg = GeneratorConfig(finding_thresholds=tuple([0.5] * 13 + [0.1]))
    probs = [0.3] * len(OBSERVATIONS)
    findings = findings_from_probs(probs, cfg.thresholds(len(probs)))
    assert [f["status"] for f in findings] == ["negative"] * 13 + ["positive"]
    assert findings[-1]["threshold"] == 0.1
    assert GeneratorConfig().thresholds(3) == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="2 values for 14"):
        GeneratorConfig(finding_thresholds=(0.2, 0.3)).thresholds(14)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        GeneratorConfig(finding_thresholds=(0.0,) * 14)


def test_calibrate_rewrites_only_the_config(tmp_path, tiny_model_dir):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    weights = (model / "model.safetensors").read_bytes()
    cfg = json.loads((model / "config.json").read_text())
    cfg["generator"]["finding_thresholds"] = []
    (model / "config.json").write_text(json.dumps(cfg))
    r = medkit("calibrate", "--data", str(write_tiny_iu_folder(tmp_path / "data")), "--model", str(model))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| Cardiomegaly |" in r.stdout
    fitted = MedKitConfig.load(model / "config.json").generator.finding_thresholds
    assert len(fitted) == len(OBSERVATIONS)  # 4 training studies: every observation keeps the default
    assert (model / "model.safetensors").read_bytes() == weights


def test_calibrate_needs_a_trained_model(tmp_path):
    r = medkit("calibrate", "--data", str(write_tiny_iu_folder(tmp_path / "data")), "--model", str(tmp_path))
    assert r.returncode == 2 and "model.safetensors missing" in r.stderr


def test_training_fits_the_thresholds(tiny_model_dir):
    assert len(MedKitConfig.load(tiny_model_dir / "config.json").generator.finding_thresholds) == len(OBSERVATIONS)
