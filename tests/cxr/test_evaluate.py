"""medkit.cxr.evaluate: the cached bank of training embeddings behind the nearest-neighbour floor."""

from __future__ import annotations

import os

import torch

from medkit.core.data import load_studies
from medkit.cxr.evaluate import study_embedding, train_bank
from medkit.cxr.model import MedKitCXR
from tests.conftest import write_tiny_iu_folder


def test_train_bank_is_cached_and_keyed_by_the_images(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("MEDKIT_CACHE", str(tmp_path / "cache"))
    studies = load_studies(write_tiny_iu_folder(tmp_path / "data"), "train")
    model = MedKitCXR.load(tiny_model_dir)
    bank = train_bank(model, studies)
    assert bank.shape[0] == len(studies)
    assert torch.allclose(bank[1], study_embedding(model, studies[1]))
    files = list((tmp_path / "cache" / "eval").glob("bank-*.pt"))
    assert len(files) == 1
    torch.save(torch.zeros_like(bank), files[0])  # a second call reads the file, not the images
    assert torch.equal(train_bank(model, studies), torch.zeros_like(bank))
    image = studies[0].images[0]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # an image changed
    assert torch.allclose(train_bank(model, studies), bank)
    assert len(list((tmp_path / "cache" / "eval").glob("bank-*.pt"))) == 2
