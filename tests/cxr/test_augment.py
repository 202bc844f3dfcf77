"""Radiograph augmentation: never a mirror, shape and range kept, padding views untouched, seeded."""

from __future__ import annotations

import pytest
import torch

from medkit.cxr.augment import affine_matrices, augment, augment_study_batch
from medkit.cxr.config import AugmentConfig


def _left_heavy(n: int, size: int = 64) -> torch.Tensor:
    """Bright block on the image's left half only: (n, 1, size, size) in -1..1."""
    x = -torch.ones(n, 1, size, size)
    x[..., size // 4 : 3 * size // 4, size // 8 : size // 2 - 4] = 1.0
    return x


def test_augmentation_never_flips_left_right():
    cfg = AugmentConfig(rotate_deg=45, scale=1.3, shift=0.1)  # the widest ranges allowed-ish
    g = torch.Generator().manual_seed(0)
    theta = affine_matrices(2000, cfg, g)
    assert (torch.linalg.det(theta[:, :, :2]) > 0).all()  # a mirror has a negative determinant
    out = augment(_left_heavy(64), AugmentConfig(), torch.Generator().manual_seed(1))
    w = out.shape[-1]
    left, right = (out[..., : w // 2] + 1).sum((1, 2, 3)), (out[..., w // 2 :] + 1).sum((1, 2, 3))
    assert (left > 3 * right).all()  # the bright side stays on the left in every draw


@pytest.mark.parametrize("shape", [(5, 1, 64, 64), (1, 1, 32, 96)])
def test_augmentation_keeps_shape_range_and_dtype(shape):
    x = torch.rand(shape) * 2 - 1
    for dtype in (torch.float32, torch.float16):
        out = augment(x.to(dtype), AugmentConfig(), torch.Generator().manual_seed(2))
        assert out.shape == x.shape and out.dtype == dtype
        assert out.min() >= -1 and out.max() <= 1
        assert not torch.equal(out.float(), x.to(dtype).float())


def test_augmentation_is_seeded_and_can_be_disabled():
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    a = augment(x, AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment(x, AugmentConfig(), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(augment(x, AugmentConfig(enabled=False)), x)
    # all ranges at zero: only resampling, which the identity grid makes exact up to float error
    still = AugmentConfig(rotate_deg=0, scale=1, shift=0, brightness=0, contrast=0, gamma=1)
    assert torch.allclose(augment(x, still), x, atol=1e-5)


def test_study_batch_leaves_padding_views_alone():
    x = torch.rand(3, 2, 1, 32, 32) * 2 - 1
    mask = torch.tensor([[True, True], [True, False], [True, False]])
    x[~mask] = 0.0
    out = augment_study_batch(x, mask, AugmentConfig(), torch.Generator().manual_seed(4))
    assert torch.equal(out[~mask], x[~mask])
    assert not torch.equal(out[mask], x[mask])
    with pytest.raises(ValueError, match="expected"):
        augment_study_batch(x[:, 0], mask, AugmentConfig())


@pytest.mark.parametrize("bad", ["augment.rotate_deg=90", "augment.scale=0.9", "augment.gamma=0.5",
                                 "augment.contrast=1.5"])
def test_augment_config_rejects_bad_ranges(bad):
    from medkit.cxr.config import MedKitConfig

    with pytest.raises(ValueError):
        MedKitConfig().override([bad])
