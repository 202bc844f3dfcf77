"""CT volume input: NIfTI, NRRD, MetaImage and DICOM series (a folder) through SimpleITK.

Every volume keeps its original geometry (size, spacing, origin, direction) as a
``SimpleITK.Image`` in Hounsfield units; models see it resampled onto a *model grid* in a fixed
orientation (RAS by default) and spacing (3 mm by default) that covers the same physical box, and
their label maps go back onto the original grid by nearest-neighbour resampling, so a written
segmentation has the input's spacing, origin and direction whatever the input's shape (anisotropic
spacing, oblique direction, 3 to 1,000+ slices).

Checks, each a :class:`VolumeInputError` (a ``ValueError``) naming the file and the problem:
missing path, 2D images (PNG/JPEG or a single-frame DICOM), fewer than ``min_slices`` slices,
empty or constant volumes, NaN, a DICOM folder holding several series, DICOM slices with gaps
(missing slices) or duplicates or differing sizes/orientations, and intensity ranges that are not
CT Hounsfield units (no voxel at fat/air attenuation: MR, PET, or raw values without the rescale
intercept). Volumes with fewer than ``warn_slices`` slices load with a warning (organs cut off).
Before any voxel is read, the header must keep the data in the file itself (no detached NRRD /
MetaImage data file), give a voxel spacing (ITK would guess 1 mm) and claim no more voxels than
:mod:`medkit.core.limits` allows; the model grid is checked the same way before it is allocated.
NIfTI-2, which ITK does not read, is read through nibabel.

    python -m medkit.ct.images medkit/data/samples/ct/totalsegmentator/example_ct_dicom
"""

from __future__ import annotations

import gzip
import logging
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from medkit.core import limits
from medkit.core.dicom import read_dicom_header
from medkit.core.files import RASTER_SUFFIXES
from medkit.ct.config import ORGANS, TOTALSEG_LABELS, VolumeConfig

logger = logging.getLogger(__name__)


# Attenuation checks (Hounsfield scale: water 0, air -1000; fat about -100, e.g. Kalender,
# "Computed Tomography", 3rd ed., 2011). A body CT always holds fat or air (lungs, bowel gas,
# surrounding air), so a volume without any voxel below -200 HU is not in HU.
_MIN_FRACTION_BELOW_FAT = 1e-3  # at least 0.1 % of voxels below -200 HU
_HU_LOW_LIMIT = -3100.0  # below: not HU (scanners pad outside the field of view with -3024 or -2048)
_HU_HIGH_WARN = 4000.0  # above: metal or extended-range reconstruction; values are clipped anyway

# LPS world axes (ITK/DICOM physical space) that each orientation letter points to.
_AXIS = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}


class VolumeInputError(ValueError):
    """A CT input that MedKit cannot use; the message names the file and the problem."""


@dataclass
class CTVolume:
    """A loaded CT: the original image in HU plus what the checks found."""

    path: Path
    image: "object"  # SimpleITK.Image, float32 HU, original geometry
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(self.image.GetSize())

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(self.image.GetSpacing())

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.image.GetSpacing())) / 1000.0


# ---- DICOM series ------------------------------------------------------------------------------
def _dicom_headers(folder: Path) -> list[tuple[Path, object]]:
    out = []
    for p in sorted(x for x in folder.rglob("*") if x.is_file()):
        try:
            ds = read_dicom_header(p, VolumeInputError)  # refuses a deflate bomb before pydicom inflates it
        except VolumeInputError:
            raise
        except (InvalidDicomError, OSError, ValueError, AttributeError, TypeError):
            continue  # not a DICOM file (DICOMDIR, notes, thumbnails): ignored
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            out.append((p, ds))
    return out


