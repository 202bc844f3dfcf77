"""Plausibility checks an organ measurement passes before the report states it.

An organ segmentation trained on few volumes can label bone as liver (issue 18: a "liver" of
525 HU) or leave a 1.5 mL fragment of a kidney. Each measured organ is checked against what
anatomy and physics allow (ranges and their sources in ``medkit.ct.config.PlausibilityConfig``):

1. **attenuation**: the organ's mean HU within its range for the contrast phase (from the aorta,
   once the aorta itself passed; both phases' bounds when the phase is unknown), and for solid
   organs nearly all voxels at soft-tissue attenuation (not fat, air or bone taken in);
2. **volume / length**: within the cited range; a lower bound applies only to an organ wholly
   inside the scanned range (a truncated organ's volume is a lower bound itself);
3. **position**: inside the body outline (``medkit.ct.tissues``), on its side of the body's midline,
   kidneys behind the body's centre;
4. **one main connected component** holding most of the organ's voxels;
5. **the model's own confidence**: mean softmax probability over the organ's voxels.

An organ that fails any check is *not measured reliably*: the report names it with the reasons,
``warnings`` names it, the findings that depend on it are *not assessable*, and its segment stays
in the label volume (``reliable: false`` in the measurements) so that the user can correct it.
Position, components and confidence are computed on the model grid (3 mm), which the label volume
is resampled from.

    medkit generate VOLUME --json     # measurements.<organ>.reliable / implausible: the checks' outcome
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from medkit.ct.config import PlausibilityConfig
from medkit.ct.measurements import contrast_phase

logger = logging.getLogger(__name__)


def organ_geometry(labels_model: np.ndarray, body_model: np.ndarray, ref, organs: tuple[str, ...]) -> dict[str, dict]:
    """Per organ on the model grid ((X, Y, Z) label array, geometry ``ref``): share of voxels in the
    largest connected component and inside the body, and the centroid's offset (mm) from the
    body's centre towards the patient's right and anterior (body centre taken over the organ's slab
    along the grid's third axis)."""
    out: dict[str, dict] = {}
    objs = ndimage.find_objects(labels_model)
    full = np.ones((3, 3, 3), bool)
    for k, organ in enumerate(organs, 1):
        if k > len(objs) or objs[k - 1] is None:
            continue
        sl = objs[k - 1]
        m = labels_model[sl] == k
        n = int(m.sum())
        lab, n_comp = ndimage.label(m, structure=full)
        main = int(np.bincount(lab.ravel())[1:].max()) if n_comp else 0
        inside = int((body_model[sl] & m).sum())
        idx = np.argwhere(labels_model == k).mean(0)
        slab = body_model[:, :, sl[2]]
        if slab.any():
            b = np.argwhere(slab).mean(0)
            b[2] += sl[2].start
        else:
            b = idx
        p_org = np.array(ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in idx]))  # LPS
        p_body = np.array(ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in b]))
        d = p_org - p_body
        out[organ] = {"voxels_model": n, "main_component": round(main / n, 3), "inside_body": round(inside / n, 3),
                      "right_mm": round(float(-d[0]), 1), "anterior_mm": round(float(-d[1]), 1)}
    return out


def _fmt(lo, hi) -> str:
    return f"{lo:g}..{hi:g}"


