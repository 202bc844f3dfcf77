"""Greedy decoding state on the PyTorch language model (``medkit.core.generator.onnx_lm.OnnxDecoding``
is the same on ONNX Runtime)."""

from __future__ import annotations

import torch


class TorchDecoding:
    """One report's key/value cache on the PyTorch LM. ``first``: the logits after the prompt;
    ``feed(tokens)``: the logits after each token, appended to the cache; ``keep(n)``: forget the
    cache after the first ``n`` generated tokens (``onnx_lm.OnnxDecoding`` does the same)."""

    def __init__(self, lm, inputs: torch.Tensor):
        self.lm, self.prompt_len = lm, inputs.shape[1]
        out = lm(inputs_embeds=inputs, use_cache=True, logits_to_keep=1)
        self.cache, self.first = out.cache, out.logits[0, -1]

    def feed(self, tokens: list[int]) -> torch.Tensor:
        out = self.lm(input_ids=torch.tensor([tokens]), cache=self.cache, use_cache=True)
        self.cache = out.cache
        return out.logits[0]

    def keep(self, n_new: int) -> None:
        drop = self.cache.get_seq_length() - (self.prompt_len + n_new)
        if drop > 0:
            self.cache.crop(-drop)  # transformers 5: a negative count removes that many positions