def dicom_series_files(folder: str | Path) -> list[Path]:
    """The files of the one CT series in ``folder``, sorted along the slice normal.

    Raises VolumeInputError for no DICOM image, several series, differing slice sizes or
    orientations, duplicate slice positions, and gaps (a missing slice: a step larger than 1.5x
    the median step).
    """
    folder = Path(folder)
    headers = _dicom_headers(folder)
    if not headers:
        raise VolumeInputError(f"{folder}: no DICOM image slices (with ImagePositionPatient) in this folder")
    series: dict[str, list] = {}
    for p, ds in headers:
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "?")), []).append((p, ds))
    if len(series) > 1:
        desc = ", ".join(f"{uid} ({len(v)} files)" for uid, v in sorted(series.items(), key=lambda kv: -len(kv[1])))
        raise VolumeInputError(f"{folder}: holds {len(series)} DICOM series ({desc}); give a folder with one series")
    items = next(iter(series.values()))
    modality = str(getattr(items[0][1], "Modality", "")).upper()
    if modality and modality != "CT":
        raise VolumeInputError(f"{folder}: DICOM modality is {modality!r}, the CT path takes CT series")
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    if len(sizes) > 1:
        raise VolumeInputError(f"{folder}: slices have different sizes {sorted(sizes)}")
    orients = {tuple(round(float(v), 4) for v in ds.ImageOrientationPatient) for _, ds in items}
    if len(orients) > 1:
        raise VolumeInputError(f"{folder}: slices have {len(orients)} different orientations (a localizer mixed in?)")
    row, col = np.array(next(iter(orients))[:3]), np.array(next(iter(orients))[3:])
    normal = np.cross(row, col)
    pos = np.array([float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))) for _, ds in items])
    order = np.argsort(pos)
    pos = pos[order]
    files = [items[i][0] for i in order]
    if len(files) >= 2:
        steps = np.diff(pos)
        if (steps < 1e-3).any():
            k = int(np.argmin(steps))
            raise VolumeInputError(f"{folder}: two slices at the same position {pos[k]:.2f} mm "
                                   f"({files[k].name}, {files[k + 1].name}); duplicate or mixed series")
        med = float(np.median(steps))
        gaps = np.nonzero(steps > 1.5 * med)[0]
        if len(gaps):
            k = int(gaps[0])
            raise VolumeInputError(
                f"{folder}: missing slices: gap of {steps[k]:.2f} mm between positions {pos[k]:.2f} and "
                f"{pos[k + 1]:.2f} mm (slice step {med:.2f} mm), {len(gaps)} gap(s) in {len(files)} slices")
    return files


# ---- reading -------------------------------------------------------------------------------------
_NIFTI_FLOAT = {16: np.float32, 64: np.float64}  # NIfTI datatype codes of float voxels
# NIfTI-1 / NIfTI-2 header layouts (nifti1.h, nifti2.h): header size, then the offsets and
# struct formats of dim[8], datatype + bitpix, pixdim[8] and vox_offset
_NIFTI_LAYOUT = {348: (40, "8h", 70, "2h", 76, "8f", 108, "f"), 540: (16, "8q", 12, "2h", 104, "8d", 168, "q")}


