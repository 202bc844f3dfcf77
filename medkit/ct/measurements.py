"""Organ measurements from a label volume and the findings they support, with cited thresholds.

Measurements (on the ORIGINAL grid: the written segmentation and the input's HU):

- ``volume_ml``: voxel count x voxel volume.
- ``mean_hu`` / ``median_hu`` / ``std_hu``: attenuation inside the organ after a one-voxel
  erosion (keeps the partial-volume rim out, as a region of interest inside the organ would);
  the whole mask when erosion leaves fewer than 50 voxels.
- ``extent_mm``: bounding-box size along the image axes; ``truncated``: the organ touches the
  edge of the scanned volume, so its volume is a lower bound.

Findings (``status``: "positive", "negative" or "not assessable"; the value and the threshold
are always stated):

- Hepatomegaly: liver volume >= 2,000 mL. Surasi et al., "Utility of longitudinal measurement of
  the liver with ultrasound in comparison to CT liver volume in assessing hepatomegaly",
  Ultrasound Q 2019;35(2):198-203 (hepatomegaly defined as CT liver volume >= 2,000 mL); normal
  livers measured 1.51 +- 0.25 L and enlarged livers 2.32 +- 0.75 L in Linguraru et al., "Assessing
  hepatomegaly: automated volumetric analysis of the liver", Acad Radiol 2012;19(5):588-598 (who
  recommend body-surface-area normalised cut-offs, 0.92 L/m2 for mild hepatomegaly, when BSA is
  known; the image alone does not give BSA).
- Splenomegaly: spleen volume > 314.5 mL, the upper end of the normal range (107.2-314.5 cm3, mean
  214.6 cm3, 140 adults, no variation with age, gender or body habitus) in Prassopoulos et al.,
  "Determination of normal splenic volume on computed tomography in relation to age, gender and
  body habitus", Eur Radiol 1997;7(2):246-248.
- Hepatic steatosis (moderate to severe, >= 30 % fat): liver attenuation < 48 HU on UNENHANCED CT,
  100 % specific (276/276), sensitivity 53.8 % against biopsy in Pickhardt et al., "Specificity of
  unenhanced CT for non-invasive diagnosis of hepatic steatosis", Eur Radiol 2012;22(5):1075-1082.
  Mean liver attenuation in 3,357 asymptomatic adults was 58.8 +- 10.8 HU (Boyce et al., AJR
  2010;194(3):623-628). Contrast raises liver attenuation, so the rule is applied only when the
  aorta is measured below 100 HU: unenhanced blood is about 40-50 HU (its attenuation follows the
  haematocrit; New & Aronow, Radiology 1976;121(3):635-640), contrast-enhanced aorta well above
  150 HU. Without an aorta measurement the contrast phase is unknown: not assessable.

A finding is "not assessable" when its organ was not found, when its organ failed the plausibility
checks (``medkit.ct.plausibility``: not measured reliably), or when it is cut off by the edge of
the volume and the partial value does not already exceed the threshold. Steatosis needs a
plausible aorta too (the contrast phase).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

logger = logging.getLogger(__name__)

HEPATOMEGALY_ML = 2000.0
SPLENOMEGALY_ML = 314.5
STEATOSIS_HU = 48.0
CONTRAST_AORTA_HU = 100.0
MIN_ORGAN_ML = 1.0  # smaller segments are noise, not an organ

REFERENCES = {
    "Hepatomegaly": "Surasi et al., Ultrasound Q 2019;35:198-203; Linguraru et al., Acad Radiol 2012;19:588-598",
    "Splenomegaly": "Prassopoulos et al., Eur Radiol 1997;7:246-248",
    "Hepatic Steatosis": "Pickhardt et al., Eur Radiol 2012;22:1075-1082; Boyce et al., AJR 2010;194:623-628",
}


@dataclass
class OrganMeasurement:
    organ: str
    volume_ml: float
    mean_hu: float | None
    median_hu: float | None
    std_hu: float | None
    voxels: int
    extent_mm: tuple[float, float, float]
    truncated: bool
    soft_tissue_share: float | None = None  # share of the measured voxels in the soft-tissue band

    def to_json(self) -> dict:
        d = asdict(self)
        d["extent_mm"] = list(self.extent_mm)
        return d


def measure_organs(labels, hu, organs: tuple[str, ...],
                   soft_tissue_hu: tuple[float, float] = (-100.0, 300.0)) -> dict[str, OrganMeasurement]:
    """Measurements of each organ present in ``labels`` (SimpleITK uint8, value k = organs[k-1])
    against ``hu`` (SimpleITK float HU on the same grid); ``soft_tissue_hu``: the band whose share
    of the measured voxels is reported (``PlausibilityConfig.soft_tissue_hu``)."""
    if labels.GetSize() != hu.GetSize():
        raise ValueError(f"label volume {labels.GetSize()} and CT {hu.GetSize()} differ in size")
    lab = sitk.GetArrayViewFromImage(labels)  # (Z, Y, X)
    img = sitk.GetArrayViewFromImage(hu)
    spacing = np.array(hu.GetSpacing())  # (x, y, z)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out: dict[str, OrganMeasurement] = {}
    objs = ndimage.find_objects(np.asarray(lab))
    for k, organ in enumerate(organs, 1):
        if k > len(objs) or objs[k - 1] is None:
            continue
        sl = objs[k - 1]
        m = np.asarray(lab[sl]) == k
        n = int(m.sum())
        if n * voxel_ml < MIN_ORGAN_ML:
            continue
        core = ndimage.binary_erosion(m, iterations=1)
        vals = np.asarray(img[sl])[core if core.sum() >= 50 else m]
        ext = np.array([s.stop - s.start for s in sl][::-1]) * spacing  # (x, y, z) mm
        shape = lab.shape
        truncated = any(s.start == 0 or s.stop == n_ax for s, n_ax in zip(sl, shape))
        share = float(((vals >= soft_tissue_hu[0]) & (vals < soft_tissue_hu[1])).mean())
        out[organ] = OrganMeasurement(organ, round(n * voxel_ml, 1), round(float(vals.mean()), 1),
                                      round(float(np.median(vals)), 1), round(float(vals.std()), 1), n,
                                      tuple(round(float(e), 1) for e in ext), bool(truncated), round(share, 3))
    return out


def _finding(name, status, value, unit, threshold, rule, evidence) -> dict:
    return {"name": name, "status": status, "value": value, "unit": unit, "threshold": threshold,
            "rule": rule, "evidence": evidence, "reference": REFERENCES[name], "source": "measurement"}


def _unreliable(organ: str, reasons: list[str]) -> str:
    return f"{organ} could not be measured reliably ({'; '.join(reasons)})"


def _size_finding(name: str, organ: str, limit: float, m: OrganMeasurement | None, strict: bool,
                  unreliable: dict[str, list[str]]) -> dict:
    rule = f"{organ} volume {'>' if strict else '>='} {limit:g} mL"
    if unreliable.get(organ):
        return _finding(name, "not assessable", None, "mL", limit, rule, _unreliable(organ, unreliable[organ]))
    if m is None:
        return _finding(name, "not assessable", None, "mL", limit, rule, f"{organ} not found by the segmentation")
    above = m.volume_ml > limit if strict else m.volume_ml >= limit
    if above:
        part = " (partial: extends beyond the scanned range)" if m.truncated else ""
        return _finding(name, "positive", m.volume_ml, "mL", limit, rule,
                        f"{organ} volume {m.volume_ml:g} mL{part}, above {limit:g} mL")
    if m.truncated:
        return _finding(name, "not assessable", m.volume_ml, "mL", limit, rule,
                        f"{organ} extends beyond the scanned range: {m.volume_ml:g} mL measured is a lower bound")
    return _finding(name, "negative", m.volume_ml, "mL", limit, rule,
                    f"{organ} volume {m.volume_ml:g} mL, not above {limit:g} mL")


def contrast_phase(measures: dict[str, OrganMeasurement]) -> str:
    """"unenhanced", "contrast-enhanced" or "unknown" from the aorta's mean attenuation."""
    aorta = measures.get("aorta")
    if aorta is None or aorta.mean_hu is None:
        return "unknown"
    return "contrast-enhanced" if aorta.mean_hu >= CONTRAST_AORTA_HU else "unenhanced"


