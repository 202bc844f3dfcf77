"""Bad inputs for the reliability suite, written into a folder from the committed samples."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tests.conftest import NIH_PNG, RSNA_DCM
from tests.monailabel.conftest import CT_SERIES, CT_VOLUME

CT_DICOM_SERIES = CT_VOLUME.parent / "example_ct_dicom"


def _volume(dest: Path, arr: np.ndarray, spacing=(3.0, 3.0, 3.0)) -> Path:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(dest), useCompression=True)
    return dest


def _ct_array() -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(CT_VOLUME))).astype(np.float32)


def _empty_nifti(dest: Path) -> Path:
    """A NIfTI-1 file whose header declares 64 x 64 x 0 voxels (no image data)."""
    import gzip
    import struct

    tmp = dest.with_name("tmp_" + dest.name)
    _volume(tmp, np.full((3, 64, 64), -1000.0))
    raw = bytearray(gzip.decompress(tmp.read_bytes()))
    tmp.unlink()
    raw[46:48] = struct.pack("<h", 0)  # dim[3] (little-endian header, as ITK writes it)
    dest.write_bytes(gzip.compress(bytes(raw[:352])))
    return dest


def write_bad_inputs(folder: Path) -> dict[str, Path]:
    """name -> file (or folder) of every bad input."""
    import pydicom
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}
    png = NIH_PNG.read_bytes()
    f["truncated_png"] = folder / "truncated.png"
    f["truncated_png"].write_bytes(png[: len(png) // 3])
    jpg = folder / "full.jpg"
    Image.open(NIH_PNG).convert("L").save(jpg, quality=90)
    f["truncated_jpg"] = folder / "truncated.jpg"
    f["truncated_jpg"].write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 3])
    f["text_as_png"] = folder / "notes.png"
    f["text_as_png"].write_text("Patient notes, not an image.\n")
    f["zero_byte_png"] = folder / "empty.png"
    f["zero_byte_png"].write_bytes(b"")
    f["one_pixel_png"] = folder / "one_pixel.png"
    Image.new("L", (1, 1), 128).save(f["one_pixel_png"])
    f["ct_volume"] = folder / "ct.nii.gz"
    shutil.copy(CT_VOLUME, f["ct_volume"])
    f["png"] = folder / "view.png"
    shutil.copy(NIH_PNG, f["png"])
    f["empty_volume"] = _empty_nifti(folder / "empty_volume.nii.gz")
    f["zero_byte_volume"] = folder / "zero.nii.gz"
    f["zero_byte_volume"].write_bytes(b"")
    f["constant_volume"] = _volume(folder / "constant.nii.gz", np.full((40, 64, 64), -1000.0))
    ct = _ct_array()
    nan = ct.copy()
    nan[10, 20:30, 20:30] = np.nan
    f["nan_volume"] = _volume(folder / "nan.nii.gz", nan)
    inf = ct.copy()
    inf[5, 5, 5] = np.inf
    f["inf_volume"] = _volume(folder / "inf.nii.gz", inf)
    f["truncated_volume"] = folder / "truncated.nii.gz"
    f["truncated_volume"].write_bytes(CT_VOLUME.read_bytes()[:4000])
    ds = pydicom.dcmread(RSNA_DCM)
    del ds.PixelData
    f["dicom_no_pixels"] = folder / "no_pixels.dcm"
    ds.save_as(f["dicom_no_pixels"])
    f["ct_slice_dcm"] = folder / "ct_slice.dcm"
    shutil.copy(sorted(CT_SERIES.glob("*.dcm"))[0], f["ct_slice_dcm"])
    mixed = folder / "mixed_series"
    mixed.mkdir(exist_ok=True)
    for p in sorted(CT_SERIES.glob("*.dcm")):
        shutil.copy(p, mixed / f"a_{p.name}")
    for p in sorted(CT_DICOM_SERIES.iterdir())[:5]:
        shutil.copy(p, mixed / f"b_{p.name}")
    f["mixed_series"] = mixed
    no_pixel_series = folder / "no_pixel_series"
    no_pixel_series.mkdir(exist_ok=True)
    for i, p in enumerate(sorted(CT_SERIES.glob("*.dcm"))):
        d = pydicom.dcmread(p)
        del d.PixelData
        d.save_as(no_pixel_series / f"{i}.dcm")
    f["dicom_series_no_pixels"] = no_pixel_series
    cr_folder = folder / "cr_folder"
    cr_folder.mkdir(exist_ok=True)
    shutil.copy(RSNA_DCM, cr_folder / "cr.dcm")
    f["cr_as_series"] = cr_folder
    f["empty_folder"] = folder / "empty_folder"
    f["empty_folder"].mkdir(exist_ok=True)
    f["missing"] = folder / "does_not_exist.png"
    f["phi_dicom"] = folder / "DOE_JANE_chest.dcm"
    d = pydicom.dcmread(RSNA_DCM)
    d.PatientName = "Doe^Jane"
    d.PatientID = "MRN-4417-DOE"
    d.save_as(f["phi_dicom"])
    return f
