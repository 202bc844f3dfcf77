"""Report datasets: IU X-ray (Open-i, R2Gen split), R2Gen ``annotation.json``, JSONL manifests.

All three become a list of :class:`Study` (one report, one or more image views):

- IU X-ray as in ``DATA/iu_xray/annotation.json`` (Demner-Fushman et al., JAMIA 2016; split
  of Chen et al., R2Gen, EMNLP 2020): records with ``images: [{file, openi_id, view}]``.
- R2Gen ``annotation.json`` (what MIMIC-CXR users have): records with ``image_path: [...]``
  relative to an image root (default: the folder holding ``images/`` beside the file).
- JSONL manifest for a site's own data: one ``{"id", "images": [...], "report", "split"}`` per
  line, image paths relative to the manifest's folder (or absolute).

    python -m medkit.core.data ../shared/data --split val    # prints a summary
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class Study:
    """One report with the image files of its views."""

    id: str
    images: list[Path]
    report: str
    split: str
    views: list[str | None] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # other keys of a manifest line (e.g. the CT path's "masks")


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ValueError(f"{path}: annotation file not found") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def load_annotation(path: str | Path, split: str, image_root: str | Path | None = None) -> list[Study]:
    """Read an IU X-ray or R2Gen ``annotation.json`` split."""
    _check_split(split)
    path = Path(path)
    raw = _read_json(path)
    if split not in raw:
        raise ValueError(f"{path}: no {split!r} split (has {sorted(raw)})")
    root = Path(image_root) if image_root else path.parent
    studies = []
    for rec in raw[split]:
        if "images" in rec:  # IU X-ray (Open-i) format
            files = [root / im["file"] for im in rec["images"]]
            views = [im.get("view") for im in rec["images"]]
        elif "image_path" in rec:  # R2Gen format
            files = [root / "images" / p if not (root / p).exists() else root / p for p in rec["image_path"]]
            views = [None] * len(files)
        else:
            raise ValueError(f"{path}: record {rec.get('id')!r} has neither 'images' nor 'image_path'")
        studies.append(Study(str(rec["id"]), files, rec.get("report") or "", split, views))
    return studies


def resolve_path(manifest: Path, p: str) -> Path:
    """A path of a manifest line: absolute, or relative to the manifest's folder."""
    return Path(p) if Path(p).is_absolute() else manifest.parent / p


def load_manifest(path: str | Path, split: str | None = None) -> list[Study]:
    """Read a JSONL manifest; ``split=None`` keeps every line."""
    _check_split(split)
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: manifest not found")
    studies = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            images = rec["images"]
            sid = str(rec["id"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: expected {{'id', 'images', 'report', 'split'}} ({e})") from e
        if isinstance(images, str):
            images = [images]
        if rec.get("split", "train") != split and split is not None:
            continue
        files = [resolve_path(path, p) for p in images]
        extra = {k: v for k, v in rec.items() if k not in ("id", "images", "report", "split", "views")}
        studies.append(Study(sid, files, rec.get("report") or "", rec.get("split", "train"), rec.get("views") or [],
                             extra))
    return studies


def load_studies(source: str | Path, split: str | None) -> list[Study]:
    """Studies from a data folder (holding ``iu_xray/annotation.json``), a JSON or a JSONL file."""
    source = Path(source)
    if source.is_dir():
        ann = source / "iu_xray" / "annotation.json"
        if not ann.exists():
            ann = source / "annotation.json"
        if not ann.exists():
            raise ValueError(f"{source}: no iu_xray/annotation.json or annotation.json inside")
        return load_annotation(ann, split or "train")
    if source.suffix == ".jsonl":
        return load_manifest(source, split)
    if source.suffix == ".json":
        return load_annotation(source, split or "train")
    raise ValueError(f"{source}: expected a data folder, annotation .json or manifest .jsonl")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("--split", default="train")
    args = ap.parse_args(argv)
    studies = load_studies(args.source, args.split)
    n_img = sum(len(s.images) for s in studies)
    missing = sum(not p.exists() for s in studies for p in s.images)
    print(f"{len(studies)} studies, {n_img} images ({missing} missing) in split {args.split!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
