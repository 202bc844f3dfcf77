"""What the MedKit infer tasks share: the served model (cached per device, reloaded on promotion)
and the range-checked decoding params of a request."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, Sequence

from monailabel.tasks.infer.basic_infer import BasicInferTask

from lib.params import parse_bool

logger = logging.getLogger(__name__)

DECODE_LIMITS = {"num_beams": (1, 8), "max_new_tokens": (1, 512)}


def decode_params(data: Dict[str, Any]) -> dict:
    """Decoding overrides from the request, range-checked (ValueError names the bad value)."""
    out = {}
    for key, (lo, hi) in DECODE_LIMITS.items():
        if data.get(key) in (None, ""):
            continue
        try:
            value = int(data[key])
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be an integer, got {data[key]!r}") from None
        if not lo <= value <= hi or isinstance(data[key], float) and data[key] != value:
            raise ValueError(f"{key} must be an integer in {lo}..{hi}, got {data[key]!r}")
        out[key] = value
    return out


def bool_param(data: Dict[str, Any], key: str) -> bool | None:
    """A true/false request parameter (:func:`lib.params.parse_bool`); None when absent."""
    return None if data.get(key) in (None, "") else parse_bool(key, data[key])


class MedKitInferTask(BasicInferTask):
    """A :class:`BasicInferTask` serving the model of a :class:`lib.model_store.ModelStore`.

    Subclasses set ``model_class`` (``medkit.cxr.model.MedKitCXR`` or ``medkit.ct.model.MedKitCT``,
    imported lazily: torch and transformers load on the first request, not at start-up).
    """

    model_class: Callable[[], type]

    def __init__(self, store, lm_path: str | None = None, decode: dict | None = None, **kwargs):
        super().__init__(path=None, network=None, config=dict(decode or {}), **kwargs)
        self.store = store
        self.lm_path = lm_path
        self._lock = threading.Lock()  # one load per device even when requests arrive together

    def get_path(self, validate=True):
        path = self.store.resolved_dir() / "model.safetensors"
        return str(path) if path.exists() or not validate else None

    def post_transforms(self, data=None) -> Sequence[Callable]:
        return []

    def _get_network(self, device, data):
        """The served model on ``device``; reloaded when the promoted version changes."""
        key = self.store.version_key()
        with self._lock:
            cached = self._networks.get(device)
            if cached and cached[1] == key:
                return cached[0]
            logger.info("loading %s model %s on %s", type(self).__name__, self.store.resolved_dir().name, device)
            model = self.model_class().load(self.store.current_dir(), lm_path=self.lm_path).to(device)
            self._networks[device] = (model, key)
            return model

    def served_version(self) -> str:
        return self.store.current_version() or "base"
