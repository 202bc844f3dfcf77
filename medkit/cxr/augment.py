"""Training augmentation for chest radiographs, batched on tensors (one call per training step).

Radiographs differ from ImageNet photos: anatomy is not left-right symmetric (the heart and the
aortic knob sit on the patient's left, a "right" finding must stay right), so there is NO flip;
positioning varies by a few degrees, a few per cent of magnification and a small shift; and
exposure / processing varies between machines (brightness, contrast, gamma). Each image of a
batch draws its own parameters from the ranges of :class:`medkit.cxr.config.AugmentConfig`:

- intensity on the 0..1 image: ``x ** gamma`` (log-uniform gamma), then contrast about the
  image mean and a brightness offset, clipped to 0..1;
- one affine warp (rotation, isotropic scale, shift) by ``grid_sample`` with zero (black)
  padding. Every matrix has a positive determinant, so no warp can mirror the image.

Inputs and outputs are model inputs: (N, 1, H, W) normalised to -1..1 as by
:func:`medkit.cxr.images.to_model_input`. Views absent from a study (all-zero padding) are left as
they are by :func:`augment_study_batch`.

    python -c "import torch; from medkit.cxr.augment import augment; from medkit.cxr.config import AugmentConfig; \
print(augment(torch.zeros(2, 1, 64, 64), AugmentConfig()).shape)"
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medkit.cxr.config import AugmentConfig


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def affine_matrices(n: int, cfg: AugmentConfig, g: torch.Generator | None = None) -> torch.Tensor:
    """(n, 2, 3) sampling matrices for ``F.affine_grid`` (output -> input coordinates)."""
    angle = _uniform(n, -cfg.rotate_deg, cfg.rotate_deg, g) * math.pi / 180
    scale = torch.exp(_uniform(n, -math.log(cfg.scale), math.log(cfg.scale), g))  # zoom in / out alike
    tx, ty = _uniform(n, -cfg.shift, cfg.shift, g) * 2, _uniform(n, -cfg.shift, cfg.shift, g) * 2  # grid is -1..1
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (n, 2, 3)
    return theta  # det = 1 / scale**2 > 0: a rotation and a zoom, never a mirror


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator | None = None) -> torch.Tensor:
    """(N, 1, H, W) in -1..1 -> the same shape and range, each image with its own draw."""
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n == 0 or not cfg.enabled:
        return x
    dtype = x.dtype
    img = (x.float() * 0.5 + 0.5).clamp(0, 1)  # (N, 1, H, W) 0..1
    shape = (n, 1, 1, 1)
    gamma = torch.exp(_uniform(n, -math.log(cfg.gamma), math.log(cfg.gamma), g)).view(shape)
    contrast = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g).view(shape)
    bright = _uniform(n, -cfg.brightness, cfg.brightness, g).view(shape)
    img = img.clamp_min(1e-6) ** gamma
    mean = img.mean(dim=(1, 2, 3), keepdim=True)
    img = ((img - mean) * contrast + mean + bright).clamp(0, 1)
    grid = F.affine_grid(affine_matrices(n, cfg, g).to(img), list(img.shape), align_corners=False)
    img = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return ((img - 0.5) / 0.5).to(dtype)


def augment_study_batch(images: torch.Tensor, view_mask: torch.Tensor, cfg: AugmentConfig,
                        g: torch.Generator | None = None) -> torch.Tensor:
    """(B, V, 1, H, W) studies and (B, V) view mask: augment the views present, keep the padding."""
    if images.ndim != 5 or view_mask.shape != images.shape[:2]:
        raise ValueError(f"expected (B, V, C, H, W) images and a (B, V) mask, got {tuple(images.shape)} and "
                         f"{tuple(view_mask.shape)}")
    out = images.clone()
    present = view_mask.bool()
    if present.any():
        out[present] = augment(images[present], cfg, g)
    return out
