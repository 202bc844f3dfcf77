"""ONNX Runtime greedy decoding (medkit.core.generator.onnx_lm): the exported step is the Hugging Face Llama,
it is exported once per weights, and the generator uses it only where it should."""

from __future__ import annotations

import os

import pytest
import torch

from medkit.core.config import GeneratorConfig

from medkit.cxr.config import MedKitConfig
from medkit.core.generator import onnx_lm
from medkit.core.generator.onnx_lm import LlamaStep, OnnxLM, supports


@pytest.fixture(scope="module")
def tiny_lm(tiny_lm_dir):
    from medkit.core.generator.lm import load_language_model

    torch.manual_seed(0)
    lm, _ = load_language_model(str(tiny_lm_dir))
    with torch.no_grad():  # random but not tiny weights, so that errors would show
        for p in lm.parameters():
            p.normal_(0, 0.2)
    return lm.eval()


def test_step_matches_transformers_forward(tiny_lm):
    step = LlamaStep(tiny_lm).eval()
    width = tiny_lm.config.hidden_size
    x = torch.randn(1, 7, width)
    empty = [torch.from_numpy(a) for a in step.empty_cache()]
    assert len(empty) == 2 * tiny_lm.config.num_hidden_layers
    with torch.no_grad():
        ref = tiny_lm(inputs_embeds=x, use_cache=True)
        logits, *cache = step(x, torch.tensor([6]), *empty)
        assert torch.allclose(logits[0], ref.logits[0, -1], atol=1e-4)
        assert all(c.shape[1] == 7 for c in cache)
        nxt = torch.randn(1, 3, width)  # three more positions through the cache, all scored
        ref2 = tiny_lm(inputs_embeds=nxt, cache=ref.cache, use_cache=True)
        logits2, *cache2 = step(nxt, torch.arange(3), *cache)
    assert torch.allclose(logits2, ref2.logits[0], atol=1e-4)
    assert all(c.shape[1] == 10 for c in cache2)


def _assert_close(got: torch.Tensor, ref: torch.Tensor) -> None:
    """8-bit block weights and int8 arithmetic: close to the float32 logits, not equal (a wrong
    graph, e.g. a missing rotary embedding or cache position, is off by the logits' spread)."""
    err, spread = (got - ref).abs(), ref.std()
    assert err.mean() < 0.02 * spread and err.max() < 0.15 * spread, (float(err.mean()), float(err.max()), float(spread))


def test_onnx_logits_follow_the_model_and_export_is_cached(tiny_lm, tmp_path, monkeypatch):
    ort_lm = OnnxLM(tiny_lm, tmp_path)
    assert ort_lm.path.exists() and ort_lm.path.parent == tmp_path / "onnx"
    width = tiny_lm.config.hidden_size
    prompt = torch.randn(5, width)
    run = ort_lm.decode(prompt, tiny_lm.get_input_embeddings())
    with torch.no_grad():
        ref = tiny_lm(inputs_embeds=prompt[None], use_cache=True)
        _assert_close(run.first, ref.logits[0, -1])
        token = int(run.first.argmax())
        ref2 = tiny_lm(input_ids=torch.tensor([[token, 3, 4]]), cache=ref.cache, use_cache=True)
        _assert_close(run.feed([token, 3, 4]), ref2.logits[0])  # a token and two guesses
        run.keep(1)  # the guesses were wrong: forget them, feed another
        ref.cache.crop(-2)
        ref3 = tiny_lm(input_ids=torch.tensor([[7]]), cache=ref.cache, use_cache=True)
        _assert_close(run.feed([7]), ref3.logits[0])
    assert run.cache[0].shape[1] == 7

    inode = ort_lm.path.stat().st_ino  # an export replaces the file (new inode)
    again = OnnxLM(tiny_lm, tmp_path)  # same weights: the exported file is reused
    assert again.path == ort_lm.path and again.path.stat().st_ino == inode
    with torch.no_grad():
        tiny_lm.model.norm.weight.mul_(1.5)
    try:  # other weights: another file, never a stale one
        assert OnnxLM(tiny_lm, tmp_path).path != ort_lm.path
        # every retrained version adds an export; beyond the size budget the least recently
        # used go (here the budget holds the three real exports and one old file)
        size = ort_lm.path.stat().st_size
        monkeypatch.setattr(onnx_lm, "KEEP_BYTES", 3 * size + 1500)  # + one old file, not two
        for i in range(5):
            old = tmp_path / "onnx" / f"llama-step-old{i}.onnx"
            old.write_bytes(b"x" * 1000)
            os.utime(old, (1e9 + i, 1e9 + i))
        with torch.no_grad():
            tiny_lm.model.norm.weight.mul_(1.5)
        newest = OnnxLM(tiny_lm, tmp_path).path
        kept = sorted(p.name for p in (tmp_path / "onnx").glob("*.onnx"))
        assert newest.name in kept and ort_lm.path.name in kept
        assert kept.count("llama-step-old4.onnx") == 1 and len(kept) == 4
        with torch.no_grad():
            tiny_lm.model.norm.weight.div_(1.5)
    finally:
        with torch.no_grad():
            tiny_lm.model.norm.weight.div_(1.5)


