"""Multi-level feature distillation from the frozen teacher to the student (MedKit, Su et al. 2026).

Loss = kl_weight * KL(teacher labels || student labels; temperature T) * T^2
     + feature_weight * sum over depths of MSE(proj(student feature), teacher feature)
     + label_weight * BCE(student logits, labeler labels; positives weighted by class balance)

The 14 observations are independent binary labels, so the KL term is the mean over
observations of the Bernoulli KL between sigmoid(t / T) and sigmoid(s / T) (Hinton et al.,
2015, with sigmoid in place of softmax). Features are compared after a per-position channel
normalisation so that depths with different scales weigh alike; a 1x1 convolution projects
each student depth to the teacher's channels, and bilinear resizing aligns grids if needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from medkit.core.config import DistillConfig


def bernoulli_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over (B, L) of KL(Bern(sigmoid(t/T)) || Bern(sigmoid(s/T))), scaled by T^2."""
    t = teacher_logits / temperature
    s = student_logits / temperature
    p = torch.sigmoid(t)
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl.mean() * temperature**2


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x.transpose(1, -1), x.shape[1:2]).transpose(1, -1)


class FeatureProjectors(nn.Module):
    """1x1 convolutions from each student depth to the matching teacher depth."""

    def __init__(self, student_channels: tuple[int, ...], teacher_channels: tuple[int, ...]):
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"depth count differs: student {student_channels} vs teacher {teacher_channels}")
        self.proj = nn.ModuleList(nn.Conv2d(s, t, 1) for s, t in zip(student_channels, teacher_channels))

    def forward(self, student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
        loss = student_feats[0].new_zeros(())
        for proj, s, t in zip(self.proj, student_feats, teacher_feats):
            s = proj(s)
            if s.shape[-2:] != t.shape[-2:]:
                s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
            loss = loss + F.mse_loss(_norm(s), _norm(t.to(s.dtype)))
        return loss


@dataclass
class DistillLosses:
    total: torch.Tensor
    kl: torch.Tensor
    feature: torch.Tensor
    label: torch.Tensor


def distillation_loss(
    cfg: DistillConfig,
    projectors: FeatureProjectors,
    student_feats: list[torch.Tensor],
    student_logits: torch.Tensor,
    teacher_feats: list[torch.Tensor],
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
) -> DistillLosses:
    """``pos_weight`` (C,): weight of the positive labels in the BCE term (class balance)."""
    kl = bernoulli_kl(teacher_logits.float(), student_logits, cfg.temperature)
    feat = projectors(student_feats, teacher_feats)
    lab = F.binary_cross_entropy_with_logits(student_logits, labels, pos_weight=pos_weight)
    total = cfg.kl_weight * kl + cfg.feature_weight * feat + cfg.label_weight * lab
    return DistillLosses(total, kl.detach(), feat.detach(), lab.detach())
