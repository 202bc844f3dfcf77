"""Image input: PNG, JPEG, both DICOM samples, and bad input that must fail with a clear message."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image

from medkit.cxr.images import ImageInputError, load_cxr, order_views, to_model_input
from tests.conftest import NIH_PNG, RSNA_DCM, nema_cr_path


def _check(a: np.ndarray):
    assert a.ndim == 2 and a.dtype == np.float32
    assert a.min() == pytest.approx(0.0) and a.max() == pytest.approx(1.0)


def test_png():
    a = load_cxr(NIH_PNG)
    _check(a)
    assert a.shape == (512, 512)


def test_jpeg_matches_png(tmp_path):
    jpg = tmp_path / "x.jpg"
    Image.open(NIH_PNG).save(jpg, quality=95)
    a, b = load_cxr(NIH_PNG), load_cxr(jpg)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 0.02


def test_rgb_png_becomes_grey(tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.open(NIH_PNG).convert("RGB").save(rgb)
    assert np.abs(load_cxr(rgb) - load_cxr(NIH_PNG)).max() < 0.01


def test_rsna_dicom():
    a = load_cxr(RSNA_DCM)
    _check(a)
    assert a.shape == (1024, 1024)


def test_nema_cr_dicom():
    a = load_cxr(nema_cr_path())
    _check(a)
    assert a.shape == (1841, 1955) or a.shape == (1955, 1841)


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(RSNA_DCM)
    ref = load_cxr(RSNA_DCM)
    ds.PhotometricInterpretation = "MONOCHROME1"
    for tag in ("WindowCenter", "WindowWidth"):
        if tag in ds:
            delattr(ds, tag)
    out = tmp_path / "m1.dcm"
    ds.save_as(out)
    inv = load_cxr(out)
    assert np.allclose(inv, 1.0 - ref, atol=1e-5) or np.corrcoef(inv.ravel(), ref.ravel())[0, 1] < -0.99


def test_window_is_applied(tmp_path):
    ds = pydicom.dcmread(RSNA_DCM)
    px = ds.pixel_array.astype(float)
    ds.WindowCenter, ds.WindowWidth = float(np.percentile(px, 50)), float(np.percentile(px, 60) - np.percentile(px, 40))
    out = tmp_path / "win.dcm"
    ds.save_as(out)
    a = load_cxr(out)
    # A narrow window saturates most pixels at 0 or 1.
    assert ((a < 0.01) | (a > 0.99)).mean() > 0.5


def test_model_input_shape_and_range():
    x = to_model_input(load_cxr(NIH_PNG), 224)
    assert x.shape == (224, 224) and -1.01 <= x.min() and x.max() <= 1.01


def test_order_views_puts_lateral_last():
    assert order_views(["a", "b", "c"], ["LL", None, "PA"], 2) == [1, 2]
    assert order_views(["a", "b"], None, 1) == [0]


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("this is not an image"), "not a readable image"),
    (lambda p: p.write_bytes(NIH_PNG.read_bytes()[:2000]), "not a readable image"),
    (lambda p: Image.new("L", (1, 1)).save(p), "at least"),
    (lambda p: Image.new("L", (64, 64), 7).save(p), "constant"),
])
def test_bad_png(tmp_path, make, needle):
    p = tmp_path / "bad.png"
    make(p)
    with pytest.raises(ImageInputError, match=needle) as e:
        load_cxr(p)
    assert str(p) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageInputError, match="not found"):
        load_cxr(tmp_path / "nope.png")


def test_dicom_without_pixel_data(tmp_path):
    ds = pydicom.dcmread(RSNA_DCM)
    del ds.PixelData
    p = tmp_path / "nopix.dcm"
    ds.save_as(p)
    with pytest.raises(ImageInputError, match="no pixel data"):
        load_cxr(p)


def test_truncated_dicom(tmp_path):
    p = tmp_path / "trunc.dcm"
    p.write_bytes(RSNA_DCM.read_bytes()[:5000])
    with pytest.raises(ImageInputError):
        load_cxr(p)


def test_volume_rejected(tmp_path):
    p = tmp_path / "ct.nii.gz"
    p.write_bytes(b"\x1f\x8b" + b"0" * 100)
    with pytest.raises(ImageInputError, match="3D volume"):
        load_cxr(p)


# ---- read as a viewer shows it; refused from the header when too large -----------------------------
def _grey() -> np.ndarray:
    return np.asarray(Image.open(NIH_PNG).convert("L"))


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[274] = 6  # stored pixels turned; a viewer rotates them 90 degrees clockwise
    Image.fromarray(np.rot90(_grey(), 1).copy()).save(tmp_path / "r.png", exif=exif.tobytes())
    Image.fromarray(np.rot90(_grey(), 1).copy()).save(tmp_path / "plain.png")
    assert np.array_equal(load_cxr(tmp_path / "r.png"), load_cxr(NIH_PNG))
    assert not np.array_equal(load_cxr(tmp_path / "plain.png"), load_cxr(NIH_PNG))  # the tag is what turns it


def test_palette_png_reads_grey_values_not_indices(tmp_path):
    levels = np.random.default_rng(1).permutation(256).astype(np.uint8)
    img = Image.fromarray(np.argsort(levels).astype(np.uint8)[_grey()], mode="P")
    img.putpalette(np.repeat(levels, 3).tolist())
    img.save(tmp_path / "p.png")
    assert np.array_equal(load_cxr(tmp_path / "p.png"), load_cxr(NIH_PNG))


def test_16bit_png_keeps_its_depth(tmp_path):
    deep = _grey().astype(np.uint16) * 256 + 3  # 16-bit grey (I;16), same picture
    Image.fromarray(deep).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    np.testing.assert_allclose(load_cxr(tmp_path / "d.png"), load_cxr(NIH_PNG), atol=1e-6)


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"])
def test_lossless_compressed_dicom_equals_uncompressed(name):
    """JPEG-LS and RLE (pylibjpeg's plugins) decode to the uncompressed file's pixels."""
    from pathlib import Path

    files = Path(pydicom.__file__).parent / "data" / "test_files"
    assert np.array_equal(load_cxr(files / name), load_cxr(files / "MR_small.dcm"))


def test_jpeg2000_and_deflated_dicom_decode():
    from pathlib import Path

    files = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in ("JPEG2000.dcm", "image_dfl.dcm"):
        _check(load_cxr(files / name))


def test_sizes_checked_before_decoding(tmp_path):
    from medkit.core import limits
    from tests.reliability.inputs import _deflate_bomb, _dicom_claiming, _jpeg_claiming, _png_claiming

    cases = [(_png_claiming(tmp_path / "a.png", 30000, 30000), "max_image_pixels"),
             (_jpeg_claiming(tmp_path / "b.jpg", 9000, 9000), "max_image_pixels"),
             (_dicom_claiming(tmp_path / "c.dcm", 20000, 20000), "max_image_pixels")]
    for path, needle in cases:
        with pytest.raises(ImageInputError, match=needle):
            load_cxr(path)
    saved = limits.current()
    try:
        limits.configure(limits.InputLimits(max_decompressed_mb=8))
        bomb = _deflate_bomb(tmp_path / "d.dcm", 20 * 1024 * 1024)  # inflates to 20 MiB, limit 8
        with pytest.raises(ImageInputError, match="max_decompressed_mb"):
            load_cxr(bomb)
        limits.configure(limits.InputLimits(max_image_pixels=512 * 511))
        with pytest.raises(ImageInputError, match="262,144 pixels"):
            load_cxr(NIH_PNG)  # one pixel row over a lowered limit
    finally:
        limits.configure(saved)
    _check(load_cxr(NIH_PNG))


def test_limits_refuse_nonsense():
    from medkit.core import limits

    with pytest.raises(ValueError, match="max_image_pixels"):
        limits.InputLimits(max_image_pixels=0)
