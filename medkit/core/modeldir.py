"""Model directories: ``config.json`` beside ``model.safetensors`` (only the trained tensors, each
under the prefix of the part it belongs to: ``student.``, ``generator.``), written atomically."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from medkit.core.files import atomic_write


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """Save tensors so that a crash leaves the old file or the new one (:func:`medkit.core.files.atomic_write`)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
