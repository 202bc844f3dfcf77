"""Crash-safe file writes and the file-name suffixes of the inputs, shared by the library, the MONAI Label
app and the Slicer module."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

#: 3D volume files (the CT path; a DICOM series comes as a folder).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: 2D raster images (the chest X-ray path; DICOM files are told by their preamble).
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_volume_path(path: str | Path) -> bool:
    """True for a folder (a DICOM series) or a file with a 3D-volume suffix."""
    path = Path(path)
    return path.is_dir() or path.name.lower().endswith(VOLUME_SUFFIXES)


def volume_stem(name: str) -> str:
    """A volume file name without its volume suffix ("ct.nii.gz" -> "ct"); other names unchanged."""
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def atomic_write(path: str | Path, data: bytes | str | Callable[[str], None], mode: int = 0o644) -> Path:
    """Write ``path`` so that readers (and a crash) see the old file or the new one, never a part.

    ``data`` is bytes, text (UTF-8) or a function writing a given temporary path. The temporary
    file lives in the same folder; it is fsynced, renamed over ``path``, and the folder is
    fsynced so the rename itself survives a power loss. Used for every file MedKit writes that
    a crash must not corrupt: model weights, checkpoints, SR files, and the MONAI Label app's
    labels, model versions and datastore index.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600; labels and reports are shared files
        if callable(data):
            os.close(fd)
            fd = -1
            data(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        else:
            with os.fdopen(fd, "wb") as f:
                fd = -1
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
