"""Loading a datastore image for the chest X-ray model, as a MONAI dictionary transform.

A datastore image is a PNG / JPEG / DICOM file (local folder) or a folder holding one DICOM
series (DICOMweb datastore: one file per view for CR / DX). ``LoadCXRd`` turns it into the
views of one study, as (H, W) float32 arrays in 0..1 via :func:`medkit.cxr.images.load_cxr`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from monai.transforms import MapTransform

from medkit.core.dicom import read_dicom_header
from medkit.core.files import VOLUME_SUFFIXES
from medkit.cxr.images import ImageInputError, load_cxr, order_views

logger = logging.getLogger(__name__)

RADIOGRAPH_MODALITIES = {"CR", "DX", "DR", "RG", "OT", ""}


def dicom_header(path: Path):
    """The header of a DICOM file, None for any other file; a DICOM bomb raises ImageInputError."""
    try:
        return read_dicom_header(path, ImageInputError)
    except ImageInputError:
        raise
    except Exception:  # not DICOM: the caller treats the file as a raster image
        return None


def study_files(uri: str | Path) -> list[Path]:
    """The image files of a datastore image: the file itself, or the DICOM files of a series folder."""
    path = Path(uri)
    if not str(uri) or not path.exists():
        raise ImageInputError(f"{path.name or uri}: image file not found")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and dicom_header(p) is not None)
        if not files:
            raise ImageInputError(f"{path.name}: series folder holds no DICOM file")
        return files
    return [path]


def radiograph_views(uri: str | Path, max_views: int) -> tuple[list[Path], list[str | None]]:
    """Files and View Positions of a radiograph study; a CT / MR series is refused with its modality."""
    files = study_files(uri)
    views: list[str | None] = []
    for f in files:
        ds = dicom_header(f) if f.suffix.lower() not in (".png", ".jpg", ".jpeg") else None
        modality = str(getattr(ds, "Modality", "") or "").upper() if ds is not None else ""
        if modality not in RADIOGRAPH_MODALITIES:
            raise ImageInputError(f"{f.name}: DICOM modality {modality}; the chest X-ray model takes CR/DX radiographs")
        views.append(getattr(ds, "ViewPosition", None) if ds is not None else None)
    order = order_views(files, views, max_views)
    return [files[i] for i in order], [views[i] for i in order]




def is_ct_study(uri: str | Path) -> bool:
    """A volume file, or a series folder whose DICOM files are CT (a CR / DX folder is a radiograph)."""
    path = Path(uri)
    if path.is_file():
        return path.name.lower().endswith(VOLUME_SUFFIXES)
    if not path.is_dir():
        return False
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        ds = dicom_header(f)
        if ds is not None:
            return str(getattr(ds, "Modality", "")).upper() == "CT"
    return False


class LoadCXRd(MapTransform):
    """``data[key]`` (a datastore uri) -> list of (H, W) arrays in 0..1; views in ``data['views']``."""

    def __init__(self, keys="image", max_views: int = 2):
        super().__init__(keys)
        self.max_views = max_views

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            files, views = radiograph_views(d[key], self.max_views)
            d[key] = [load_cxr(f) for f in files]
            d["views"] = views
        return d
