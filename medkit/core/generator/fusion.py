"""Knowledge injection: the visual tokens attend to the knowledge-prompt embedding through a gated
cross-attention (MedKit, Su et al. 2026); the gate starts at 0, so training begins from the
plain visual prompt."""

from __future__ import annotations

import torch
import torch.nn as nn


class KnowledgeFusion(nn.Module):
    """Visual tokens attend to the knowledge-prompt embedding; tanh gate initialised at 0."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, visual: torch.Tensor, knowledge: torch.Tensor, knowledge_pad: torch.Tensor) -> torch.Tensor:
        """visual (B, N, H); knowledge (B, K, H); knowledge_pad (B, K) True where padding."""
        # A study without any knowledge token would make attention return NaN: keep one slot open.
        knowledge_pad = knowledge_pad.clone()
        knowledge_pad[:, 0] = False
        out, _ = self.attn(self.norm_q(visual), self.norm_kv(knowledge), self.norm_kv(knowledge),
                           key_padding_mask=knowledge_pad, need_weights=False)
        return visual + torch.tanh(self.gate) * out
