"""Chest X-ray studies in memory: every study's views decoded and resized once, with its labeler
labels, and one frozen-encoder pass over them (what the generator reads and the thresholds are
fitted to). Used by training (``medkit.cxr.train``) and calibration (``medkit.cxr.calibrate``)."""

from __future__ import annotations

import hashlib
import logging
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from medkit.core.data import Study
from medkit.core.train import Dist
from medkit.cxr.config import MedKitConfig
from medkit.cxr.encoders import CXREncoder
from medkit.cxr.images import ImageInputError, load_cxr, order_views, to_model_input
from medkit.cxr.labeler import label_report, positive_findings, to_binary

logger = logging.getLogger(__name__)


# ---- data ------------------------------------------------------------------------------------
def calibration_split(study_ids: list[str], share: float, seed: int) -> np.ndarray:
    """(N,) bool, True for the studies held out for threshold calibration: a study is held out when
    the hash of (seed, id) falls in the lowest ``share`` of its range, so membership depends only on
    the id (not on the order, the other studies or the data folder) and ``medkit calibrate``
    recomputes the same split from the config."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"share must be in [0, 1), got {share}")
    draw = [int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big") / 2**64 for i in study_ids]
    return np.asarray(draw, dtype=np.float64) < share if study_ids else np.zeros(0, dtype=bool)


class StudyTensors:
    """Images of every study decoded and resized once per run, kept in memory: (V, 1, S, S) float16
    (about 200 kB a study at 224 px), its training labels (14,) (uncertain as
    ``distill.uncertain_as``) and its labeler positives (14,) (uncertain as 0; what the findings
    AUC is scored against). Training steps only index these tensors; nothing is decoded per step."""

    def __init__(self, studies: list[Study], cfg: MedKitConfig, show: bool = True):
        size, max_views = cfg.encoder.image_size, cfg.encoder.max_views
        self.studies, self.images, self.masks, self.labels, self.findings = [], [], [], [], []
        self.positives = []
        skipped = 0
        for s in tqdm(studies, desc="loading images", disable=not show):
            present = [i for i, p in enumerate(s.images) if p.exists()]
            if not present or not s.report.strip():
                skipped += 1
                continue
            paths = [s.images[i] for i in present]
            views = [s.views[i] for i in present] if s.views else None
            try:
                arrays = [load_cxr(paths[i]) for i in order_views(paths, views, max_views)]
            except ImageInputError as e:
                logger.warning("skipping study %s: %s", s.id, e)
                skipped += 1
                continue
            x = torch.zeros(max_views, 1, size, size, dtype=torch.float16)
            for v, a in enumerate(arrays):
                x[v, 0] = torch.from_numpy(to_model_input(a, size))
            m = torch.zeros(max_views, dtype=torch.bool)
            m[: len(arrays)] = True
            labels = label_report(s.report)
            self.studies.append(s), self.images.append(x), self.masks.append(m)
            self.labels.append(torch.tensor(to_binary(labels, cfg.distill.uncertain_as)))
            self.positives.append(torch.tensor(to_binary(labels, 0.0)))
            self.findings.append(positive_findings(labels))
        if skipped:
            logger.warning("%d studies skipped (no image on disk, unreadable image or empty report)", skipped)
        if not self.studies:
            raise ValueError("no usable study (each needs a readable image and a report)")

    def __len__(self) -> int:
        return len(self.studies)

    def subset(self, n: int) -> "StudyTensors":
        """The first ``n`` studies (no copy of the tensors)."""
        return self.select(list(range(min(n, len(self)))))

    def select(self, indices: list[int]) -> "StudyTensors":
        """The studies at ``indices``, in that order (no copy of the tensors)."""
        part = object.__new__(StudyTensors)
        for name in ("studies", "images", "masks", "labels", "findings", "positives"):
            values = getattr(self, name)
            setattr(part, name, [values[i] for i in indices])
        return part

    def split_calibration(self, share: float, seed: int) -> tuple["StudyTensors", "StudyTensors | None"]:
        """(studies the encoders train on, held-out calibration studies or None when ``share`` is 0)."""
        held = calibration_split([s.id for s in self.studies], share, seed)
        if not held.any():
            return self, None
        if held.all():
            raise ValueError(f"train.calibration_share {share} holds out all {len(held)} training studies: "
                             "the encoders would have none to train on (use a smaller share or more studies)")
        return self.select(list(np.flatnonzero(~held))), self.select(list(np.flatnonzero(held)))

    def label_matrix(self) -> np.ndarray:
        """(N, num_labels) binary labels of every study."""
        return torch.stack(self.labels).numpy()

    def positive_matrix(self) -> np.ndarray:
        """(N, num_labels) labeler positives of every study (uncertain counts as negative), labelled
        once when the studies were loaded."""
        return torch.stack(self.positives).numpy()

    def batch(self, idx: list[int], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.stack([self.images[i] for i in idx]).float().to(device)
        return x, torch.stack([self.masks[i] for i in idx]).to(device), torch.stack([self.labels[i] for i in idx]).to(device)


class EncodedStudies(NamedTuple):
    tokens: torch.Tensor  # (N, T, C) visual tokens
    token_mask: torch.Tensor  # (N, T) True where a view is present
    probs: np.ndarray  # (N, num_labels) sigmoid finding probabilities


@torch.no_grad()
def encode_studies(encoder: CXREncoder, data: StudyTensors, d: Dist | None = None, bs: int = 32) -> EncodedStudies:
    """One pass of a frozen encoder over every study: what the generator reads (tokens) and what
    the finding thresholds are fitted to (probabilities)."""
    d = d or Dist()
    encoder.eval()
    toks, masks, probs = [], [], []
    for i in tqdm(range(0, len(data), bs), desc="encoding studies", disable=not d.main):
        x, m, _ = data.batch(list(range(i, min(i + bs, len(data)))), d.device)
        o = encoder(x, m)
        toks.append(o.tokens.cpu()), masks.append(o.token_mask.cpu()), probs.append(torch.sigmoid(o.logits).float().cpu())
    return EncodedStudies(torch.cat(toks), torch.cat(masks), torch.cat(probs).numpy())
