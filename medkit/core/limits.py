"""What an input image may claim before MedKit decodes it: pixels, voxels, resampled grid, bytes.

A 96-byte NRRD header can claim 100000^3 voxels, a 0.4 MB deflated DICOM 20000x20000 pixels, a
64^3 volume at 100 mm spacing a 39-gigavoxel grid at the model's 3 mm. Readers check the sizes a
header declares against these limits first, and refuse with :class:`InputLimitError` (a
``ValueError`` naming the limit and the option that raises it) before allocating anything.

The limits are process-wide: the MONAI Label app sets them from its ``--conf`` options at
start-up (:func:`configure`), the CLI keeps the defaults. Defaults admit every clinical chest
radiograph (the largest detectors are about 4300 x 4300 pixels) and CT up to 512 x 512 x 1500
voxels; the model-grid limit allows a 1.5 m x 0.6 m x 0.6 m box at 3 mm.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


class InputLimitError(ValueError):
    """An input larger than a configured limit; the message names the limit and how to raise it."""


@dataclass(frozen=True)
class InputLimits:
    """Upper bounds checked from headers, before any pixel is decoded."""

    max_image_pixels: int = 64_000_000  # 2D: rows x columns x frames (8000 x 8000)
    max_volume_voxels: int = 400_000_000  # 3D: voxels of the input volume (512 x 512 x 1500 = 393M)
    max_grid_voxels: int = 20_000_000  # 3D: voxels of the model grid (a 1.5 x 0.6 x 0.6 m box at 3 mm)
    max_decompressed_mb: int = 1024  # inflated size of a deflate-compressed DICOM file

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"input limit {f.name} must be a positive integer, got {value!r}")

    def check(self, name: str, value: int, what: str) -> None:
        """Raise :class:`InputLimitError` when ``value`` (``what``, e.g. "the image claims 900,000,000
        pixels") exceeds the limit ``name``."""
        limit = getattr(self, name)
        if value > limit:
            raise InputLimitError(f"{what}, more than the limit {name} = {limit:,} "
                                  f"(MONAI Label: --conf {name} N)")


_current = InputLimits()


def current() -> InputLimits:
    return _current


def configure(limits: InputLimits) -> None:
    """Set the process-wide limits (the MONAI Label app does, from its ``--conf`` options)."""
    global _current
    _current = limits
