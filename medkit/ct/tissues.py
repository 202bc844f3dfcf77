"""Segments and measurements that need no learned organ model: body outline, lungs, dense bone.

Thresholds and connectivity on the Hounsfield scale (values and sources in
``medkit.ct.config.TissueConfig``):

- **body**: the largest connected component above -500 HU (halfway between air and water), its
  holes filled slice by slice in the axial plane, so that the lungs and bowel gas count as inside
  the body and the air around it (and the table, a smaller component) does not.
- **lungs**: air below -400 HU inside the body, as connected components; a component is lung when
  it holds at least 10 mL and at least 60 % of its voxels lie in the parenchyma band -950..-500 HU
  (lung parenchyma is air mixed with tissue and blood; stomach and bowel gas is pure air with a
  partial-volume rim). The band is measured on the original voxels: on the 3 mm grid a mottled
  bowel content averages out into lung-like values. Airways connected to the lungs are included (no
  airway removal, unlike Hu et al. 2001). Measured: volume and the **emphysema index**, the share
  of lung voxels below -950 HU (Gevenois et al., Am J Respir Crit Care Med 1996;154:187-192),
  valid for thin-section, full-inspiration, unenhanced CT; thick sections or smooth kernels lower it.
- **bone**: body voxels at or above +300 HU (dense bone, with calcifications, metal and dense
  iodinated contrast, which share that attenuation).

Connectivity runs on the model grid (3 mm, cheap for any input size); the masks are then refined on
the ORIGINAL grid by the same thresholds, and all volumes and attenuations are measured there.
In the label volume these segments take the values after the organs (``SEGMENT_LABELS``: lungs 9,
bone 10, body 11) and only voxels no organ claims; their measured volumes come from the full masks.

    python -m medkit.ct.tissues medkit/data/samples/ct/totalsegmentator/example_ct_sm.nii.gz
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from medkit.ct.config import TissueConfig, VolumeConfig
from medkit.ct.images import array_to_image, labels_to_original, read_volume, to_model_grid

logger = logging.getLogger(__name__)

REFERENCES = {
    "body": "largest connected component above -500 HU, holes filled per axial slice (Hounsfield scale: "
            "Kalender, Computed Tomography, 3rd ed., 2011)",
    "lungs": "air below -400 HU inside the body, lung components by size and median attenuation (cf. Hu et al., "
             "IEEE Trans Med Imaging 2001;20:490-498); emphysema index below -950 HU (Gevenois et al., "
             "Am J Respir Crit Care Med 1996;154:187-192; Lynch et al., Radiology 2015;277:192-205)",
    "bone": "body voxels at or above +300 HU (above the 130 HU calcium threshold, Agatston et al., J Am Coll "
            "Cardiol 1990;15:827-832)",
}

# in-plane connectivity only: holes are filled per axial slice (axis 2 of the model grid is S)
_AXIAL = np.zeros((3, 3, 3), bool)
_AXIAL[:, :, 1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


@dataclass
class TissueResult:
    body_model: np.ndarray  # (X, Y, Z) bool, model grid: body outline with holes filled
    masks: dict[str, np.ndarray]  # name -> (Z, Y, X) bool on the original grid (full masks)
    measurements: dict[str, dict]  # name -> volume_ml, mean_hu, ... (lungs: emphysema_index_pct)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def model_grid_masks(hu: np.ndarray, voxel_ml: float, cfg: TissueConfig) -> tuple[np.ndarray, np.ndarray]:
    """Body (holes filled) and the candidate lung components (labels 1..n, each at least
    ``lung_min_ml``) on the model grid; ``hu`` (X, Y, Z) in HU."""
    body = _largest_component(hu > cfg.body_hu)
    body = ndimage.binary_fill_holes(body, structure=_AXIAL)
    air, n = ndimage.label(body & (hu < cfg.lung_hu))
    candidates = np.zeros(air.shape, np.uint8)
    if n:
        sizes = np.bincount(air.ravel())[1:]
        big = np.nonzero(sizes * voxel_ml >= cfg.lung_min_ml)[0] + 1
        big = big[np.argsort(-sizes[big - 1])][:250]  # 250 codes fit the uint8 code volume
        for j, k in enumerate(big, 1):
            candidates[air == k] = j
    return body, candidates


def _touches_edge(mask: np.ndarray) -> bool:
    return any(mask.take(0, axis=a).any() or mask.take(-1, axis=a).any() for a in range(mask.ndim))


def tissue_codes(model01: np.ndarray, ref, vcfg: VolumeConfig, cfg: TissueConfig,
                 max_code: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """(body mask, code volume) on the model grid, ``model01`` (X, Y, Z) 0..1 as ``to_model_grid``
    returns it. Codes: 0 outside, 1 = one model voxel around the body (refined by threshold on the
    original grid), 2 = body, 3 + j = in or next to lung candidate j (j < ``max_code - 2``)."""
    hu_model = model01 * (vcfg.hu_max - vcfg.hu_min) + vcfg.hu_min
    body_m, cand = model_grid_masks(hu_model, float(np.prod(ref.GetSpacing())) / 1000.0, cfg)
    cand[cand > max_code - 2] = 0  # the largest candidates keep a code (sorted by size)
    code = np.zeros(body_m.shape, np.uint8)
    code[ndimage.binary_dilation(body_m, structure=_AXIAL)] = 1
    code[body_m] = 2
    grown = ndimage.grey_dilation(cand, size=(3, 3, 3)) * body_m  # one model voxel of margin
    code[grown > 0] = 2 + grown[grown > 0]
    return body_m, code


def tissues_from_codes(c: np.ndarray, hu_image, body_m: np.ndarray, cfg: TissueConfig) -> TissueResult:
    """Masks and measurements on the original grid from the code volume ``c`` ((Z, Y, X), the
    codes of :func:`tissue_codes` mapped onto ``hu_image``'s grid)."""
    hu = sitk.GetArrayViewFromImage(hu_image)
    voxel_ml = float(np.prod(hu_image.GetSpacing())) / 1000.0
    air = c >= 3
    air[air] = hu[air] < cfg.lung_hu
    vals, labs = hu[air], c[air].astype(np.int64) - 2
    band = (vals >= cfg.emphysema_hu) & (vals < cfg.body_hu)
    total = np.bincount(labs, minlength=int(c.max()) + 1)
    share = np.bincount(labs, weights=band, minlength=len(total)) / np.maximum(total, 1)
    lung_codes = np.nonzero((share >= cfg.lung_min_parenchyma) & (total > 0))[0]
    lungs = np.zeros(hu.shape, bool)
    if len(lung_codes):
        lungs[air] = np.isin(labs, lung_codes)
    body = c >= 2
    rim = c == 1
    body[rim] = hu[rim] > cfg.body_hu
    bone = body.copy()
    bone[body] = hu[body] >= cfg.bone_hu
    out: dict[str, dict] = {}
    for name, mask in (("body", body), ("lungs", lungs), ("bone", bone)):
        n = int(mask.sum())
        if n == 0:
            continue
        m = {"volume_ml": round(n * voxel_ml, 1), "voxels": n, "truncated": _touches_edge(mask),
             "method": "threshold", "reference": REFERENCES[name], "reliable": True}
        if name == "lungs":
            v = np.asarray(hu[mask], dtype=np.float32)
            m["mean_hu"] = round(float(v.mean()), 1)
            m["emphysema_index_pct"] = round(100.0 * float((v < cfg.emphysema_hu).mean()), 1)
            m["emphysema_threshold_hu"] = cfg.emphysema_hu
        out[name] = m
    return TissueResult(body_m, {"body": body, "lungs": lungs, "bone": bone}, out)


def segment_tissues(hu_image, model01: np.ndarray, ref, vcfg: VolumeConfig, cfg: TissueConfig | None = None
                    ) -> TissueResult:
    """Body, lungs and dense bone of ``hu_image`` (SimpleITK, HU, original grid), with connectivity
    computed on the model-grid array ``model01`` ((X, Y, Z), 0..1 as ``to_model_grid`` returns it,
    geometry ``ref``). ``medkit.ct.segmentation.segment`` does the same in the organs' resampling pass."""
    cfg = cfg or TissueConfig()
    body_m, code = tissue_codes(model01, ref, vcfg, cfg)
    c = sitk.GetArrayFromImage(labels_to_original(array_to_image(code, ref), hu_image))  # (Z, Y, X)
    return tissues_from_codes(c, hu_image, body_m, cfg)


def main(argv: list[str] | None = None) -> int:
    for p in argv if argv is not None else sys.argv[1:]:
        vol = read_volume(p)
        arr, ref = to_model_grid(vol.image, VolumeConfig())
        res = segment_tissues(vol.image, arr, ref, VolumeConfig())
        for name, m in res.measurements.items():
            print(p, name, {k: v for k, v in m.items() if k != "reference"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
