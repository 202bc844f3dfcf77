"""Typed configuration of the CT path: one place for every tunable number.

A CT model directory holds ``config.json`` (a serialised :class:`CTConfig`) beside
``model.safetensors`` (student tensors, and generator tensors once a site trained one), so a
model rebuilds from its directory alone. Same override syntax as the chest X-ray config::

    medkit train-ct --data manifest.jsonl --out runs/ct --set train.student_epochs=40
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medkit.config import ConfigFile, DistillConfig, GeneratorConfig

#: Organs the student segments, in label order (label value = index + 1; 0 is background).
ORGANS = ("liver", "spleen", "kidney_right", "kidney_left", "gallbladder", "stomach", "pancreas", "aorta")

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
class CTTrainConfig:
    """Optimisation of the CT stages (teacher probe -> student -> generator)."""

    seed: int = 42
    crops_per_volume: int = 4  # fixed, seeded crops per volume; teacher outputs computed once per crop
    crop_size: tuple[int, int, int] = (128, 128, 32)  # voxels at model spacing (smaller volumes are padded)
    teacher_probe_epochs: int = 50  # linear label head on frozen teacher features
    student_epochs: int = 60
    generator_epochs: int = 3
    batch_size: int = 2
    generator_batch_size: int = 2
    lr_encoder: float = 2e-3
    lr_generator: float = 5e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 10
    grad_clip: float = 1.0
    seg_weight: float = 1.0  # Dice + cross-entropy on the organ masks, where a study has them
    intensity_jitter: float = 0.05  # +- shift/scale of the 0..1 input during student training

    def __post_init__(self) -> None:
        self.crop_size = tuple(self.crop_size)
        if self.crops_per_volume < 1:
            raise ValueError(f"crops_per_volume must be >= 1, got {self.crops_per_volume}")


@dataclass
class CTConfig(ConfigFile):
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    encoder: CTEncoderConfig = field(default_factory=CTEncoderConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    generator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig(
        question="Write the findings section of the abdominal CT report."))
    train: CTTrainConfig = field(default_factory=CTTrainConfig)
