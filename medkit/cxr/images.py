"""Chest radiograph input: PNG / JPEG through Pillow, DICOM (CR/DX) through pydicom.

Every loader returns a float32 array of shape (H, W) scaled to 0..1 with "bone is bright"
polarity, whatever the source encoding:

- PNG / JPEG: Pillow, read as a viewer shows them: EXIF orientation applied, palette images as
  their colours, 16-bit grey at full depth; RGB(A) is converted to grey by luminance.
- DICOM: pydicom reads the pixels (every transfer syntax its decoders cover: JPEG, JPEG-LS,
  JPEG 2000 and RLE through pylibjpeg's plugins, deflate natively); the Modality LUT (Rescale
  Slope/Intercept) is applied, then the VOI LUT or the first Window Center/Width when the file
  has one; MONOCHROME1 images are inverted so that they look like MONOCHROME2. Without a window
  the full range is min-max scaled.

Sizes are checked from the header before anything is decoded (:mod:`medkit.core.limits`: pixels,
inflated bytes of a deflated DICOM). Bad input raises :class:`ImageInputError` (a ``ValueError``)
whose message names the file and the problem; callers show it as a one-line error.

    python -m medkit.cxr.images path/to/image.dcm   # prints shape and intensity range
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

from medkit.core import limits
from medkit.core.dicom import DICOM_SUFFIXES, check_pixels, is_dicom_file, read_dicom_header
from medkit.core.files import RASTER_SUFFIXES, VOLUME_SUFFIXES

logger = logging.getLogger(__name__)

MIN_SIDE = 16  # smaller images carry no usable anatomy
LATERAL_VIEWS = {"LL", "RL", "LATERAL", "LAT", "LLD", "RLD"}


class ImageInputError(ValueError):
    """An input image that MedKit cannot use; the message names the file and the problem."""


def _read_raster(path: Path) -> np.ndarray:
    """A PNG / JPEG as a viewer shows it: EXIF orientation applied, palette colours (not indices),
    16-bit grey kept at full depth, colour converted to grey by luminance."""
    try:
        with Image.open(path) as probe:
            check_pixels(path, probe.size[0] * probe.size[1] * getattr(probe, "n_frames", 1), ImageInputError)
            if getattr(probe, "n_frames", 1) > 1:
                raise ImageInputError(f"{path}: image holds {probe.n_frames} frames; a chest radiograph is one frame")
            probe.verify()  # catches truncated and non-image files before decoding
        with Image.open(path) as img:
            img.load()  # PIL decodes lazily: a truncated file fails only now
            img = ImageOps.exif_transpose(img)  # the orientation a viewer shows (EXIF tag 274)
            if img.mode in ("P", "PA"):  # palette indices -> the grey values / colours they stand for
                rgb = np.asarray(img.getpalette() or [0, 0, 0], dtype=np.int32).reshape(-1, 3)
                img = img.convert("L" if (rgb == rgb[:, :1]).all() else "RGB")
            if img.mode in ("L", "LA"):
                arr = np.asarray(img.getchannel(0))
            elif img.mode.startswith(("I", "F")):  # 16-bit / 32-bit grey
                arr = np.asarray(img)
            else:
                arr = np.asarray(img.convert("RGB"))
    except Image.DecompressionBombError as e:  # PIL's own bound (2x its MAX_IMAGE_PIXELS), from the header
        raise ImageInputError(f"{path}: {e}; more than the limit max_image_pixels = "
                              f"{limits.current().max_image_pixels:,}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageInputError):
            raise
        raise ImageInputError(f"{path}: not a readable image ({e})") from e
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # (H, W, C) -> grey
        arr = arr[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return arr


def _read_dicom(path: Path) -> np.ndarray:
    try:
        read_dicom_header(path, ImageInputError)
        ds = pydicom.dcmread(str(path))
    except ImageInputError:
        raise
    except Exception as e:  # pydicom raises several unrelated types for damaged files
        raise ImageInputError(f"{path}: not a readable DICOM file ({e})") from e
    if "PixelData" not in ds:
        raise ImageInputError(f"{path}: DICOM file has no pixel data (PixelData element missing)")
    try:
        pixels = ds.pixel_array
    except Exception as e:
        raise ImageInputError(f"{path}: cannot decode DICOM pixel data ({e})") from e
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1 or pixels.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1:
        raise ImageInputError(
            f"{path}: DICOM holds {frames} frames {tuple(pixels.shape)}; a chest radiograph is one 2D frame"
        )
    if getattr(ds, "SamplesPerPixel", 1) == 3:
        pixels = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return pixels
    arr = apply_modality_lut(pixels, ds).astype(np.float32)
    has_window = "VOILUTSequence" in ds or "WindowCenter" in ds
    if has_window:
        arr = apply_voi_lut(arr, ds, index=0).astype(np.float32)
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        arr = arr.max() - arr + arr.min()
    return arr


def load_cxr(path: str | Path) -> np.ndarray:
    """Load one chest radiograph as float32 (H, W) in 0..1.

    Args:
        path: PNG, JPEG or DICOM (CR/DX) file.

    Raises:
        ImageInputError: missing, empty, truncated, non-image, 3D or degenerate input.
    """
    path = Path(path)
    if not path.exists():
        raise ImageInputError(f"{path}: file not found")
    if path.is_dir():
        raise ImageInputError(f"{path}: is a directory; give one image file per view")
    if path.stat().st_size == 0:
        raise ImageInputError(f"{path}: file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if path.name.lower().endswith(VOLUME_SUFFIXES) or suffix == ".gz":
        raise ImageInputError(f"{path}: looks like a 3D volume ({suffix}); the chest X-ray model takes 2D images")
    if is_dicom_file(path) or suffix in DICOM_SUFFIXES:
        arr = _read_dicom(path)
    elif suffix in RASTER_SUFFIXES:
        arr = _read_raster(path)
    else:
        raise ImageInputError(f"{path}: unsupported file type {suffix!r} (use PNG, JPEG or DICOM)")
    if arr.ndim > 2:  # drop singleton axes such as (H, W, 1), never the image's own
        arr = arr.reshape([n for n in arr.shape if n != 1] or [1, 1])
    if arr.ndim != 2:
        raise ImageInputError(f"{path}: expected a 2D image, got shape {tuple(arr.shape)}")
    if min(arr.shape) < MIN_SIDE:
        raise ImageInputError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]} pixels; at least {MIN_SIDE} needed")
    if not np.isfinite(arr).all():
        raise ImageInputError(f"{path}: image contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if hi - lo < 1e-6:
        raise ImageInputError(f"{path}: image is constant (all pixels = {lo:g}); nothing to read")
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def to_model_input(img: np.ndarray, size: int) -> np.ndarray:
    """Resize (H, W) 0..1 to (size, size) and normalise to -1..1 (EfficientNet-Lite's mean/std 0.5).

    The aspect ratio is not kept: the IU X-ray training images were resized the same way.
    """
    t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return ((t[0, 0].numpy() - 0.5) / 0.5).astype(np.float32)


def order_views(paths: list, views: list[str | None] | None, max_views: int) -> list[int]:
    """Indices of the views to use: frontal (PA/AP/unknown) before lateral, original order kept.

    Open-i's View Position tags are often missing or wrong (many "PA, PA" pairs are frontal +
    lateral), so order in the record decides among unknown views, as in R2Gen.
    """
    views = views or [None] * len(paths)
    idx = list(range(len(paths)))
    idx.sort(key=lambda i: (str(views[i] or "").upper() in LATERAL_VIEWS, i))
    return idx[:max_views]


def main(argv: list[str] | None = None) -> int:
    for p in argv if argv is not None else sys.argv[1:]:
        a = load_cxr(p)
        print(f"{p}: shape={a.shape} min={a.min():.3f} max={a.max():.3f} mean={a.mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
