"""Model directories (medkit.core.modeldir): parts saved and read back by name, the config, the errors."""

from __future__ import annotations

import pytest
import torch

from medkit.core.modeldir import CONFIG_FILE, WEIGHTS_FILE, ModelDir, strip_prefix
from medkit.ct.config import CTConfig


def test_parts_round_trip(tmp_path):
    student, generator = {"w": torch.arange(3.0)}, {"proj.bias": torch.ones(2)}
    ModelDir(tmp_path / "m").save({"student": student, "generator": generator}, CTConfig())
    md = ModelDir(tmp_path / "m")
    assert (md.path / WEIGHTS_FILE).is_file() and (md.path / CONFIG_FILE).is_file()
    assert md.parts() == ["generator", "student"]
    assert torch.equal(md.part("student")["w"], student["w"]) and set(md.part("generator")) == {"proj.bias"}
    assert md.part("nothing") == {}
    assert md.config(CTConfig) == CTConfig()


def test_strip_prefix_keeps_only_the_part():
    state = {"student.a": 1, "student.b.c": 2, "studentx.d": 3, "generator.a": 4}
    assert strip_prefix(state, "student") == {"a": 1, "b.c": 2}


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}: not a MedKit CT model directory"):
        ModelDir(tmp_path).config(CTConfig, "MedKit CT")
    with pytest.raises(ValueError, match="no trained model"):
        ModelDir(tmp_path).tensors()


@pytest.mark.parametrize("modality", ["cxr", "ct"])
def test_shipped_models_hold_a_student(modality):
    md = ModelDir.shipped(modality)
    if not md.has_config():
        pytest.skip(f"SKIPPED LOUDLY: no shipped {modality} model in {md.path}")
    assert "student" in md.parts()
