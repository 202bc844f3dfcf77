"""Per-observation finding thresholds: the fit, the config they live in, and `medkit calibrate`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medkit.cxr.calibrate import (GRID, MIN_POSITIVES, MIN_STATED, MIN_STATEMENT_POSITIVES, fit_statement_thresholds,
                                  fit_thresholds)
from medkit.core.config import GeneratorConfig
from medkit.cxr.config import MedKitConfig
from medkit.cxr.labeler import OBSERVATIONS
from medkit.cxr.model import findings_from_probs
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


def test_statement_threshold_is_the_lowest_reaching_the_target_precision():
    rng = np.random.default_rng(1)
    n = 1000
    probs = rng.uniform(0.0, 0.2, (n, 3))
    labels = np.zeros((n, 3), dtype=bool)
    # observation 0: 40 studies at 0.3-0.5 of which 10 positive, 20 studies at 0.6-0.8 all positive
    probs[:40, 0] = rng.uniform(0.3, 0.5, 40)
    labels[:10, 0] = True
    probs[40:60, 0] = rng.uniform(0.6, 0.8, 20)
    labels[40:60, 0] = True
    # observation 1: never precise enough; observation 2: precise, but on too few studies
    probs[:50, 1] = rng.uniform(0.3, 0.9, 50)
    labels[::4, 1] = True
    probs[: MIN_STATED - 1, 2] = 0.9
    labels[: MIN_STATED - 1, 2] = True
    thresholds, rows = fit_statement_thresholds(probs, labels, [0.3, 0.3, 0.3], target=0.9)
    t = thresholds[0]
    assert 0.4 < t <= 0.6 and rows[0]["precision"] >= 0.9 and rows[0]["stated"] >= 20
    lower = [g for g in GRID if 0.3 <= g < t]  # the lowest: every lower candidate misses the target
    assert lower and all(labels[probs[:, 0] >= g, 0].mean() < 0.9 for g in lower)
    assert rows[0]["precision_at_flag"] == pytest.approx(30 / 60)
    assert thresholds[1] == 1.0 and rows[1]["precision"] is None and rows[1]["stated"] == 0
    assert thresholds[2] == 1.0
    # never below the flag threshold, even where a lower one would reach the target
    assert fit_statement_thresholds(probs, labels, [0.7, 0.3, 0.3], target=0.9)[0][0] == 0.7
    with pytest.raises(ValueError, match="agree"):
        fit_statement_thresholds(probs, labels, [0.3, 0.3], target=0.9)


def test_a_rare_observation_is_never_stated_however_precise_on_train():
    """Precision on a handful of training positives (which the head trained on) is not trusted."""
    n, few = 200, MIN_STATEMENT_POSITIVES - 1
    probs = np.full((n, 1), 0.1)
    labels = np.zeros((n, 1), dtype=bool)
    probs[:few, 0], labels[:few, 0] = 0.9, True  # every call right, on more than MIN_STATED studies
    assert few >= MIN_STATED
    thresholds, rows = fit_statement_thresholds(probs, labels, [0.3], target=0.9)
    assert thresholds == [1.0] and rows[0]["stated"] == 0 and rows[0]["strict_positives"] == few
    assert fit_statement_thresholds(probs, labels, [0.3], target=0.9, min_positives=few)[0] == [0.3]


def test_findings_are_positive_borderline_or_negative():
    flag = [0.2] * len(OBSERVATIONS)
    stating = [0.6] * (len(OBSERVATIONS) - 1) + [1.0]  # the last one is never stated
    probs = [0.1, 0.3, 0.7] + [0.5] * (len(OBSERVATIONS) - 4) + [0.99]
    findings = findings_from_probs(probs, flag, stating)
    assert [f["status"] for f in findings[:3]] == ["negative", "borderline", "positive"]
    assert findings[-1]["status"] == "borderline" and findings[-1]["threshold"] == 1.0
    assert findings[2]["threshold"] == 0.6 and findings[2]["borderline_threshold"] == 0.2
    # without statement thresholds every flagged finding is positive (older configs)
    assert [f["status"] for f in findings_from_probs(probs, flag)[:3]] == ["negative", "positive", "positive"]
    cfg = GeneratorConfig(finding_thresholds=(0.3, 0.5), statement_thresholds=(0.4, 0.2))
    assert cfg.positive_thresholds(2) == [0.4, 0.5]
    assert GeneratorConfig(finding_thresholds=(0.3, 0.5)).positive_thresholds(2) == [0.3, 0.5]
    with pytest.raises(ValueError, match="statement_thresholds has 2 values for 14"):
        GeneratorConfig(statement_thresholds=(0.4, 0.2)).positive_thresholds(14)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        GeneratorConfig(statement_thresholds=(0.0,))
    with pytest.raises(ValueError, match="borderline must be"):
        GeneratorConfig(borderline="maybe")


def test_calibrate_rewrites_only_the_config(tmp_path, tiny_model_dir):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    weights = (model / "model.safetensors").read_bytes()
    cfg = json.loads((model / "config.json").read_text())
    cfg["generator"]["finding_thresholds"] = []
    cfg["generator"]["statement_precision"] = 0.65
    del cfg["train"]["pos_weight"]  # a model trained before the setting existed
    (model / "config.json").write_text(json.dumps(cfg))
    r = medkit("calibrate", "--data", str(write_tiny_iu_folder(tmp_path / "data")), "--model", str(model))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| Cardiomegaly |" in r.stdout
    fitted = MedKitConfig.load(model / "config.json").generator.finding_thresholds
    assert len(fitted) == len(OBSERVATIONS)  # 4 training studies: every observation keeps the default
    stating = MedKitConfig.load(model / "config.json").generator.statement_thresholds
    assert stating == (1.0,) * len(OBSERVATIONS)  # fewer than MIN_STATED studies: never stated
    assert (model / "model.safetensors").read_bytes() == weights
    after = json.loads((model / "config.json").read_text())
    assert "pos_weight" not in after["train"] and after["generator"]["statement_precision"] == 0.65
    for section in cfg:  # nothing but the fitted fields changed
        changed = {k for k in set(cfg[section]) | set(after[section]) if cfg[section].get(k) != after[section].get(k)} \
            if isinstance(cfg[section], dict) else ({section} if cfg[section] != after[section] else set())
        assert changed <= ({"finding_thresholds", "statement_thresholds", "template"} if section == "generator" else set())


def test_calibrate_needs_a_trained_model(tmp_path):
    r = medkit("calibrate", "--data", str(write_tiny_iu_folder(tmp_path / "data")), "--model", str(tmp_path))
    assert r.returncode == 2 and "model.safetensors missing" in r.stderr


def test_training_fits_the_thresholds(tiny_model_dir):
    assert len(MedKitConfig.load(tiny_model_dir / "config.json").generator.finding_thresholds) == len(OBSERVATIONS)


def test_calibration_split_depends_only_on_the_study_id():
    from medkit.cxr.data import calibration_split

    ids = [f"CXR{i}_IM-{i % 97}" for i in range(2000)]
    held = calibration_split(ids, 0.15, seed=42)
    assert 0.13 < held.mean() < 0.17
    again = calibration_split(ids[::-1], 0.15, seed=42)[::-1]  # order and neighbours do not matter
    assert (again == held).all()
    assert (calibration_split(ids[:10], 0.15, seed=42) == held[:10]).all()
    assert (calibration_split(ids, 0.15, seed=7) != held).any()  # the seed draws another split
    assert (calibration_split(ids, 0.3, seed=42) >= held).all()  # a larger share holds out a superset
    assert not calibration_split(ids, 0.0, seed=42).any()
    with pytest.raises(ValueError, match="calibration_share"):
        MedKitConfig().override(["train.calibration_share=0.5"])


def test_calibrate_fits_on_the_held_out_studies_only(tmp_path, tiny_model_dir):
    from medkit.core.data import load_studies
    from medkit.cxr.calibrate import calibrate
    from medkit.cxr.data import calibration_split
    from medkit.cxr.labeler import label_report, to_binary

    data = write_tiny_iu_folder(tmp_path / "data")
    studies = load_studies(data, "train")
    share, seed = 0.45, next(s for s in range(100) if 0 < calibration_split([t.id for t in studies], 0.45, s).sum() < len(studies))
    held = calibration_split([t.id for t in studies], share, seed)
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    cfg = json.loads((model / "config.json").read_text())
    cfg["train"].update(calibration_share=share, seed=seed)
    (model / "config.json").write_text(json.dumps(cfg))
    rows = calibrate(model, data)
    positives = sum(np.array(to_binary(label_report(t.report), 1.0)) for t, h in zip(studies, held) if h)
    assert [r["positives"] for r in rows] == [int(p) for p in positives]
    everything = sum(np.array(to_binary(label_report(t.report), 1.0)) for t in studies)
    assert [r["positives"] for r in rows] != [int(p) for p in everything]  # not the whole training split
