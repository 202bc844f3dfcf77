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


# ---- inputs of the boundary cases (tests/reliability/test_boundary.py) ---------------------------
def _png_claiming(dest: Path, width: int, height: int) -> Path:
    """A valid PNG signature and IHDR claiming ``width`` x ``height`` grey pixels, one tiny IDAT."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    dest.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
                     + chunk(b"IEND", b""))
    return dest


def _jpeg_claiming(dest: Path, width: int, height: int) -> Path:
    """The NIH sample as a JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.open(NIH_PNG).convert("L").save(buf, format="JPEG", quality=80)
    raw = bytearray(buf.getvalue())
    sof = raw.find(b"\xff\xc0")
    raw[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    dest.write_bytes(bytes(raw))
    return dest


def _dicom_claiming(dest: Path, rows: int, cols: int) -> Path:
    """The RSNA sample with a header claiming ``rows`` x ``cols`` pixels (its own pixel data kept)."""
    import pydicom

    ds = pydicom.dcmread(RSNA_DCM)
    ds.Rows, ds.Columns = rows, cols
    ds.save_as(dest)
    return dest


def _deflate_bomb(dest: Path, inflated_bytes: int) -> Path:
    """A deflated DICOM (Deflated Explicit VR Little Endian) whose dataset inflates to more than
    ``inflated_bytes``: a 64x64 CR image plus a private OB element of zeros, deflated in a stream."""
    import io
    import struct
    import zlib

    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_dataset, write_file_meta_info

    ds = pydicom.dcmread(RSNA_DCM, stop_before_pixels=True)
    ds.Rows = ds.Columns = 64
    ds.is_little_endian, ds.is_implicit_VR = True, False
    body = io.BytesIO()
    write_dataset(pydicom.filebase.DicomFileLike(body), ds)
    meta = FileMetaDataset(ds.file_meta)
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(pydicom.filebase.DicomFileLike(head), meta, enforce_standard=True)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with dest.open("wb") as f:
        f.write(head.getvalue())
        f.write(deflater.compress(body.getvalue()))
        f.write(deflater.compress(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, inflated_bytes)))
        zeros = b"\0" * (1 << 24)
        for _ in range(inflated_bytes // len(zeros) + 1):
            f.write(deflater.compress(zeros))
        f.write(deflater.flush())
    return dest


def _nifti_claiming(dest: Path, shape: tuple[int, int, int]) -> Path:
    """A NIfTI-1 header claiming ``shape`` int16 voxels, followed by a few bytes of data."""
    import gzip
    import struct

    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, *shape, 1, 1, 1, 1)
    struct.pack_into("<2h", hdr, 70, 4, 16)  # int16
    struct.pack_into("<8f", hdr, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", hdr, 108, 352.0)
    hdr[344:348] = b"n+1\0"
    dest.write_bytes(gzip.compress(bytes(hdr) + b"\0" * 4 + b"\0" * 4096))
    return dest


def write_boundary_inputs(folder: Path) -> dict[str, Path]:
    """name -> file of every input the boundary cases send."""
    import io
    import tarfile

    import pydicom
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}
    f["png_30000"] = _png_claiming(folder / "huge.png", 30000, 30000)
    f["jpeg_60000"] = _jpeg_claiming(folder / "huge.jpg", 60000, 60000)
    f["dicom_20000"] = _dicom_claiming(folder / "huge.dcm", 20000, 20000)
    f["deflate_bomb"] = _deflate_bomb(folder / "bomb_dfl.dcm", 1100 * 1024 * 1024)
    f["nifti_1024"] = _nifti_claiming(folder / "huge.nii.gz", (1024, 1024, 512))
    f["nrrd_100000"] = folder / "huge.nrrd"
    f["nrrd_100000"].write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 100000 100000 100000\n"
                                 b"spacings: 1 1 1\nencoding: raw\n\n")
    f["nrrd_detached"] = folder / "detached.nrrd"
    f["nrrd_detached"].write_bytes(b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4 4\nspacings: 1 1 1\n"
                                   b"encoding: raw\ndata file: /etc/passwd\n\n")
    f["mha_detached"] = folder / "detached.mha"
    f["mha_detached"].write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 64 64 64\nElementSpacing = 1 1 1\n"
                                  b"ElementType = MET_UCHAR\nElementDataFile = /dev/zero\n")
    ct = _ct_array()
    f["ct_100mm"] = _volume(folder / "coarse_100mm.nii.gz", ct[:20, :64, :64], spacing=(100.0, 100.0, 100.0))
    zero = _volume(folder / "zero_spacing.nii.gz", ct)
    _set_nifti_pixdim(zero, (0.0, 0.0, 0.0))
    f["ct_zero_spacing"] = zero
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        data = b"print('written by a tar slip')\n"
        info = tarfile.TarInfo("../../medkit_tar_slip_canary.py")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    f["tar_slip"] = folder / "slip.tar"
    f["tar_slip"].write_bytes(tar.getvalue())
    f["weights"] = folder / "model.safetensors"
    f["weights"].write_bytes(b"not weights")
    f["nan_report"] = folder / "nan_report.json"
    f["nan_report"].write_text('{"report": "The lungs are clear.", '
                               '"findings": [{"name": "Edema", "probability": NaN}]}')
    f["mask_unreadable"] = folder / "organs.nii.gz"
    f["mask_unreadable"].write_bytes(b"not a mask at all")
    f["mask_wrong_grid"] = _volume(folder / "organs_small.nii.gz", np.zeros((10, 10, 10)))
    f["other_png"] = folder / "other.png"
    Image.open(NIH_PNG).convert("L").rotate(10).save(f["other_png"])
    d = pydicom.dcmread(RSNA_DCM)
    f["phi_named"] = folder / "DOE_JANE_1970_chest.dcm"
    d.save_as(f["phi_named"])
    return f


def _set_nifti_pixdim(path: Path, spacing: tuple[float, float, float]) -> None:
    import gzip
    import struct

    raw = bytearray(gzip.decompress(path.read_bytes()))
    struct.pack_into("<3f", raw, 80, *spacing)  # pixdim[1..3]
    path.write_bytes(gzip.compress(bytes(raw)))
