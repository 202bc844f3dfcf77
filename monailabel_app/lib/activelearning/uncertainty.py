"""Active learning: propose the unlabelled study the served model is least sure about.

    curl -X POST http://127.0.0.1:8000/activelearning/medkit_cxr_uncertainty

The score is the label-probability entropy of :mod:`lib.scoring.label_entropy` (cached per
model version, so repeated proposals are cheap). Ties go to the smaller id; studies that
cannot be read are never proposed. MONAI Label's ``random`` and ``first`` stay available.
"""

from __future__ import annotations

import logging

from monailabel.interfaces.tasks.strategy import Strategy

logger = logging.getLogger(__name__)


class Uncertainty(Strategy):
    def __init__(self, scorer):
        super().__init__("Unlabelled study with the highest finding-probability entropy (most uncertain)")
        self.scorer = scorer

    def __call__(self, request, datastore):
        images = sorted(datastore.get_unlabeled_images())
        if not images:
            return None
        scores = {k: v for k, v in self.scorer.scores(datastore, images).items() if v is not None}
        if not scores:
            return None
        best = min(scores, key=lambda k: (-scores[k], k))
        logger.info("uncertainty: proposing %s (entropy %.4f of %d candidates)", best, scores[best], len(scores))
        return {"id": best, "score": scores[best], "strategy": "uncertainty"}