def _check_nifti_data(path: Path) -> int:
    """What ITK's NIfTI reader hides, checked from the header and one streamed pass over the data
    (constant memory): a truncated file (ITK pads the missing part: a .nii.gz cut short reads as a
    full-size volume), NaN / infinite voxels (read as 0 HU, water), a header declaring 0 voxels
    along an axis (read as 1 slice) or no voxel spacing (ITK guesses 1 mm), and more voxels than
    ``max_volume_voxels``. Returns the NIfTI version (1 or 2)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(348)
            if len(head) < 348:
                raise VolumeInputError(f"{path}: file is truncated ({len(head)} bytes, shorter than a NIfTI header)")
            for endian in "<>":
                size = struct.unpack(endian + "i", head[:4])[0]
                if size in _NIFTI_LAYOUT:
                    break
            else:
                raise VolumeInputError(f"{path}: not a NIfTI file (header size field "
                                       f"{struct.unpack('<i', head[:4])[0]}, expected 348 or 540)")
            head += f.read(size - len(head))  # NIfTI-2: the rest of its 540-byte header
            if len(head) < size:
                raise VolumeInputError(f"{path}: file is truncated ({len(head)} bytes, shorter than its header)")
            d_at, d_fmt, t_at, t_fmt, p_at, p_fmt, o_at, o_fmt = _NIFTI_LAYOUT[size]
            dim = struct.unpack_from(endian + d_fmt, head, d_at)
            datatype, bitpix = struct.unpack_from(endian + t_fmt, head, t_at)
            pixdim = struct.unpack_from(endian + p_fmt, head, p_at)
            vox_offset = int(struct.unpack_from(endian + o_fmt, head, o_at)[0])
            shape = dim[1:1 + max(0, min(dim[0], 7))]
            if 0 in shape or not shape:
                raise VolumeInputError(f"{path}: volume is empty (the header declares size {tuple(shape)})")
            voxels = int(np.prod(shape, dtype=np.int64))
            try:
                limits.current().check("max_volume_voxels", voxels,
                                       f"{path}: the header claims {voxels:,} voxels {tuple(shape)}")
            except limits.InputLimitError as e:
                raise VolumeInputError(str(e)) from None
            spacing = pixdim[1:1 + min(len(shape), 3)]
            if not all(np.isfinite(v) and v > 0 for v in spacing):
                raise VolumeInputError(f"{path}: the header gives no valid voxel spacing (pixdim "
                                       f"{tuple(round(float(v), 4) for v in spacing)}); volumes cannot be measured")
            expected = voxels * max(bitpix, 8) // 8
            f.read(max(0, vox_offset - len(head)))
            dtype = np.dtype(_NIFTI_FLOAT[datatype]).newbyteorder(endian) if datatype in _NIFTI_FLOAT else None
            got, chunk = 0, 1 << 24  # 16 MiB, a multiple of every voxel size
            while got < expected:
                block = f.read(min(chunk, expected - got))
                if not block:
                    break
                if dtype is not None:
                    usable = len(block) - len(block) % dtype.itemsize
                    if not np.isfinite(np.frombuffer(block[:usable], dtype=dtype)).all():
                        raise VolumeInputError(f"{path}: volume contains NaN or infinite values")
                got += len(block)
    except VolumeInputError:
        raise
    except (OSError, EOFError, ValueError, struct.error) as e:  # gzip / zlib errors are OSError or EOFError
        raise VolumeInputError(f"{path}: cannot read the 3D volume: file is truncated or damaged "
                               f"({type(e).__name__}: {e})") from None
    if got < expected:
        raise VolumeInputError(f"{path}: file is truncated ({got} of {expected} bytes of voxel data)")
    return 1 if size == 348 else 2


def _text_header(path: Path, size: int = 1 << 16) -> dict[str, str]:
    """``key: value`` (NRRD) or ``Key = Value`` (MetaImage) fields of a text header, keys lower-cased."""
    with path.open("rb") as f:
        raw = f.read(size)
    text = raw.split(b"\n\n", 1)[0] if path.name.lower().endswith((".nrrd", ".nhdr")) else raw
    fields = {}
    for line in text.decode("latin-1").splitlines():
        key, sep, value = line.partition(":=" if ":=" in line else (":" if path.suffix.lower() in (".nrrd", ".nhdr")
                                                                     else "="))
        if sep and not line.startswith("#"):
            fields.setdefault(key.strip().lower(), value.strip())
        if path.suffix.lower() in (".mha", ".mhd") and key.strip().lower() == "elementdatafile":
            break  # the voxel data follows
    return fields


def _check_text_header(path: Path) -> None:
    """NRRD / MetaImage: the voxel data must be in the file itself (a header naming a detached
    file, ``data file: /etc/passwd`` or ``ElementDataFile = /dev/zero``, would make MedKit read a
    file it was not given), the voxel count within ``max_volume_voxels``, and a spacing given."""
    fields = _text_header(path)
    nrrd = path.suffix.lower() in (".nrrd", ".nhdr")
    with path.open("rb") as f:
        magic = f.read(8)
    required = ("sizes", "type", "encoding") if nrrd else ("ndims", "dimsize")
    if nrrd and not magic.startswith(b"NRRD000") or any(k not in fields for k in required):
        raise VolumeInputError(f"{path}: cannot read the 3D volume (not an {'NRRD' if nrrd else 'MetaImage'} "
                               f"header with {', '.join(required)})")
    detached = fields.get("data file") or fields.get("datafile") if nrrd else fields.get("elementdatafile", "LOCAL")
    if detached and detached.upper() != "LOCAL":
        raise VolumeInputError(f"{path}: the header names a detached data file ({detached[:60]!r}); MedKit reads "
                               "single-file volumes only (NRRD with attached data, .nii, .nii.gz, .mha)")
    try:
        if nrrd:
            shape = [int(v) for v in fields.get("sizes", "").split()]
        else:
            shape = [int(v) for v in fields.get("dimsize", "").split()]
    except ValueError:
        raise VolumeInputError(f"{path}: the header's sizes are not integers") from None
    if shape:
        voxels = int(np.prod(shape, dtype=np.int64))
        try:
            limits.current().check("max_volume_voxels", voxels, f"{path}: the header claims {voxels:,} voxels "
                                                                f"{tuple(shape)}")
        except limits.InputLimitError as e:
            raise VolumeInputError(str(e)) from None
    spacing = fields.get("space directions") or fields.get("spacings") if nrrd else \
        fields.get("elementspacing") or fields.get("elementsize")
    if not spacing:
        raise VolumeInputError(f"{path}: the header gives no voxel spacing ('space directions' / 'spacings' / "
                               "ElementSpacing); volumes cannot be measured")


def _check_series_header(folder: Path, files: list[Path]) -> None:
    """A DICOM series: voxel count (slices x rows x columns) and an in-plane spacing, before reading."""
    ds = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    voxels = len(files) * int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
    try:
        limits.current().check("max_volume_voxels", voxels, f"{folder}: the series claims {voxels:,} voxels")
    except limits.InputLimitError as e:
        raise VolumeInputError(str(e)) from None
    spacing = [float(v) for v in ds.get("PixelSpacing", None) or []]
    if len(spacing) != 2 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise VolumeInputError(f"{folder}: {files[0].name} gives no valid PixelSpacing ({spacing or 'missing'}); "
                               "volumes cannot be measured")


def _read_nifti2(path: Path):
    """NIfTI-2 (which ITK does not read) through nibabel: RAS affine -> ITK's LPS geometry."""
    import nibabel as nib  # on use: only NIfTI-2 files need nibabel (0.5 s import)

    nii = nib.load(str(path))
    arr = np.asarray(nii.get_fdata(dtype=np.float32))
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise VolumeInputError(f"{path}: is {arr.ndim}D with shape {arr.shape}; the CT path takes a 3D volume")
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ nii.affine  # RAS -> LPS
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))  # (i, j, k) -> (k, j, i)
    img.SetSpacing([float(v) for v in spacing])
    img.SetDirection([float(v) for v in (affine[:3, :3] / spacing).flatten()])
    img.SetOrigin([float(v) for v in affine[:3, 3]])
    return img


