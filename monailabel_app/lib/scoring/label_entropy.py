"""Label-probability entropy of the served model on each unlabelled study (active learning).

For a study, the student encoder predicts the 14 observation probabilities p_k; its
uncertainty is the mean binary entropy  H = mean_k [-p_k log2 p_k - (1 - p_k) log2 (1 - p_k)]
(0 = every observation certain, 1 = every observation at 0.5). Only the student encoder runs
(no report decoding), so scoring a study costs one small CNN forward pass.

Scores are cached in the datastore's image info under ``<task>_entropy`` together with the
model version that produced them; a new model version invalidates them.

    curl -X POST http://127.0.0.1:8000/scoring/medkit_cxr_entropy    # score every unlabelled study
"""

from __future__ import annotations

import logging
import math
import threading

from monailabel.interfaces.tasks.scoring import ScoringMethod

from lib.transforms import radiograph_views

logger = logging.getLogger(__name__)


def binary_entropy(probs) -> float:
    h = 0.0
    for p in probs:
        p = min(max(float(p), 1e-6), 1 - 1e-6)
        h += -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return h / max(1, len(probs))


class EntropyScorer:
    """Computes and caches label entropies for a task's served model."""

    def __init__(self, store, key: str):
        self.store = store
        self.key = key
        self._student = None
        self._lock = threading.Lock()

    def _model(self):
        """The served model's student (the promoted version, the base model, or medkit's shipped
        default): the same encoder, weights and findings head that answer infer requests."""
        from medkit.cxr.model import load_student, read_config

        version = self.store.version_key()
        if self._student is None or self._student[0] != version:
            model_dir = self.store.resolved_dir()
            cfg = read_config(model_dir)
            self._student = (version, load_student(model_dir, cfg), cfg.encoder)
        return self._student[1], self._student[2]

    def entropy(self, uri) -> float:
        import torch

        from medkit.cxr.images import load_cxr
        from medkit.cxr.model import stack_views

        student, enc_cfg = self._model()
        files, _ = radiograph_views(uri, enc_cfg.max_views)
        x, mask = stack_views([load_cxr(f) for f in files], enc_cfg.image_size, enc_cfg.max_views)
        with torch.no_grad():
            probs = torch.sigmoid(student(x, mask).logits)[0].tolist()
        return binary_entropy(probs)

    def scores(self, datastore, image_ids) -> dict[str, float | None]:
        """Entropy per image (None where the image cannot be read), computing missing ones."""
        from medkit.cxr.images import ImageInputError

        with self._lock:
            version = self.store.version_key()
            out, fresh = {}, {}
            for image_id in image_ids:
                cached = datastore.get_image_info(image_id).get(self.key)
                if isinstance(cached, dict) and cached.get("model") == version:
                    out[image_id] = cached.get("value")
                    continue
                try:
                    value = round(self.entropy(datastore.get_image_uri(image_id)), 6)
                except ImageInputError as e:
                    logger.warning("%s: not scored (%s)", image_id, str(e).split(": ", 1)[-1])
                    value = None
                out[image_id] = value
                fresh[image_id] = {self.key: {"value": value, "model": version}}
            if fresh and hasattr(datastore, "update_images_info"):
                datastore.update_images_info(fresh)
            return out


class LabelEntropy(ScoringMethod):
    def __init__(self, scorer: EntropyScorer):
        super().__init__("Mean binary entropy of the 14 finding probabilities (student encoder) per unlabelled study")
        self.scorer = scorer

    def __call__(self, request, datastore):
        images = datastore.get_unlabeled_images()
        scores = self.scorer.scores(datastore, images)
        logger.info("%s: scored %d unlabelled studies", self.scorer.key, len(scores))
        return {"scored": len(scores), "key": self.scorer.key}
