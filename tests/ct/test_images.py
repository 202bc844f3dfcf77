"""CT volume input on the committed real samples: reading, model grid, geometry, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from medkit.core.files import is_volume_path
from medkit.ct.config import ORGANS, TOTALSEG_LABELS, VolumeConfig
from medkit.ct.images import (VolumeInputError, dicom_series_files, labels_to_original, model_grid,
                              orientation_direction, read_mask, read_volume, to_model_grid)
from tests.conftest import NIH_PNG
from tests.ct.samples import DCMQI, DICOM, DICOM_SEG, NIFTI, NIFTI_SEG


@pytest.mark.parametrize("path,size,spacing", [
    (NIFTI, (122, 101, 30), (3.0, 3.0, 3.0)),
    (DICOM, (512, 512, 20), (0.9766, 0.9766, 2.0)),
    (DCMQI, (512, 512, 3), (0.8105, 0.8105, 1.0)),
], ids=["nifti", "dicom-series", "dcmqi-3-slices"])
def test_read_real_samples(path, size, spacing):
    v = read_volume(path)
    assert v.size == size
    assert np.allclose(v.spacing, spacing, atol=1e-3)
    arr = sitk.GetArrayViewFromImage(v.image)
    assert arr.min() < -900 and arr.max() > 300  # Hounsfield units: air and bone/contrast
    assert bool(v.warnings) == (size[2] < 20)  # thin volumes load with a warning


def test_model_grid_covers_the_volume_in_ras():
    v = read_volume(DICOM)
    cfg = VolumeConfig()
    arr, ref = to_model_grid(v.image, cfg)
    assert ref.GetDirection() == orientation_direction("RAS") == (-1, 0, 0, 0, -1, 0, 0, 0, 1)
    assert ref.GetSpacing() == (3.0, 3.0, 3.0)
    assert arr.shape == ref.GetSize() == (167, 167, 14)  # 500 mm / 3 mm, 40 mm / 3 mm
    assert 0.0 <= arr.min() and arr.max() <= 1.0 and arr.dtype == np.float32


@pytest.mark.parametrize("path,seg", [(NIFTI, NIFTI_SEG), (DICOM, DICOM_SEG)], ids=["nifti", "dicom"])
def test_mask_round_trip_keeps_input_geometry(path, seg):
    """Reference liver mask -> model grid -> back: exact input geometry, volume within 6 %."""
    v = read_volume(path)
    _, ref = to_model_grid(v.image, VolumeConfig())
    m = read_mask(seg, ref, TOTALSEG_LABELS, ORGANS)
    back = labels_to_original(m, v.image)
    for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(back, get)() == getattr(v.image, get)()
    truth = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(seg)), v.image, sitk.Transform(),
                                                 sitk.sitkNearestNeighbor)) == TOTALSEG_LABELS["liver"]
    got = sitk.GetArrayFromImage(back) == 1
    assert abs(int(got.sum()) - int(truth.sum())) / truth.sum() < 0.06
    assert 2 * (got & truth).sum() / (got.sum() + truth.sum()) > 0.9


def test_orientation_codes():
    assert orientation_direction("LPS") == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    for bad in ("RLS", "XYZ", "RA"):
        with pytest.raises(ValueError):
            orientation_direction(bad)


def test_model_grid_of_oblique_volume_covers_it():
    img = sitk.Image([20, 20, 20], sitk.sitkFloat32)
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1))
    img.SetSpacing((2.0, 2.0, 2.0))
    ref = model_grid(img, VolumeConfig())
    # a rotated 40 mm square needs more than 40 mm along the RAS axes
    assert ref.GetSize()[0] * 3 >= 40 * (c + s) - 1e-6


def test_is_volume_path(tmp_path):
    assert is_volume_path(DICOM) and is_volume_path(NIFTI) and is_volume_path(tmp_path / "x.nrrd")
    assert not is_volume_path(NIH_PNG) and not is_volume_path(tmp_path / "x.dcm")


# ---- bad input ------------------------------------------------------------------------------------
def _write(tmp_path, arr, name="v.nii.gz", spacing=(1.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    p = tmp_path / name
    sitk.WriteImage(img, str(p))
    return p


def _ct_like(shape=(24, 32, 32), seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(40, 20, shape).astype(np.float32)
    a[:, :4] = -1000  # air band
    return a


def _bytes(path, content: bytes):
    path.write_bytes(content)
    return path


def _mixed_series(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    for f in sorted(DICOM.iterdir())[:5]:
        shutil.copy(f, d / f.name)
    for f in DCMQI.iterdir():
        shutil.copy(f, d / f"dcmqi_{f.name}")
    return d


def _missing_slice(tmp_path):
    d = tmp_path / "gap"
    shutil.copytree(DICOM, d)
    files = dicom_series_files(d)
    files[10].unlink()
    return d


def _duplicate_slice(tmp_path):
    d = tmp_path / "dup"
    shutil.copytree(DICOM, d)
    f = sorted(d.iterdir())[3]
    shutil.copy(f, d / (f.name + "_copy"))
    return d


@pytest.mark.parametrize("make,needle", [
    (lambda t: NIH_PNG, "is a 2D image"),
    (lambda t: _write(t, _ct_like((1, 64, 64))), "this is a 2D image"),
    (lambda t: _write(t, np.full((24, 32, 32), 40, np.float32)), "constant"),
    (lambda t: _write(t, np.random.default_rng(0).uniform(0, 255, (24, 32, 32)).astype(np.float32)), "not CT Hounsfield"),
    (lambda t: _write(t, np.random.default_rng(0).uniform(0, 4095, (24, 32, 32)).astype(np.float32)), "rescale intercept"),
    (lambda t: _write(t, np.where(np.arange(24 * 32 * 32).reshape(24, 32, 32) == 5, np.nan, _ct_like()), "n.nrrd"),
     "NaN"),
    (lambda t: _bytes(t / "empty.nii.gz", b""), "empty"),
    (lambda t: t / "missing.nii.gz", "not found"),
    (lambda t: _bytes(t / "junk.nrrd", b"NRRD0004\njunk"), "cannot read the 3D volume"),
    (lambda t: (t / "nodicom").mkdir() or t / "nodicom", "no DICOM image"),
    (_mixed_series, "2 DICOM series"),
    (_missing_slice, "missing slices"),
    (_duplicate_slice, "same position"),
], ids=["png", "single-slice", "constant", "uint8-range", "raw-no-intercept", "nan", "empty-file", "missing",
        "junk-nrrd", "empty-folder", "mixed-series", "missing-slice", "duplicate-slice"])
def test_bad_input_is_one_clear_error(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(VolumeInputError) as e:
        read_volume(path)
    msg = str(e.value)
    assert needle in msg and str(path) in msg and "\n" not in msg
    assert isinstance(e.value, ValueError)


def test_ct_like_synthetic_volume_is_accepted(tmp_path):
    v = read_volume(_write(tmp_path, _ct_like((24, 32, 32))))
    assert v.size == (32, 32, 24)


# ---- what a header may claim (medkit.core.limits), detached data, spacing, NIfTI-2 ------------------------
def test_nifti2_reads_like_nifti1(tmp_path):
    import nibabel as nib

    n1 = nib.load(str(NIFTI))
    nib.save(nib.Nifti2Image(np.asarray(n1.dataobj), n1.affine, n1.header), str(tmp_path / "v2.nii.gz"))
    a, b = read_volume(NIFTI), read_volume(tmp_path / "v2.nii.gz")
    assert a.size == b.size
    np.testing.assert_allclose(b.image.GetSpacing(), a.image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(b.image.GetOrigin(), a.image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(b.image.GetDirection(), a.image.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayViewFromImage(b.image), sitk.GetArrayViewFromImage(a.image))


@pytest.mark.parametrize("header,needle", [
    (b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4 4\nspacings: 1 1 1\nencoding: raw\ndata file: /etc/passwd\n\n",
     "detached data file"),
    (b"NRRD0004\ntype: short\ndimension: 3\nsizes: 100000 100000 100000\nspacings: 1 1 1\nencoding: raw\n\n",
     "max_volume_voxels"),
    (b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 8 8 8\nencoding: raw\n\n" + bytes(512), "no voxel spacing"),
], ids=["detached", "100000-cubed", "no-spacing"])
def test_nrrd_header_checked_before_reading(tmp_path, header, needle):
    p = tmp_path / "v.nrrd"
    p.write_bytes(header)
    with pytest.raises(VolumeInputError, match=needle):
        read_volume(p)


def test_metaimage_detached_data_refused(tmp_path):
    p = tmp_path / "v.mha"
    p.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 64 64 64\nElementSpacing = 1 1 1\n"
                  b"ElementType = MET_UCHAR\nElementDataFile = /dev/zero\n")
    with pytest.raises(VolumeInputError, match="detached data file"):
        read_volume(p)


def test_nifti_claims_and_zero_spacing(tmp_path):
    from tests.reliability.inputs import _nifti_claiming, _set_nifti_pixdim

    with pytest.raises(VolumeInputError, match="max_volume_voxels"):
        read_volume(_nifti_claiming(tmp_path / "big.nii.gz", (1024, 1024, 512)))
    zero = tmp_path / "zero.nii.gz"
    shutil.copy(NIFTI, zero)
    _set_nifti_pixdim(zero, (0.0, 3.0, 3.0))
    with pytest.raises(VolumeInputError, match="no valid voxel spacing"):
        read_volume(zero)


def test_model_grid_limit_before_allocation():
    img = sitk.Image([64, 64, 64], sitk.sitkFloat32)
    img.SetSpacing([100.0, 100.0, 100.0])  # a 6.4 m cube: 2133^3 voxels at 3 mm
    with pytest.raises(VolumeInputError, match="max_grid_voxels"):
        model_grid(img, VolumeConfig())


def test_label_map_checks(tmp_path):
    from medkit.ct.images import check_label_map, volume_size

    size = volume_size(NIFTI)
    assert size == (122, 101, 30) and volume_size(DICOM) == (512, 512, 20)
    check_label_map(NIFTI_SEG, size)  # a real organ label map on its image's grid
    small = sitk.Image([10, 10, 10], sitk.sitkUInt8)
    small.SetSpacing([3.0, 3.0, 3.0])
    sitk.WriteImage(small, str(tmp_path / "small.nii.gz"))
    with pytest.raises(VolumeInputError, match="does not match"):
        check_label_map(tmp_path / "small.nii.gz", size)
    frac = sitk.Image([10, 10, 10], sitk.sitkFloat32) + 0.5
    frac.SetSpacing([3.0, 3.0, 3.0])
    sitk.WriteImage(frac, str(tmp_path / "frac.nii.gz"))
    with pytest.raises(VolumeInputError, match="integer labels"):
        check_label_map(tmp_path / "frac.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"junk")
    with pytest.raises(VolumeInputError, match="cannot read"):
        check_label_map(tmp_path / "junk.nii.gz")
