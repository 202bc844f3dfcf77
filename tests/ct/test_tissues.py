"""Segments that need no learned model (medkit/ct/tissues.py): body outline, lungs with the
emphysema index, dense bone; checked against the TotalSegmentator reference masks of the committed
samples and on a phantom that holds both lung-like air and pure gas."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medkit.ct.config import ORGANS, SEGMENT_LABELS, TISSUES, TissueConfig, VolumeConfig
from medkit.ct.model import add_tissue_labels
from medkit.ct.tissues import segment_tissues
from medkit.ct.images import read_volume, to_model_grid
from tests.ct.samples import DICOM, DICOM_SEG, NIFTI, NIFTI_SEG

TS_LUNG = (10, 11, 12, 13, 14)  # TotalSegmentator v2 lung lobes
TS_SOFT = (1, 2, 3, 4, 5, 6, 7, 52)  # spleen, kidneys, gallbladder, liver, stomach, pancreas, aorta
TS_STOMACH, TS_COLON = 6, 20


def _run(path, seg_path):
    vol = read_volume(path)
    arr, ref = to_model_grid(vol.image, VolumeConfig())
    res = segment_tissues(vol.image, arr, ref, VolumeConfig())
    truth = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(seg_path)), vol.image, sitk.Transform(),
                                                 sitk.sitkNearestNeighbor))
    return vol, res, truth


@pytest.fixture(scope="module")
def nifti():
    return _run(NIFTI, NIFTI_SEG)


@pytest.fixture(scope="module")
def dicom():
    return _run(DICOM, DICOM_SEG)


def test_lungs_match_reference_lobes(nifti):
    vol, res, truth = nifti
    lungs, ref = res.masks["lungs"], np.isin(truth, TS_LUNG)
    dice = 2 * (lungs & ref).sum() / (lungs.sum() + ref.sum())
    print(f"\nlungs vs TotalSegmentator lobes: Dice {dice:.3f}, {lungs.sum() * vol.voxel_ml:.1f} vs "
          f"{ref.sum() * vol.voxel_ml:.1f} mL")
    assert dice > 0.9
    m = res.measurements["lungs"]
    assert m["volume_ml"] == pytest.approx(ref.sum() * vol.voxel_ml, rel=0.05)
    hu = sitk.GetArrayFromImage(vol.image)[lungs]
    assert m["emphysema_index_pct"] == pytest.approx(100 * (hu < -950).mean(), abs=0.05)
    assert m["mean_hu"] == pytest.approx(float(hu.mean()), abs=0.1)
    assert m["truncated"]  # lung bases only: the lungs run out of the volume


def test_bowel_and_stomach_gas_are_not_lung(dicom, nifti):
    vol, res, truth = dicom
    hu = sitk.GetArrayFromImage(vol.image)
    gas_ml = ((hu < -400) & np.isin(truth, (TS_STOMACH, TS_COLON))).sum() * vol.voxel_ml
    assert gas_ml > 20  # the DICOM sample has gas in stomach and colon ...
    assert not np.isin(truth, TS_LUNG).any() and "lungs" not in res.measurements  # ... and no lung
    vol, res, truth = nifti
    assert (res.masks["lungs"] & (truth == TS_COLON)).sum() == 0


def test_body_holds_every_structure_and_bone_is_bone(nifti):
    vol, res, truth = nifti
    assert ((truth > 0) & ~res.masks["body"]).sum() == 0
    bone = res.masks["bone"]
    assert bone.sum() * vol.voxel_ml == pytest.approx(res.measurements["bone"]["volume_ml"], abs=0.1)
    assert (truth[bone] == 0).mean() < 0.1  # nearly all in labelled (skeletal) structures
    assert np.isin(truth[bone], TS_SOFT).mean() < 0.05  # not soft organs


def _phantom():
    """A 'body' of water holding a lung-like region (air with 20 % tissue strands) and a gas pocket."""
    rng = np.random.default_rng(0)
    a = np.full((40, 60, 60), -1000.0, np.float32)  # (Z, Y, X) outside air
    a[:, 8:52, 8:52] = 40.0  # soft tissue
    lung = np.where(rng.random((40, 16, 16)) < 0.8, -900.0, -600.0) + rng.normal(0, 20, (40, 16, 16))
    a[:, 12:28, 12:28] = lung  # 40 x 16 x 16 voxels at 2 mm: 82 mL
    a[10:30, 32:44, 32:44] = -1000.0 + rng.normal(0, 15, (20, 12, 12))  # gas: 23 mL
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((2.0, 2.0, 2.0))
    return img


def test_phantom_lung_kept_gas_rejected():
    img = _phantom()
    arr, ref = to_model_grid(img, VolumeConfig())
    res = segment_tissues(img, arr, ref, VolumeConfig())
    lungs = res.masks["lungs"]
    assert lungs[:, 12:28, 12:28].mean() > 0.9 and lungs[10:30, 32:44, 32:44].sum() == 0
    assert res.measurements["lungs"]["volume_ml"] == pytest.approx(40 * 16 * 16 * 0.008, rel=0.05)
    assert res.measurements["lungs"]["emphysema_index_pct"] < 5  # -900 HU air + strands: little below -950
    # with a stricter parenchyma rule the lung-like region is rejected too: the rule decides
    strict = segment_tissues(img, arr, ref, VolumeConfig(), TissueConfig(lung_min_parenchyma=1.0))
    assert "lungs" not in strict.measurements


def test_tissue_labels_fill_only_free_voxels():
    organs = np.zeros((5, 6, 7), np.uint8)
    organs[1:3, 1:3, 1:3] = 1
    labels = sitk.GetImageFromArray(organs)
    masks = {name: np.ones(organs.shape, bool) for name in TISSUES}  # every voxel claimed by all
    masks["lungs"][:] = False
    masks["lungs"][0] = True
    out = sitk.GetArrayFromImage(add_tissue_labels(labels, masks, SEGMENT_LABELS))
    assert (out[organs == 1] == 1).all()  # organ voxels keep their values
    assert (out[0] == SEGMENT_LABELS["lungs"]).all()
    assert (out[(organs == 0) & (np.arange(5)[:, None, None] > 0)] == SEGMENT_LABELS["bone"]).all()
    assert SEGMENT_LABELS["lungs"] == len(ORGANS) + 1 and [SEGMENT_LABELS[o] for o in ORGANS] == list(range(1, 9))


def test_bad_thresholds_raise():
    with pytest.raises(ValueError, match="lung_hu"):
        TissueConfig(lung_hu=100.0)
