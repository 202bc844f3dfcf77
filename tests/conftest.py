"""Shared fixtures: committed sample images, a tiny random LM, a tiny training manifest."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "medkit" / "data" / "samples"
NIH_PNG = SAMPLES / "nih_00000001_000.png"
NIH_PNG_2 = SAMPLES / "nih_00027426_000.png"
RSNA_DCM = SAMPLES / "rsna_pneumonia_sample.dcm"

# Reports written for these tests (not from any dataset): short, IU-X-ray-like phrasing.
TINY_REPORTS = [
    "The heart is normal in size. The lungs are clear. No pneumothorax or pleural effusion.",
    "The heart is enlarged. There is a small right pleural effusion. No pneumothorax.",
    "Heart size is normal. There is patchy opacity in the left lung base concerning for pneumonia.",
    "The cardiomediastinal silhouette is normal. No focal consolidation. Lungs are clear.",
]


def load_benchmark(name: str):
    """A script of ``benchmarks/`` (not a package) imported as a module, to test its functions."""
    spec = importlib.util.spec_from_file_location(f"medkit_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def nema_cr_path() -> Path:
    """The NEMA WG04 chest CR from the PyPI package pydicom-data (MIT)."""
    import importlib.util

    spec = importlib.util.find_spec("data_store")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pydicom-data is not installed (pip install -e .[test])")
    path = Path(spec.submodule_search_locations[0]) / "data" / "RG1_UNCR.dcm"
    if not path.exists():
        pytest.skip(f"pydicom-data has no {path.name}")
    return path


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide Llama with SmolLM2's tokenizer, random weights, saved as an HF dir."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from medkit.core.generator.lm import _smollm2_dir

    tok = AutoTokenizer.from_pretrained(_smollm2_dir(), local_files_only=True)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      initializer_range=0.5,  # large embeddings: a frozen random head can still fit
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    out = tmp_path_factory.mktemp("tiny_lm")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture()
def tiny_manifest(tmp_path) -> Path:
    """JSONL manifest over the committed samples: 4 train studies, 2 val studies."""
    images = [NIH_PNG, NIH_PNG_2, RSNA_DCM, NIH_PNG_2]
    lines = [{"id": f"t{i}", "images": [str(p)], "report": r, "split": "train"}
             for i, (p, r) in enumerate(zip(images, TINY_REPORTS))]
    lines += [{"id": "v0", "images": [str(NIH_PNG), str(NIH_PNG_2)], "report": TINY_REPORTS[0], "split": "val"},
              {"id": "v1", "images": [str(RSNA_DCM)], "report": TINY_REPORTS[1], "split": "val"}]
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


TINY_OVERRIDES = [
    "encoder.image_size=64", "train.teacher_epochs=2", "train.student_epochs=2", "train.generator_epochs=8",
    "train.batch_size=2", "train.generator_batch_size=2", "train.warmup_steps=1", "train.lr_generator=0.01",
    'generator.lora_targets=["q_proj", "v_proj", "o_proj", "down_proj"]',
    "generator.max_report_tokens=24", "generator.max_new_tokens=8", "generator.num_beams=1",
]


def write_tiny_iu_folder(root: Path) -> Path:
    """A folder in the IU X-ray layout (iu_xray/annotation.json + images/) over the samples."""
    import shutil

    iu = root / "iu_xray"
    (iu / "images").mkdir(parents=True, exist_ok=True)
    for p in (NIH_PNG, NIH_PNG_2):
        shutil.copy(p, iu / "images" / p.name)

    def rec(i, split, names, report):
        return {"id": f"{split}{i}", "split": split, "report": report,
                "images": [{"file": f"images/{n}", "openi_id": n, "view": None} for n in names]}

    names = [NIH_PNG.name, NIH_PNG_2.name]
    ann = {"train": [rec(i, "train", names[i % 2 :] + names[: i % 2], r) for i, r in enumerate(TINY_REPORTS)],
           "val": [rec(0, "val", names, TINY_REPORTS[0]), rec(1, "val", names[::-1], TINY_REPORTS[1])]}
    (iu / "annotation.json").write_text(json.dumps(ann))
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_lm_dir) -> Path:
    """A MedKit model trained for a few steps on the samples with the tiny LM (all three stages)."""
    from medkit.cxr.config import MedKitConfig
    from medkit.cxr.train import train

    data = write_tiny_iu_folder(tmp_path_factory.mktemp("tiny_data"))
    cfg = MedKitConfig().override(TINY_OVERRIDES + [f"generator.lm_path={tiny_lm_dir}"])
    return train(cfg, data, tmp_path_factory.mktemp("tiny_run"), ckpt_every=0)