def check_volume_file(path: str | Path) -> int | None:
    """The checks made before a volume file is read (header sizes against :mod:`medkit.core.limits`,
    attached data, spacing; for NIfTI one streamed pass for truncation and NaN); the NIfTI version
    for NIfTI files. Raises :class:`VolumeInputError`."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _check_nifti_data(path)
    if name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")):
        _check_text_header(path)
    return None


def _read_file(path: Path):
    if check_volume_file(path) == 2:
        try:
            return _read_nifti2(path)
        except VolumeInputError:
            raise
        except Exception as e:  # nibabel raises several types for damaged files
            raise VolumeInputError(f"{path}: cannot read the NIfTI-2 volume ({type(e).__name__}: {e})") from None
    try:
        return sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()
        raise VolumeInputError(f"{path}: cannot read the 3D volume ({msg[-1] if msg else e})") from None


def volume_size(path: str | Path) -> tuple[int, ...]:
    """(X, Y, Z) voxels of a volume file or DICOM series folder, from its headers only."""
    path = Path(path)
    if path.is_dir():
        files = dicom_series_files(path)
        ds = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows), len(files)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise VolumeInputError(f"{path}: cannot read the volume header ({str(e).strip().splitlines()[-1]})") from None
    return tuple(reader.GetSize())


def check_label_map(path: str | Path, size: tuple[int, ...] | None = None, max_value: int = 255) -> None:
    """A label map (organ mask) a user submits: a readable single-file volume whose voxels are
    integers in 0..``max_value``, on a grid of ``size`` voxels when given (the study's image)."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz", ".nrrd", ".mha")):
        raise VolumeInputError(f"{path.name}: a label map must be a .nii.gz, .nii, .nrrd or .mha volume")
    if path.stat().st_size == 0:
        raise VolumeInputError(f"{path.name}: file is empty (0 bytes)")
    img = _read_file(path)
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if size is not None and tuple(img.GetSize()) != tuple(size):
        raise VolumeInputError(f"{path.name}: label map size {tuple(img.GetSize())} does not match the image's "
                               f"{tuple(size)}; submit it on the image's own grid")
    arr = sitk.GetArrayViewFromImage(img)
    if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
        raise VolumeInputError(f"{path.name}: a label map holds integer labels; this one has fractional or NaN values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > max_value:
        raise VolumeInputError(f"{path.name}: labels range {lo:g}..{hi:g}; expected 0..{max_value}")


def totalsegmentator_mask(path: str | Path, organs: tuple[str, ...] = ORGANS):
    """A TotalSegmentator output as MedKit's organ mask (0 background, organ ``i`` = ``i + 1`` of
    ``organs``) on the output's own grid, which is its input CT's: a multi-label map with
    TotalSegmentator v2 class values (:data:`TOTALSEG_LABELS`), or a folder of one binary mask per
    class named ``<class>.nii.gz`` (TotalSegmentator's default output). Classes MedKit does not
    segment are left out."""
    path = Path(path)
    if path.is_dir():
        files = {o: path / f"{o}.nii.gz" for o in organs if (path / f"{o}.nii.gz").exists()}
        if not files:
            raise VolumeInputError(f"{path}: no TotalSegmentator mask of a MedKit organ (<organ>.nii.gz for "
                                   f"{', '.join(organs)})")
        ref, out = None, None
        for k, organ in enumerate(organs, 1):
            if organ not in files:
                continue
            check_volume_file(files[organ])
            m = sitk.ReadImage(str(files[organ]))
            if ref is None:
                ref, out = m, np.zeros(sitk.GetArrayViewFromImage(m).shape, dtype=np.uint8)
            elif m.GetSize() != ref.GetSize():
                raise VolumeInputError(f"{files[organ]}: size {m.GetSize()} differs from the other masks' "
                                       f"{ref.GetSize()}")
            out[sitk.GetArrayViewFromImage(m) > 0] = k
    else:
        check_volume_file(path)
        ref = sitk.ReadImage(str(path))
        src = sitk.GetArrayViewFromImage(ref)
        out = np.zeros(src.shape, dtype=np.uint8)
        for k, organ in enumerate(organs, 1):
            out[src == TOTALSEG_LABELS[organ]] = k
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(ref)
    return img


def read_volume(path: str | Path, cfg: VolumeConfig | None = None) -> CTVolume:
    """Load and check a CT volume (a NIfTI/NRRD/MHA file or a DICOM series folder), HU float32."""
    cfg = cfg or VolumeConfig()
    # ITK prints reader warnings straight to stderr; MedKit reports problems itself, one line each
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    path = Path(path)
    if not path.exists():
        raise VolumeInputError(f"{path}: file or folder not found")
    name = path.name.lower()
    if path.is_dir():
        files = dicom_series_files(path)
        _check_series_header(path, files)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in files])
        reader.SetOutputPixelType(sitk.sitkFloat32)
        try:
            img = reader.Execute()  # applies Rescale Slope/Intercept: HU
        except RuntimeError as e:
            raise VolumeInputError(f"{path}: cannot read the DICOM series ({str(e).strip().splitlines()[-1]})") from None
    elif name.endswith(RASTER_SUFFIXES):
        raise VolumeInputError(f"{path}: is a 2D image; the CT path takes a 3D volume "
                               "(NIfTI, NRRD or a folder holding a DICOM series)")
    else:
        if path.stat().st_size == 0:
            raise VolumeInputError(f"{path}: file is empty (0 bytes)")
        img = _read_file(path)
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    warnings = check_volume(img, path, cfg)
    return CTVolume(path, img, warnings)


