"""Datasets: IU X-ray / R2Gen annotation files and JSONL manifests (written here, not from data)."""

from __future__ import annotations

import json

import pytest

from medkit.core.data import load_annotation, load_manifest, load_studies


def _iu_folder(tmp_path):
    root = tmp_path / "data" / "iu_xray"
    (root / "images").mkdir(parents=True)
    rec = {"id": "S1", "split": "train", "report": "Lungs are clear.", "mesh": ["normal"],
           "images": [{"file": "images/S1-1.jpg", "openi_id": "S1-1", "view": "PA"},
                      {"file": "images/S1-2.jpg", "openi_id": "S1-2", "view": "LL"}]}
    (root / "annotation.json").write_text(json.dumps({"train": [rec], "val": []}))
    return root.parent


def test_iu_xray_folder(tmp_path):
    studies = load_studies(_iu_folder(tmp_path), "train")
    assert len(studies) == 1
    s = studies[0]
    assert s.id == "S1" and s.report == "Lungs are clear." and s.views == ["PA", "LL"]
    assert s.images[0].name == "S1-1.jpg" and s.images[0].parent.name == "images"


def test_r2gen_format(tmp_path):
    (tmp_path / "images" / "CXR1").mkdir(parents=True)
    (tmp_path / "images" / "CXR1" / "0.png").write_bytes(b"x")
    ann = {"train": [{"id": "CXR1", "report": "No effusion.", "image_path": ["CXR1/0.png", "CXR1/1.png"], "split": "train"}]}
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(ann))
    s = load_annotation(path, "train")[0]
    assert s.images[0] == tmp_path / "images" / "CXR1" / "0.png"
    assert len(s.images) == 2


def test_manifest_relative_paths_and_split(tmp_path):
    lines = [{"id": "a", "images": ["img/a.png"], "report": "r1", "split": "train"},
             {"id": "b", "images": "img/b.png", "report": "r2", "split": "val"}]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    train = load_manifest(path, "train")
    assert [s.id for s in train] == ["a"] and train[0].images == [tmp_path / "img" / "a.png"]
    assert [s.id for s in load_manifest(path, None)] == ["a", "b"]
    assert load_studies(path, "val")[0].images == [tmp_path / "img" / "b.png"]


@pytest.mark.parametrize("content,needle", [("{not json", "m.jsonl:1"), ('{"report": "x"}', "m.jsonl:1")])
def test_manifest_errors_name_line(tmp_path, content, needle):
    path = tmp_path / "m.jsonl"
    path.write_text(content + "\n")
    with pytest.raises(ValueError, match=needle):
        load_manifest(path)


def test_unknown_split_and_missing_split(tmp_path):
    folder = _iu_folder(tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        load_studies(folder, "dev")
    with pytest.raises(ValueError, match="no 'test' split"):
        load_studies(folder, "test")


def test_bad_source(tmp_path):
    with pytest.raises(ValueError, match="no iu_xray/annotation.json"):
        load_studies(tmp_path, "train")
