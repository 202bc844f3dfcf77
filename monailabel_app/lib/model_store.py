"""Where a task's models live: the base model and the site's fine-tuned versions.

    <app>/model/<task>/versions/<UTC time>/   a MedKit model directory (config.json + model.safetensors)
    <app>/model/<task>/current                 name of the promoted version (written atomically)
    <app>/model/<task>/train_stats.json        progress and result of the last training run

Without a promoted version the base model serves (``--conf model_path`` or the model shipped
in the medkit package). Promotion only rewrites ``current``; earlier versions stay on disk,
so a site can roll back by writing an older name into ``current``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from medkit.core.files import atomic_write


def atomic_write_text(path: Path, text: str) -> None:
    """Temp file in the same folder + fsync + rename (+ folder fsync): readers see the old or the new file."""
    atomic_write(path, text)


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class ModelStore:
    def __init__(self, root: str | Path, base_dir: str | None, default_dir=None):
        """``default_dir``: callable giving the model shipped in medkit (used when ``base_dir`` is None)."""
        self.root = Path(root)
        self.base_dir = Path(base_dir) if base_dir else None
        self.default_dir = default_dir

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    def current_version(self) -> str | None:
        try:
            name = (self.root / "current").read_text().strip()
        except FileNotFoundError:
            return None
        return name if name and (self.versions / name / "config.json").exists() else None

    def current_dir(self) -> Path | None:
        """The model directory to serve and to fine-tune from (None: medkit's shipped default)."""
        v = self.current_version()
        return self.versions / v if v else self.base_dir

    def resolved_dir(self) -> Path:
        if self.current_dir() is not None:
            return self.current_dir()
        if self.default_dir is None:
            from medkit.cxr.model import default_model_dir

            return default_model_dir()
        return self.default_dir()

    def version_key(self) -> str:
        """Changes whenever the served model changes (cache key for models and scores)."""
        d = self.resolved_dir()
        w = d / "model.safetensors"
        return f"{d}:{w.stat().st_mtime_ns if w.exists() else 0}"

    def new_version_dir(self) -> Path:
        name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        d, i = self.versions / name, 1
        while d.exists():
            d, i = self.versions / f"{name}-{i}", i + 1
        return d

    def promote(self, version_dir: Path) -> None:
        atomic_write_text(self.root / "current", version_dir.name + "\n")

    def recover(self) -> None:
        """After a crash (server killed mid-training): the served model is ``current``, which only
        names a finished version; mark a run whose process is gone as INTERRUPTED and drop its
        optimiser state and any version folder that was never completed. A new ``POST /train``
        then starts cleanly from the current model."""
        stats = self.read_stats()
        if stats.get("status") == "RUNNING" and not _alive(stats.get("pid")):
            self.write_stats({**stats, "status": "INTERRUPTED", "end_ts": int(time.time()),
                              "error": "the server stopped during this training run; nothing was promoted"})
        if stats.get("status") == "RUNNING" and _alive(stats.get("pid")):
            return  # a training subprocess of this server is running: leave its files alone
        shutil.rmtree(self.root / "runs", ignore_errors=True)
        current = self.current_version()
        for d in self.versions.glob("*") if self.versions.exists() else []:
            if d.name != current and not ((d / "config.json").exists() and (d / "model.safetensors").exists()):
                shutil.rmtree(d, ignore_errors=True)

    def write_stats(self, stats: dict) -> None:
        atomic_write_text(self.root / "train_stats.json", json.dumps(stats, indent=2) + "\n")

    def read_stats(self) -> dict:
        try:
            return json.loads((self.root / "train_stats.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
