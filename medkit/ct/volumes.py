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

    python -m medkit.ct.volumes medkit/data/samples/ct/totalsegmentator/example_ct_dicom
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medkit.ct.config import VolumeConfig

logger = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

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


def is_volume_path(path: str | Path) -> bool:
    """True for a folder (a DICOM series) or a file with a 3D-volume suffix."""
    path = Path(path)
    name = path.name.lower()
    return path.is_dir() or name.endswith(VOLUME_SUFFIXES)


# ---- DICOM series ------------------------------------------------------------------------------
def _dicom_headers(folder: Path) -> list[tuple[Path, object]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    out = []
    for p in sorted(x for x in folder.rglob("*") if x.is_file()):
        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True)
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
_NIFTI_FLOAT = {16: np.float32, 64: np.float64}  # NIfTI-1 datatype codes of float voxels


def _check_nifti_data(path: Path) -> None:
    """What ITK's NIfTI reader hides: a truncated file (it pads the missing part: a .nii.gz cut
    short reads as a full-size volume), NaN / infinite voxels (read as 0 HU, water) and a header
    declaring 0 voxels along an axis (read as 1 slice). Streams the NIfTI-1 data once (constant
    memory); NIfTI-2 and damaged headers are left to ITK."""
    import gzip
    import struct

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(348)
            if len(head) < 348:
                raise VolumeInputError(f"{path}: file is truncated ({len(head)} bytes, shorter than a NIfTI header)")
            endian = "<" if struct.unpack("<i", head[:4])[0] == 348 else ">"
            if struct.unpack(endian + "i", head[:4])[0] != 348:
                return  # not NIfTI-1: ITK decides
            dim = struct.unpack(endian + "8h", head[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
            vox_offset = int(struct.unpack(endian + "f", head[108:112])[0])
            shape = dim[1:1 + max(0, min(dim[0], 7))]
            if 0 in shape:
                raise VolumeInputError(f"{path}: volume is empty (the header declares size {tuple(shape)})")
            expected = int(np.prod(shape, dtype=np.int64)) * max(bitpix, 8) // 8
            f.read(max(0, vox_offset - 348))
            dtype = np.dtype(_NIFTI_FLOAT[datatype]).newbyteorder(endian) if datatype in _NIFTI_FLOAT else None
            got, chunk = 0, 1 << 24  # 16 MiB, a multiple of every voxel size
            while got < expected:
                block = f.read(min(chunk, expected - got))
                if not block:
                    break
                if dtype is not None and not np.isfinite(np.frombuffer(block, dtype=dtype)).all():
                    raise VolumeInputError(f"{path}: volume contains NaN or infinite values")
                got += len(block)
    except VolumeInputError:
        raise
    except (OSError, EOFError, ValueError, struct.error) as e:  # gzip / zlib errors are OSError or EOFError
        raise VolumeInputError(f"{path}: cannot read the 3D volume: file is truncated or damaged "
                               f"({type(e).__name__}: {e})") from None
    if got < expected:
        raise VolumeInputError(f"{path}: file is truncated ({got} of {expected} bytes of voxel data)")


def _read_file(path: Path):
    import SimpleITK as sitk

    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_data(path)
    try:
        return sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()
        raise VolumeInputError(f"{path}: cannot read the 3D volume ({msg[-1] if msg else e})") from None


def read_volume(path: str | Path, cfg: VolumeConfig | None = None) -> CTVolume:
    """Load and check a CT volume (a NIfTI/NRRD/MHA file or a DICOM series folder), HU float32."""
    import SimpleITK as sitk

    cfg = cfg or VolumeConfig()
    # ITK prints reader warnings straight to stderr; MedKit reports problems itself, one line each
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    path = Path(path)
    if not path.exists():
        raise VolumeInputError(f"{path}: file or folder not found")
    name = path.name.lower()
    if path.is_dir():
        files = dicom_series_files(path)
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
    import SimpleITK as sitk

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
    import SimpleITK as sitk

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
    import SimpleITK as sitk

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
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    if pixel_type is not None:
        img = sitk.Cast(img, pixel_type)
    img.SetSpacing(ref.GetSpacing())  # not CopyInformation: a sub-block's size differs from ref's
    img.SetDirection(ref.GetDirection())
    img.SetOrigin(ref.GetOrigin())
    return img


def labels_to_original(labels_model, original):
    """Nearest-neighbour resampling of a model-grid label image onto ``original``'s grid (uint8)."""
    import SimpleITK as sitk

    out = sitk.Resample(labels_model, original, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    out.CopyInformation(original)  # exact same spacing/origin/direction values
    return out


def read_mask(path: str | Path, reference, label_values: dict[str, int], organs: tuple[str, ...]):
    """A reference organ mask (e.g. a TotalSegmentator label map) as MedKit labels on ``reference``'s grid.

    ``label_values`` maps organ name -> value in the file; organs missing from it stay background.
    The mask is resampled (nearest neighbour) onto ``reference`` when its grid differs.
    """
    import SimpleITK as sitk

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