def test_unsupported_language_model_is_named(tiny_lm):
    tiny_lm.config.model_type = "gpt2"
    try:
        assert "gpt2" in supports(tiny_lm)
        with pytest.raises(ValueError, match="does not support this LM"):
            OnnxLM(tiny_lm, None)
    finally:
        tiny_lm.config.model_type = "llama"


def test_runtime_option_is_checked():
    with pytest.raises(ValueError, match="runtime"):
        GeneratorConfig(runtime="tensorrt")


@pytest.mark.parametrize("runtime,uses_onnx", [("torch", False), ("onnx", True), ("auto", True)])
def test_generator_decodes_greedily_on_the_chosen_runtime(tiny_lm_dir, monkeypatch, tmp_path, runtime, uses_onnx):
    from medkit.cxr.model import MedKitCXR
    from tests.conftest import NIH_PNG

    monkeypatch.setenv("MEDKIT_CACHE", str(tmp_path))
    cfg = MedKitConfig().override([f"generator.lm_path={tiny_lm_dir}", "encoder.image_size=64", "generator.num_beams=1",
                                   "generator.max_new_tokens=6", f"generator.runtime={runtime}"])
    model = MedKitCXR(cfg).eval()
    model.generator.learn_report_text(["Lungs are clear.", "No effusion."])
    model.generator.optimize_for_inference()
    assert (model.generator._onnx is not None) == uses_onnx
    assert (tmp_path / "onnx").exists() == uses_onnx
    out = model.report_from_files([NIH_PNG])
    assert out["report"] and out == model.report_from_files([NIH_PNG])  # deterministic


def test_unwritable_cache_falls_back_to_pytorch(tiny_lm_dir, monkeypatch, tmp_path, caplog):
    from medkit.cxr.model import MedKitCXR
    from tests.conftest import NIH_PNG

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")  # the cache path is a file: the export cannot be written
    monkeypatch.setenv("MEDKIT_CACHE", str(blocker))
    cfg = MedKitConfig().override([f"generator.lm_path={tiny_lm_dir}", "encoder.image_size=64", "generator.num_beams=1",
                                   "generator.max_new_tokens=6"])
    model = MedKitCXR(cfg).eval()
    model.generator.optimize_for_inference()
    assert model.generator._onnx is None and "ONNX export failed" in caplog.text
    assert model.report_from_files([NIH_PNG])["report"]
    strict = MedKitCXR(cfg.override(["generator.runtime=onnx"])).eval()
    with pytest.raises(OSError):
        strict.generator.optimize_for_inference()
