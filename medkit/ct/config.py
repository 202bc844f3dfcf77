"""Typed configuration of the CT path: one place for every tunable number.

A CT model directory holds ``config.json`` (a serialised :class:`CTConfig`) beside
``model.safetensors`` (student tensors, and generator tensors once a site trained one), so a
model rebuilds from its directory alone. Same override syntax as the chest X-ray config::

    medkit train-ct --data manifest.jsonl --out runs/ct --set train.student_epochs=40
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medkit.core.config import ConfigFile, DistillConfig, GeneratorConfig, OptimConfig

#: Organs the student segments, in label order (label value = index + 1; 0 is background).
ORGANS = ("liver", "spleen", "kidney_right", "kidney_left", "gallbladder", "stomach", "pancreas", "aorta")

#: Segments measured by thresholds and connectivity alone (no learned model; ``medkit.ct.tissues``),
#: written into the label volume after the organs: label value = len(ORGANS) + index + 1.
TISSUES = ("lungs", "bone", "body")

#: Every value of the label volume MedKit writes: organs 1..8 (the student's classes, unchanged),
#: then the threshold segments 9..11. The MONAI Label app and the Slicer module name segments by it.
def segment_labels(organs: tuple[str, ...]) -> dict[str, int]:
    """Label value of every segment for a model segmenting ``organs``: organs first, then TISSUES."""
    return {name: value for value, name in enumerate(tuple(organs) + TISSUES, 1)}


SEGMENT_LABELS = segment_labels(ORGANS)

#: TotalSegmentator v2 label values of those organs (Wasserthal et al., Radiology: AI 2023; the
#: class map of the packaged sample masks ``example_seg*.nii.gz``).
TOTALSEG_LABELS = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4,
                   "stomach": 6, "pancreas": 7, "aorta": 52}

#: Findings the CT path knows (nodes of type "observation" in ``data/knowledge_ct.json``): the
#: student's label head predicts them, the report labeler reads them from reports.
CT_OBSERVATIONS = ("Hepatomegaly", "Splenomegaly", "Hepatic Steatosis", "Cirrhosis", "Liver Lesion",
                   "Liver Cyst", "Hemangioma", "Liver Metastasis", "Ascites", "Cholelithiasis",
                   "Renal Cyst", "Pancreatic Lesion")


@dataclass
class VolumeConfig:
    """Volume preprocessing: fixed orientation, model spacing, HU window."""

    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0)  # model grid in mm (x, y, z); 3 mm as
    # TotalSegmentator's "fast" model (Wasserthal et al. 2023): organ-level detail at CPU speed
    orientation: str = "RAS"  # axes of the model grid point to Right, Anterior, Superior (as Merlin's input)
    hu_min: float = -1000.0  # HU window mapped to 0..1 (Merlin's scaling, -1000..1000 HU)
    hu_max: float = 1000.0
    min_slices: int = 3  # fewer slices: not a volume (a 2D image)
    warn_slices: int = 20  # fewer slices: organs are cut off, measurements are partial (warning)

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be 3 positive numbers in mm, got {self.spacing}")
        if self.hu_max <= self.hu_min:
            raise ValueError(f"hu_max ({self.hu_max}) must be above hu_min ({self.hu_min})")
        if len(self.orientation) != 3:
            raise ValueError(f"orientation must be a 3-letter code such as 'RAS', got {self.orientation!r}")


@dataclass
class CTEncoderConfig:
    """3D student (MONAI SegResNet with a label head) and the frozen 3D teacher."""

    init_filters: int = 8  # SegResNet width at full resolution (levels: 8, 16, 32, 64 channels)
    blocks_down: tuple[int, ...] = (1, 2, 2, 4)
    blocks_up: tuple[int, ...] = (1, 1, 1)
    organs: tuple[str, ...] = ORGANS
    observations: tuple[str, ...] = CT_OBSERVATIONS
    tokens_grid: tuple[int, int, int] = (3, 3, 2)  # visual tokens = product (adaptive average pool)
    # sliding-window patch at model spacing (voxels): 48 x 48 x 14.4 cm, a whole abdominal cross-
    # section in one window. The student, trained on few volumes, leans on that context: with 96 x
    # 96 windows the DICOM sample's liver came out 22 % small, with 160 x 160 within 6 %.
    roi_size: tuple[int, int, int] = (160, 160, 48)
    sw_overlap: float = 0.25
    sw_batch_size: int = 1  # patches per forward: memory stays bounded for any volume size
    dropout: float = 0.1
    teacher: str = "astra"  # "astra" | "merlin": I3ResNet-152 weights package; "none": no teacher
    teacher_upsample: int = 2  # teacher sees the crop at 1.5 x 1.5 x 3 mm (Merlin's input spacing)

    def __post_init__(self) -> None:
        self.blocks_down, self.blocks_up = tuple(self.blocks_down), tuple(self.blocks_up)
        self.organs, self.observations = tuple(self.organs), tuple(self.observations)
        self.tokens_grid, self.roi_size = tuple(self.tokens_grid), tuple(self.roi_size)
        if len(self.blocks_up) != len(self.blocks_down) - 1:
            raise ValueError(f"blocks_up needs {len(self.blocks_down) - 1} entries, got {self.blocks_up}")
        f = 2 ** (len(self.blocks_down) - 1)
        if any(r % f for r in self.roi_size):
            raise ValueError(f"roi_size {self.roi_size} must be divisible by {f} (the encoder's stride)")
        if self.init_filters < 1 or self.init_filters % 4:
            raise ValueError(f"init_filters must be a positive multiple of 4 (group norm), got {self.init_filters}")
        if self.teacher not in ("astra", "merlin", "none"):
            raise ValueError(f"teacher must be 'astra', 'merlin' or 'none', got {self.teacher!r}")
        if not self.organs:
            raise ValueError("organs must not be empty")


@dataclass
class CTTrainConfig(OptimConfig):
    """Optimisation of the CT stages (teacher probe -> student -> generator); small batches of 3D crops."""

    batch_size: int = 2
    generator_batch_size: int = 2
    lr_encoder: float = 2e-3
    weight_decay: float = 1e-5
    warmup_steps: int = 10
    crops_per_volume: int = 4  # fixed, seeded crops per volume; teacher outputs computed once per crop
    crop_size: tuple[int, int, int] = (128, 128, 32)  # voxels at model spacing (smaller volumes are padded)
    teacher_probe_epochs: int = 50  # linear label head on frozen teacher features
    student_epochs: int = 60
    seg_weight: float = 1.0  # Dice + cross-entropy on the organ masks, where a study has them
    intensity_jitter: float = 0.05  # +- shift/scale of the 0..1 input during student training

    def __post_init__(self) -> None:
        self.crop_size = tuple(self.crop_size)
        if self.crops_per_volume < 1:
            raise ValueError(f"crops_per_volume must be >= 1, got {self.crops_per_volume}")


@dataclass
class TissueConfig:
    """Thresholds of the segments that need no learned model (``medkit.ct.tissues``).

    Properties of the Hounsfield scale, not of a trained model, so they are not stored in a model's
    ``config.json``. Hounsfield scale: air -1000, water 0, fat about -100 HU (Kalender, "Computed
    Tomography", 3rd ed., 2011)."""

    body_hu: float = -500.0  # body: largest connected component above it (halfway between air and
    # water), holes filled per axial slice so that lungs and bowel gas count as inside the body
    lung_hu: float = -400.0  # lungs: air inside the body below it. Lung parenchyma is about -850 HU and
    # soft tissue about +40 HU; Hu et al. (IEEE Trans Med Imaging 2001;20(6):490-498) threshold
    # between those two modes (chosen iteratively); MedKit fixes the threshold at -400 HU
    lung_min_parenchyma: float = 0.6  # an air component is lung when at least this share of its voxels
    # lies in the parenchyma band emphysema_hu..body_hu (-950..-500 HU): lung is air mixed with tissue
    # and blood (0.91-0.96 of the lung voxels of the committed samples), stomach and bowel gas is pure
    # air with a partial-volume rim (0.24-0.52 in the same volumes). MedKit's choice; a lung with
    # very severe emphysema (roughly 40 % of its voxels below -950 HU) is then taken for gas and left
    # unmeasured rather than mis-measured
    lung_min_ml: float = 10.0  # smaller air components are small-bowel gas, skin folds or noise (MedKit's choice)
    emphysema_hu: float = -950.0  # emphysema index = share of lung voxels below it: Gevenois et al.,
    # Am J Respir Crit Care Med 1996;154(1):187-192 (-950 HU correlated best with microscopic
    # emphysema, 1-mm sections, full inspiration); the Fleischner Society statement (Lynch et al.,
    # Radiology 2015;277(1):192-205) discusses the same -950 HU inspiratory measure
    bone_hu: float = 300.0  # dense bone: body voxels at or above it; well above the 130 HU calcium
    # threshold (Agatston et al., J Am Coll Cardiol 1990;15(4):827-832) and above enhanced soft tissue;
    # it also takes calcifications, metal and dense iodinated contrast (arterial phase, urine)

    def __post_init__(self) -> None:
        if not -1000 < self.lung_hu < 0 or not -1000 < self.body_hu < 0:
            raise ValueError(f"body_hu ({self.body_hu}) and lung_hu ({self.lung_hu}) must lie between air "
                             "(-1000 HU) and water (0 HU)")
        if not 0 < self.lung_min_parenchyma <= 1:
            raise ValueError(f"lung_min_parenchyma must be a share in (0, 1], got {self.lung_min_parenchyma}")
        if self.bone_hu <= 0:
            raise ValueError(f"bone_hu must be above water (0 HU), got {self.bone_hu}")


@dataclass(frozen=True)
class OrganRange:
    """What is physically and anatomically possible for one organ (sources in PlausibilityConfig)."""

    hu_unenhanced: tuple[float, float]  # mean attenuation (eroded core) on unenhanced CT
    hu_enhanced: tuple[float, float]  # mean attenuation on contrast-enhanced CT
    volume_ml: tuple[float | None, float | None] = (None, None)  # (lower bound for a complete organ, upper)
    length_mm: tuple[float | None, float | None] = (None, None)  # organ length (complete organ)
    side: str | None = None  # "right" / "left" of the body's midline (normal situs)
    posterior: bool = False  # centroid behind the body's centre (retroperitoneal organs)
    parenchymal: bool = False  # solid organ: nearly all its voxels at soft-tissue attenuation


# Sources of the ranges (one line per number):
# - Soft-tissue organ attenuation lower bound -100 HU: fat (Kalender 2011). Even severe steatosis
#   leaves the liver above fat; a parenchymal organ whose mean is fat or air is not that organ.
# - Unenhanced upper bound 150 HU: above the highest unenhanced liver attenuation in iron overload
#   (125 HU among 18 patients with haemochromatosis, 79 +- 21 HU against 61 +- 9 HU in controls;
#   PubMed 8079280); normal unenhanced liver is 55-65 HU (Boll & Merkle, RadioGraphics
#   2009;29(6):1591-1614), 58.8 +- 10.8 HU in 3,357 adults (Boyce et al., AJR 2010;194(3):623-628).
# - Enhanced upper bound 300 HU: the dense-bone threshold (TissueConfig.bone_hu); an organ mean at
#   bone attenuation is bone or a contrast-filled vessel mislabelled (the report in issue 18: a
#   "liver" of 525 HU). Excretory-phase kidneys can exceed it and are then flagged for review.
# - Aorta 0..1000 HU: blood is denser than water (about 40-50 HU unenhanced, following the
#   haematocrit; New & Aronow, Radiology 1976;121(3):635-640), and no lumen is denser than the top
#   of the model's HU window (1000 HU, cortical bone).
# - Stomach -1000..1000 HU: it holds gas, fluid, food and oral contrast; only the HU window bounds it.
# - Liver volume 510..5,320 mL: mean - 4 SD of normal livers (1.51 +- 0.25 L) and mean + 4 SD of
#   enlarged livers (2.32 +- 0.75 L) in Linguraru et al., Acad Radiol 2012;19(5):588-598 (the 4 SD
#   margin is MedKit's).
# - Spleen volume >= 26.8 mL: a quarter of the lowest normal volume, 107.2 mL, of 140 adults in
#   Prassopoulos et al., Eur Radiol 1997;7(2):246-248 (the quarter is MedKit's margin); no upper
#   bound (massive splenomegaly reaches kilograms).
# - Kidney length 59.7..157.3 mm (right), 60.9..161.7 mm (left): mean -+ 4 SD of 108.5 +- 12.2 mm and
#   111.3 +- 12.6 mm in 2,068 kidneys, Glodny et al., BMC Urol 2009;9:19 (4 SD margin: MedKit's).
# - Sides and retroperitoneal kidneys: normal situs (situs inversus is flagged for review).
# - Solid organs (liver, spleen, kidneys, pancreas): at least 90 % of the voxels of the eroded core in
#   the soft-tissue band -100..300 HU (fat to the dense-bone threshold). A segment that takes in fat,
#   air or bone around the organ fails it (the unseen dcmqi slices: liver 0.82, spleen 0.90), while
#   the organs that match their reference masks score 0.998-1.000 (MedKit's choice of 90 %).
# - Gallbladder, pancreas, aorta, stomach: no volume range (none cited; they vary with filling, age
#   and the scanned range).
_SOFT_UNENHANCED, _SOFT_ENHANCED = (-100.0, 150.0), (-100.0, 300.0)
DEFAULT_RANGES = {
    "liver": OrganRange(_SOFT_UNENHANCED, _SOFT_ENHANCED, volume_ml=(510.0, 5320.0), side="right", parenchymal=True),
    "spleen": OrganRange(_SOFT_UNENHANCED, _SOFT_ENHANCED, volume_ml=(26.8, None), side="left", parenchymal=True),
    "kidney_right": OrganRange(_SOFT_UNENHANCED, _SOFT_ENHANCED, length_mm=(59.7, 157.3), side="right",
                               posterior=True, parenchymal=True),
    "kidney_left": OrganRange(_SOFT_UNENHANCED, _SOFT_ENHANCED, length_mm=(60.9, 161.7), side="left",
                              posterior=True, parenchymal=True),
    "gallbladder": OrganRange(_SOFT_UNENHANCED, _SOFT_ENHANCED),
    "stomach": OrganRange((-1000.0, 1000.0), (-1000.0, 1000.0)),
    "pancreas": OrganRange(_SOFT_UNENHANCED, _SOFT_ENHANCED, parenchymal=True),
    "aorta": OrganRange((0.0, 1000.0), (0.0, 1000.0)),
}


@dataclass
class PlausibilityConfig:
    """Checks an organ measurement passes before the report states it (``medkit.ct.plausibility``).

    Like TissueConfig, anatomy and physics rather than model parameters: not in ``config.json``."""

    ranges: dict[str, OrganRange] = field(default_factory=lambda: dict(DEFAULT_RANGES))
    min_main_component: float = 0.8  # share of the organ's voxels in its largest connected component:
    # each organ is one connected structure; accessory spleens and partial-volume specks stay far
    # below a fifth of it (MedKit's choice)
    min_confidence: float = 0.5  # mean probability the student gives the organ over its own voxels:
    # below 0.5 the model itself rates the label at less than even odds (MedKit's choice)
    min_inside_body: float = 0.95  # share of the organ's voxels inside the body outline (TissueConfig)
    soft_tissue_hu: tuple[float, float] = (-100.0, 300.0)  # fat .. dense-bone threshold (sources above)
    min_soft_tissue_share: float = 0.9  # solid organs: share of core voxels in soft_tissue_hu (above)

    def __post_init__(self) -> None:
        for name, bound in (("min_main_component", self.min_main_component), ("min_confidence", self.min_confidence),
                            ("min_inside_body", self.min_inside_body),
                            ("min_soft_tissue_share", self.min_soft_tissue_share)):
            if not 0 <= bound <= 1:
                raise ValueError(f"{name} must be a share in 0..1, got {bound}")
        for organ, r in self.ranges.items():
            for lo, hi in (r.hu_unenhanced, r.hu_enhanced):
                if lo >= hi:
                    raise ValueError(f"{organ}: attenuation range {lo}..{hi} HU is empty")


@dataclass
class CTConfig(ConfigFile):
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    encoder: CTEncoderConfig = field(default_factory=CTEncoderConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    generator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig(
        question="Write the findings section of the abdominal CT report."))
    train: CTTrainConfig = field(default_factory=CTTrainConfig)