def organ_reasons(organ: str, m, geometry: dict | None, confidence: float | None, phase: str,
                  cfg: PlausibilityConfig) -> list[str]:
    """Why ``organ``'s measurement ``m`` (an ``OrganMeasurement``) is implausible; [] when it passes."""
    why: list[str] = []
    r = cfg.ranges.get(organ)
    if r is not None and m.mean_hu is not None:
        if phase == "unenhanced":
            lo, hi, what = *r.hu_unenhanced, "on unenhanced CT"
        elif phase == "contrast-enhanced":
            lo, hi, what = *r.hu_enhanced, "on contrast-enhanced CT"
        else:
            lo, hi = min(r.hu_unenhanced[0], r.hu_enhanced[0]), max(r.hu_unenhanced[1], r.hu_enhanced[1])
            what = "in any contrast phase"
        if not lo <= m.mean_hu <= hi:
            why.append(f"mean attenuation {m.mean_hu:g} HU is outside {_fmt(lo, hi)} HU possible for the {organ} {what}")
    if r is not None and r.parenchymal and m.soft_tissue_share is not None \
            and m.soft_tissue_share < cfg.min_soft_tissue_share:
        lo, hi = cfg.soft_tissue_hu
        why.append(f"only {100 * m.soft_tissue_share:.1f} % of its voxels are at soft-tissue attenuation "
                   f"({_fmt(lo, hi)} HU; at least {100 * cfg.min_soft_tissue_share:.0f} % expected of a solid organ)")
    if r is not None:
        vlo, vhi = r.volume_ml
        if vhi is not None and m.volume_ml > vhi:
            why.append(f"volume {m.volume_ml:g} mL is above {vhi:g} mL")
        if vlo is not None and not m.truncated and m.volume_ml < vlo:
            why.append(f"volume {m.volume_ml:g} mL is below {vlo:g} mL for a whole {organ}")
        llo, lhi = r.length_mm
        ext = np.asarray(m.extent_mm, dtype=float)
        if lhi is not None and ext.max() > lhi:  # an axis extent never exceeds the organ's length
            why.append(f"extent {ext.max():g} mm is longer than {lhi:g} mm")
        diag = float(np.sqrt((ext ** 2).sum()))  # the box diagonal never falls short of it
        if llo is not None and not m.truncated and diag < llo:
            why.append(f"size {diag:.0f} mm (box diagonal) is below the {llo:g} mm length of a whole {organ}")
    if geometry is not None:
        if geometry["inside_body"] < cfg.min_inside_body:
            why.append(f"only {100 * geometry['inside_body']:.0f} % of it lies inside the body outline")
        if r is not None and r.side == "right" and geometry["right_mm"] <= 0:
            why.append(f"it lies {-geometry['right_mm']:g} mm left of the body's midline (expected on the right)")
        if r is not None and r.side == "left" and geometry["right_mm"] >= 0:
            why.append(f"it lies {geometry['right_mm']:g} mm right of the body's midline (expected on the left)")
        if r is not None and r.posterior and geometry["anterior_mm"] >= 0:
            why.append(f"it lies {geometry['anterior_mm']:g} mm in front of the body's centre (expected behind)")
        if geometry["main_component"] < cfg.min_main_component:
            why.append(f"it is fragmented: its largest connected part holds {100 * geometry['main_component']:.0f} % "
                       f"of its voxels (at least {100 * cfg.min_main_component:.0f} % expected)")
    if confidence is not None and confidence < cfg.min_confidence:
        why.append(f"the model's mean confidence over its voxels is {confidence:.2f} (below {cfg.min_confidence:g})")
    return why


def check_organs(measures: dict, geometry: dict[str, dict], confidence: dict[str, float],
                 cfg: PlausibilityConfig | None = None) -> tuple[str, dict[str, list[str]]]:
    """(contrast phase, {organ: reasons}) for every measured organ; reasons [] = plausible.

    The aorta is checked first with bounds that hold in any phase; the phase comes from a plausible
    aorta only, and then sets the attenuation ranges of the other organs."""
    cfg = cfg or PlausibilityConfig()
    reasons: dict[str, list[str]] = {}
    if "aorta" in measures:
        reasons["aorta"] = organ_reasons("aorta", measures["aorta"], geometry.get("aorta"), confidence.get("aorta"),
                                         "unknown", cfg)
    phase = contrast_phase({o: m for o, m in measures.items() if o == "aorta" and not reasons["aorta"]})
    for organ, m in measures.items():
        if organ != "aorta":
            reasons[organ] = organ_reasons(organ, m, geometry.get(organ), confidence.get(organ), phase, cfg)
    return phase, reasons

