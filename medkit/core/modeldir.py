"""Model directories, the one loader both modalities use.

A model directory holds ``config.json`` (the model's config: ``medkit.cxr.config.MedKitConfig`` or
``medkit.ct.config.CTConfig``) beside ``model.safetensors``, which keeps only the trained tensors,
each under the name of the part it belongs to (``student.<name>``, ``generator.<name>``); base
weights (the language model, ImageNet backbones) come from their packages. The shipped models are
``medkit/weights/cxr`` and ``medkit/weights/ct``.

    python -c "from medkit.core.modeldir import ModelDir; print(ModelDir.shipped('ct').parts())"
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from medkit.core.config import ConfigFile
from medkit.core.files import atomic_write

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """Save tensors so that a crash leaves the old file or the new one (:func:`medkit.core.files.atomic_write`)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def strip_prefix(state: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    """The tensors of ``state`` named ``<part>.<name>``, as ``<name>``."""
    prefix = part + "."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class ModelDir:
    """One model directory: its config and its trained tensors by part."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tensors: dict[str, torch.Tensor] | None = None

    @classmethod
    def shipped(cls, modality: str) -> "ModelDir":
        """The model shipped inside the package: ``modality`` "cxr" or "ct"."""
        return cls(Path(str(resources.files("medkit") / "weights" / modality)))

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_FILE

    def has_config(self) -> bool:
        return self.config_file.exists()

    def config(self, cls: type[ConfigFile], kind: str = "MedKit"):
        """The directory's ``config.json`` as ``cls``; ValueError naming the directory when there is none."""
        if not self.has_config():
            raise ValueError(f"{self.path}: not a {kind} model directory (no {CONFIG_FILE})")
        return cls.load(self.config_file)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every trained tensor, read once."""
        if self._tensors is None:
            if not self.weights_file.exists():
                raise ValueError(f"{self.path}: no trained model ({WEIGHTS_FILE} missing)")
            self._tensors = load_file(str(self.weights_file))
        return self._tensors

    def parts(self) -> list[str]:
        """The parts the directory holds tensors of ("student", "generator")."""
        return sorted({k.split(".", 1)[0] for k in self.tensors()})

    def part(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors of one part (``student``, ``generator``) under their own names."""
        return strip_prefix(self.tensors(), name)

    def save(self, parts: dict[str, dict[str, torch.Tensor]], cfg: ConfigFile) -> None:
        """Write the parts' tensors (each named ``<part>.<name>``) and the config, the tensors atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors({f"{p}.{k}": v for p, state in parts.items() for k, v in state.items()},
                                self.weights_file)
        cfg.save(self.config_file)
        self._tensors = None
