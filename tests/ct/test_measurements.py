"""Organ measurements and the threshold rules (cited in medkit/ct/measurements.py)."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from medkit.ct.config import ORGANS, TOTALSEG_LABELS
from medkit.ct.labeler import label_ct_report
from medkit.ct.measurements import (HEPATOMEGALY_ML, SPLENOMEGALY_ML, STEATOSIS_HU, OrganMeasurement,
                                    contrast_phase, findings_from_measurements, measure_organs)
from medkit.ct.images import read_mask, read_volume
from tests.ct.samples import NIFTI, NIFTI_SEG


def _m(organ, ml, hu=55.0, truncated=False):
    return OrganMeasurement(organ, ml, hu, hu, 10.0, int(ml * 100), (100.0, 100.0, 100.0), truncated)


def _status(findings, name):
    return next(f for f in findings if f["name"] == name)


def test_reference_mask_measurements():
    v = read_volume(NIFTI)
    mask = read_mask(NIFTI_SEG, v.image, TOTALSEG_LABELS, ORGANS)
    ms = measure_organs(mask, v.image, ORGANS)
    n_liver = int((sitk.GetArrayFromImage(sitk.ReadImage(str(NIFTI_SEG))) == 5).sum())
    assert ms["liver"].voxels == n_liver
    assert ms["liver"].volume_ml == pytest.approx(n_liver * 0.027, abs=0.1)
    assert ms["liver"].truncated  # 30 slices: the liver runs out of the volume
    assert 0 < ms["liver"].mean_hu < 200  # soft tissue
    assert ms["aorta"].mean_hu < 100  # blood at about 40 HU: this sample is unenhanced
    f = findings_from_measurements(ms)
    assert contrast_phase(ms) == "unenhanced"
    assert _status(f, "Hepatomegaly")["status"] == "not assessable"  # partial liver below the threshold
    steatosis = _status(f, "Hepatic Steatosis")
    assert steatosis["value"] == ms["liver"].mean_hu
    assert steatosis["status"] == ("positive" if ms["liver"].mean_hu < STEATOSIS_HU else "negative")


@pytest.mark.parametrize("liver_ml,truncated,status", [
    (HEPATOMEGALY_ML + 100, False, "positive"), (HEPATOMEGALY_ML + 100, True, "positive"),
    (1500, False, "negative"), (1500, True, "not assessable")])
def test_hepatomegaly_rule(liver_ml, truncated, status):
    f = findings_from_measurements({"liver": _m("liver", liver_ml, truncated=truncated)})
    h = _status(f, "Hepatomegaly")
    assert h["status"] == status and h["value"] == liver_ml and h["threshold"] == HEPATOMEGALY_ML
    assert "Surasi" in h["reference"]


def test_splenomegaly_rule_is_strict_and_missing_spleen_not_assessable():
    assert _status(findings_from_measurements({"spleen": _m("spleen", SPLENOMEGALY_ML)}), "Splenomegaly")["status"] == "negative"
    assert _status(findings_from_measurements({"spleen": _m("spleen", 400)}), "Splenomegaly")["status"] == "positive"
    assert _status(findings_from_measurements({}), "Splenomegaly")["status"] == "not assessable"


@pytest.mark.parametrize("liver_hu,aorta_hu,status", [
    (STEATOSIS_HU - 10, 45, "positive"), (60, 45, "negative"), (30, 180, "not assessable"), (30, None, "not assessable")])
def test_steatosis_only_on_unenhanced_ct(liver_hu, aorta_hu, status):
    ms = {"liver": _m("liver", 1500, hu=liver_hu)}
    if aorta_hu is not None:
        ms["aorta"] = _m("aorta", 80, hu=aorta_hu)
    assert _status(findings_from_measurements(ms), "Hepatic Steatosis")["status"] == status


@pytest.mark.parametrize("text,positive", [
    ("The liver is enlarged, measuring 2.4 L. No ascites.", {"Hepatomegaly"}),
    ("No splenomegaly. Fatty liver.", {"Hepatic Steatosis"}),
    ("Hepatic cyst in segment VII; gallstones.", {"Liver Cyst", "Cholelithiasis"}),
    ("Unremarkable liver and spleen. Without free fluid.", set()),
])
def test_ct_report_labeler(text, positive):
    labels = label_ct_report(text)
    assert {k for k, v in labels.items() if v} == positive