def check_volume(img, path: Path, cfg: VolumeConfig) -> list[str]:
    """Raise VolumeInputError for unusable volumes; return warnings for usable but doubtful ones."""
    warnings: list[str] = []
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeInputError(f"{path}: has {img.GetNumberOfComponentsPerPixel()} components per voxel "
                               "(colour or vector image); CT is one grey value per voxel")
    if img.GetDimension() != 3:
        raise VolumeInputError(f"{path}: is {img.GetDimension()}D with size {img.GetSize()}; the CT path takes a 3D volume")
    size = img.GetSize()
    if 0 in size:
        raise VolumeInputError(f"{path}: volume is empty (size {size})")
    if min(size) < cfg.min_slices:
        raise VolumeInputError(f"{path}: size {size} has only {min(size)} slice(s) along one axis; this is a 2D image, "
                               f"the CT path needs a volume of at least {cfg.min_slices} slices")
    if min(size) < cfg.warn_slices:
        warnings.append(f"{path}: only {min(size)} slices: organs extend beyond the scanned range and their "
                        "measurements are partial")
    arr = sitk.GetArrayViewFromImage(img)
    step = max(1, int(round((arr.size / 2e6) ** (1 / 3))))  # ~2M voxels are enough for statistics
    sample = np.asarray(arr[::step, ::step, ::step], dtype=np.float32)
    if not np.isfinite(sample).all() or not np.isfinite(arr).all():
        raise VolumeInputError(f"{path}: volume contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if hi - lo < 1e-3:
        raise VolumeInputError(f"{path}: volume is constant (all voxels = {lo:g}); nothing to measure")
    if lo < _HU_LOW_LIMIT:
        raise VolumeInputError(f"{path}: minimum value {lo:g} is below {_HU_LOW_LIMIT:g}; not CT Hounsfield units")
    below_fat = float((sample < -200).mean())
    if below_fat < _MIN_FRACTION_BELOW_FAT:
        raise VolumeInputError(
            f"{path}: intensity range {lo:g}..{hi:g} is not CT Hounsfield units (no voxel at fat or air "
            "attenuation below -200 HU); MR, PET, or CT values without the rescale intercept?")
    if hi > _HU_HIGH_WARN:
        warnings.append(f"{path}: maximum {hi:g} HU (metal or extended-range reconstruction); values above "
                        f"{cfg.hu_max:g} HU are clipped for the model")
    spacing = img.GetSpacing()
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise VolumeInputError(f"{path}: invalid voxel spacing {spacing}; volumes cannot be measured")
    if max(spacing) > 10 or min(spacing) < 0.1:
        warnings.append(f"{path}: unusual voxel spacing {tuple(round(s, 3) for s in spacing)} mm")
    return warnings


# ---- model grid ----------------------------------------------------------------------------------
def orientation_direction(code: str) -> tuple[float, ...]:
    """Row-major 3x3 direction matrix (LPS world) whose columns point as ``code`` says, e.g. RAS."""
    code = code.upper()
    if len(code) != 3 or any(c not in _AXIS for c in code):
        raise ValueError(f"orientation {code!r} is not a 3-letter code of R/L, A/P, S/I")
    cols = np.array([_AXIS[c] for c in code], dtype=float).T  # column j = axis j
    if abs(abs(np.linalg.det(cols)) - 1) > 1e-6:
        raise ValueError(f"orientation {code!r} repeats an axis")
    return tuple(cols.flatten())


def model_grid(img, cfg: VolumeConfig):
    """An empty reference image: ``cfg.orientation`` axes, ``cfg.spacing``, covering ``img``'s box."""
    direction = np.array(orientation_direction(cfg.orientation)).reshape(3, 3)
    size = np.array(img.GetSize())
    corners = []
    for c in np.ndindex(2, 2, 2):
        idx = [(-0.5 if k == 0 else s - 0.5) for k, s in zip(c, size)]
        corners.append(img.TransformContinuousIndexToPhysicalPoint(idx))
    corners = np.array(corners)  # (8, 3) physical LPS
    local = corners @ direction  # coordinates along the model axes
    lo, hi = local.min(0), local.max(0)
    spacing = np.array(cfg.spacing)
    n = np.maximum(1, np.ceil((hi - lo) / spacing - 1e-6)).astype(int)
    voxels = int(np.prod(n, dtype=np.int64))
    try:  # checked before the grid is allocated: a 64^3 volume at 100 mm spacing asks for 39G voxels
        limits.current().check("max_grid_voxels", voxels, f"the volume covers {tuple(np.round(hi - lo).astype(int))} "
                               f"mm, {voxels:,} voxels at the model's {cfg.spacing} mm")
    except limits.InputLimitError as e:
        raise VolumeInputError(str(e)) from None
    first = lo + spacing / 2  # centre of the first voxel, along the model axes
    ref = sitk.Image([int(v) for v in n], sitk.sitkFloat32)
    ref.SetSpacing([float(s) for s in spacing])
    ref.SetDirection(tuple(direction.flatten()))
    ref.SetOrigin(tuple(float(v) for v in direction @ first))
    return ref


def to_model_grid(img, cfg: VolumeConfig):
    """Resample HU ``img`` onto the model grid: (array (X, Y, Z) float32 in 0..1, grid image).

    Down-sampling axes are low-pass filtered first so that thin-slice input does not alias: an
    integer bin-average (one cheap pass over the input) brings each axis to within 2x of the
    model spacing, and a Gaussian (sigma = 0.4 x target spacing) handles what remains above 1.5x.
    """
    ref = model_grid(img, cfg)
    src = img
    shrink = [max(1, int(t / s)) if n >= 2 * int(t / s) else 1
              for t, s, n in zip(cfg.spacing, img.GetSpacing(), img.GetSize())]
    if max(shrink) > 1:
        src = sitk.BinShrink(sitk.Cast(src, sitk.sitkFloat32), shrink)  # mean of each bin; geometry kept
    factor = np.array(cfg.spacing) / np.array(src.GetSpacing())
    for axis, (f, t, n) in enumerate(zip(factor, cfg.spacing, src.GetSize())):
        if f > 1.5 and n >= 4:  # the recursive filter needs 4 voxels along the axis
            src = sitk.RecursiveGaussian(src, 0.4 * t, False, sitk.RecursiveGaussianImageFilter.ZeroOrder, axis)
    out = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(out).transpose(2, 1, 0)  # (Z, Y, X) -> (X, Y, Z)
    arr = (np.clip(arr, cfg.hu_min, cfg.hu_max) - cfg.hu_min) / (cfg.hu_max - cfg.hu_min)
    return np.ascontiguousarray(arr, dtype=np.float32), ref


def array_to_image(arr: np.ndarray, ref, pixel_type=None):
    """(X, Y, Z) array -> SimpleITK image with ``ref``'s geometry."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    if pixel_type is not None:
        img = sitk.Cast(img, pixel_type)
    img.SetSpacing(ref.GetSpacing())  # not CopyInformation: a sub-block's size differs from ref's
    img.SetDirection(ref.GetDirection())
    img.SetOrigin(ref.GetOrigin())
    return img


def labels_to_original(labels_model, original):
    """Nearest-neighbour resampling of a model-grid label image onto ``original``'s grid (uint8)."""
    out = sitk.Resample(labels_model, original, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    out.CopyInformation(original)  # exact same spacing/origin/direction values
    return out


def read_mask(path: str | Path, reference, label_values: dict[str, int], organs: tuple[str, ...]):
    """A reference organ mask (e.g. a TotalSegmentator label map) as MedKit labels on ``reference``'s grid.

    ``label_values`` maps organ name -> value in the file; organs missing from it stay background.
    The mask is resampled (nearest neighbour) onto ``reference`` when its grid differs.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeInputError(f"{path}: mask file not found")
    try:
        m = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise VolumeInputError(f"{path}: cannot read the mask ({str(e).strip().splitlines()[-1]})") from None
    m = sitk.Resample(m, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    src = sitk.GetArrayFromImage(m)
    out = np.zeros(src.shape, dtype=np.uint8)
    for k, organ in enumerate(organs, 1):
        if organ in label_values:
            out[src == label_values[organ]] = k
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(reference)
    return img


def main(argv: list[str] | None = None) -> int:
    for p in argv if argv is not None else sys.argv[1:]:
        v = read_volume(p)
        arr, ref = to_model_grid(v.image, VolumeConfig())
        print(f"{p}: size={v.size} spacing={tuple(round(s, 3) for s in v.spacing)} model grid={arr.shape}")
        for w in v.warnings:
            print("warning:", w)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