def findings_from_measurements(measures: dict[str, OrganMeasurement],
                               unreliable: dict[str, list[str]] | None = None) -> list[dict]:
    """Hepatomegaly, splenomegaly and steatosis decided by the cited thresholds (module docstring).

    ``unreliable``: organ -> reasons it failed the plausibility checks; those organs' measurements
    are ignored and the findings that depend on them are "not assessable"."""
    unreliable = {o: r for o, r in (unreliable or {}).items() if r}
    measures = {o: m for o, m in measures.items() if o not in unreliable}
    liver = measures.get("liver")
    out = [_size_finding("Hepatomegaly", "liver", HEPATOMEGALY_ML, liver, strict=False, unreliable=unreliable),
           _size_finding("Splenomegaly", "spleen", SPLENOMEGALY_ML, measures.get("spleen"), strict=True,
                         unreliable=unreliable)]
    rule = f"liver mean attenuation < {STEATOSIS_HU:g} HU on unenhanced CT"
    phase = contrast_phase(measures)
    if "liver" in unreliable:
        out.append(_finding("Hepatic Steatosis", "not assessable", None, "HU", STEATOSIS_HU, rule,
                            _unreliable("liver", unreliable["liver"])))
    elif liver is None or liver.mean_hu is None:
        out.append(_finding("Hepatic Steatosis", "not assessable", None, "HU", STEATOSIS_HU, rule,
                            "liver not found by the segmentation"))
    elif phase != "unenhanced":
        why = ("contrast-enhanced scan (aorta %.0f HU)" % measures["aorta"].mean_hu if phase == "contrast-enhanced"
               else "contrast phase unknown (aorta " + ("could not be measured reliably" if "aorta" in unreliable
                                                     else "not found by the segmentation") + ")")
        out.append(_finding("Hepatic Steatosis", "not assessable", liver.mean_hu, "HU", STEATOSIS_HU, rule,
                            f"liver {liver.mean_hu:g} HU, but {why}: the HU rule holds for unenhanced CT only"))
    else:
        pos = liver.mean_hu < STEATOSIS_HU
        out.append(_finding("Hepatic Steatosis", "positive" if pos else "negative", liver.mean_hu, "HU", STEATOSIS_HU,
                            rule, f"liver mean attenuation {liver.mean_hu:g} HU on unenhanced CT "
                                  f"(aorta {measures['aorta'].mean_hu:g} HU), {'below' if pos else 'not below'} "
                                  f"{STEATOSIS_HU:g} HU"))
    return out
