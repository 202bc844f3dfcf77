"""Typed configuration shared by both modalities: the JSON config file with ``section.key=value``
overrides, and the distillation and report-generator sections.

A model directory holds ``config.json`` (a serialised ``medkit.cxr.config.MedKitConfig`` or
``medkit.ct.config.CTConfig``, both made of these sections and their own) beside the trainable
tensors, so a model rebuilds from its directory alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self


@dataclass
class DistillConfig:
    """Multi-level feature distillation (teacher -> student)."""

    temperature: float = 2.0  # softens teacher/student label distributions for the KL term
    kl_weight: float = 1.0
    feature_weight: float = 1.0  # summed over the matched depths
    label_weight: float = 1.0  # student's own BCE on labeler labels
    uncertain_as: float = 1.0  # labeler "uncertain" target (U-Ones, Irvin et al. 2019)


@dataclass
class OptimConfig:
    """The optimisation settings the training engine (``medkit.core.train``) reads from
    ``cfg.train``; each modality's ``TrainConfig`` extends it with its own stages and defaults."""

    seed: int = 42
    batch_size: int = 16  # encoder stages
    generator_batch_size: int = 8
    generator_epochs: int = 3
    lr_encoder: float = 3e-4
    lr_generator: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50  # linear warm-up, capped at a tenth of a stage's steps
    grad_clip: float = 1.0


REPORT_BASES = ("template", "generator")  # generator.report_base values (below)


def check_report_base(value: str) -> str:
    if value not in REPORT_BASES:
        raise ValueError(f"report_base must be 'template' or 'generator', got {value!r}")
    return value


@dataclass
class GeneratorConfig:
    """Report generator: projector + knowledge fusion + causal LM (LoRA)."""

    lm_path: str = "smollm2"  # "smollm2" = packaged SmolLM2-135M-Instruct GGUF; else a local HF dir
    lora_rank: int = 8  # 0 disables LoRA (frozen LM, projector and fusion only)
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    use_knowledge: bool = True  # inject the knowledge-graph prompt
    max_knowledge_tokens: int = 48
    max_report_tokens: int = 96
    max_triples_per_finding: int = 2
    finding_threshold: float = 0.5  # predicted probability above which a finding is flagged (drives the prompt)
    # One threshold per observation (MedKitConfig.observations order), fitted for F1 on the training
    # split by `medkit calibrate` (medkit.cxr.calibrate); empty: finding_threshold for every observation.
    # A finding at or above it is flagged: it drives the knowledge prompt and is at least "borderline".
    finding_thresholds: tuple[float, ...] = ()
    # Per observation, the probability at or above which a flagged finding is "positive" and the
    # report states it: the lowest threshold whose precision on the training split reaches
    # statement_precision (medkit.cxr.calibrate); 1.0: never positive. Flagged findings below it are
    # "borderline". Empty: every flagged finding is positive (configs older than this field).
    statement_thresholds: tuple[float, ...] = ()
    statement_precision: float = 0.8  # target precision of the fit above (chosen on IU val: docs/results.md)
    # What the report does with a borderline finding (medkit.cxr.consistency.align_report): "hedge" states
    # it hedged ("Possible pleural effusion."), "hedge_stated" hedges it only where the generator
    # stated it, "table" leaves it to the findings table (the report neither states nor hedges it).
    borderline: str = "hedge_stated"
    question: str = "Write the findings section of the chest X-ray report."
    # decoding
    num_beams: int = 3
    max_new_tokens: int = 80
    min_new_tokens: int = 10
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 4
    length_penalty: float = 1.0
    prune_vocab: bool = True  # decode only tokens seen in training reports (speed; same weights)
    # CPU decoding is memory-bound (every token reads all LM weights): int8 weights read 4x fewer
    # bytes. Dynamic quantisation of the LM's linear layers, applied at load for inference only.
    int8_inference: bool = True
    # Greedy decoding backend: "onnx" exports the merged LM once to ONNX Runtime with 8-bit
    # block weights (several times faster per token on CPU; medkit.core.generator.onnx_lm); "torch" keeps
    # PyTorch; "auto" uses ONNX when onnxruntime is installed and the LM is a Llama.
    runtime: str = "auto"
    # Speculative greedy decoding (medkit.core.generator.drafts): guess up to this many tokens per step from
    # phrases shared by >= draft_min_reports training reports (and >= draft_min_share of what
    # follows the same context), keep the guesses greedy decoding picks. 0 turns it off.
    draft_tokens: int = 4
    draft_min_reports: int = 5
    draft_min_share: float = 0.3
    # Chest X-ray: the report agrees with the findings table (medkit.cxr.consistency.align_report): it
    # states the positive findings, hedges or leaves out the borderline ones, and withdraws sentences
    # asserting a finding the table calls negative.
    state_findings: bool = True
    # Chest X-ray: the text the findings table edits. "template" starts every report from the site's
    # normal report (`template`, fitted on the training reports by medkit.cxr.consistency.fit_template
    # at train / calibrate / export time) and lets align_report state, hedge or withdraw findings, so
    # only what the findings head supports changes the site's phrasing; the language model is not
    # run. "generator" starts from the language model's text. Chosen on IU val (docs/results.md):
    # the generator's text scores below the consensus floor on every text metric. A config without
    # a fitted template uses the generator.
    report_base: str = "template"
    template: tuple[str, ...] = ()  # the normal report's sentences, each shared by >= draft_min_reports reports

    def __post_init__(self) -> None:
        check_report_base(self.report_base)
        if self.runtime not in ("auto", "torch", "onnx"):
            raise ValueError(f"runtime must be 'auto', 'torch' or 'onnx', got {self.runtime!r}")
        if self.draft_tokens < 0 or self.draft_min_reports < 1 or not 0.0 < self.draft_min_share <= 1.0:
            raise ValueError("draft_tokens >= 0, draft_min_reports >= 1 and 0 < draft_min_share <= 1 needed, got "
                             f"{self.draft_tokens}, {self.draft_min_reports}, {self.draft_min_share}")
        bad = [t for t in (self.finding_threshold, *self.finding_thresholds) if not 0.0 < t < 1.0]
        if bad:
            raise ValueError(f"finding thresholds must lie strictly between 0 and 1, got {bad}")
        bad = [t for t in (self.statement_precision, *self.statement_thresholds) if not 0.0 < t <= 1.0]
        if bad:
            raise ValueError(f"statement_precision and statement_thresholds must lie in (0, 1], got {bad}")
        if self.borderline not in ("hedge", "hedge_stated", "table"):
            raise ValueError(f"borderline must be 'hedge', 'hedge_stated' or 'table', got {self.borderline!r}")

    def thresholds(self, n: int) -> list[float]:
        """The positive-finding threshold of each of ``n`` observations."""
        if not self.finding_thresholds:
            return [self.finding_threshold] * n
        if len(self.finding_thresholds) != n:
            raise ValueError(f"finding_thresholds has {len(self.finding_thresholds)} values for {n} observations")
        return list(self.finding_thresholds)

    def positive_thresholds(self, n: int) -> list[float]:
        """The probability at or above which each of ``n`` observations is positive (stated); a
        value of 1.0 or more means never. Without ``statement_thresholds``: ``thresholds(n)``."""
        flagged = self.thresholds(n)
        if not self.statement_thresholds:
            return flagged
        if len(self.statement_thresholds) != n:
            raise ValueError(f"statement_thresholds has {len(self.statement_thresholds)} values for {n} observations")
        return [max(f, s) for f, s in zip(flagged, self.statement_thresholds)]


class ConfigFile:
    """JSON save/load and ``section.key=value`` overrides for a dataclass made of config sections
    (dataclass fields) and plain values. A section or key missing from a file keeps the class
    default, so configs written by older versions still load; an unknown one is an error."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        default = cls()
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(raw) - set(names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} sections: {sorted(unknown)}")
        out = {}
        for name in names:
            base = getattr(default, name)
            if dataclasses.is_dataclass(base):
                values = raw.get(name, {})
                known = {f.name for f in dataclasses.fields(base)}
                bad = set(values) - known
                if bad:
                    raise ValueError(f"unknown {type(base).__name__} keys: {sorted(bad)}")
                merged = {**dataclasses.asdict(base), **values}
                out[name] = type(base)(**{k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()})
            elif name in raw:
                out[name] = tuple(raw[name]) if isinstance(raw[name], list) else raw[name]
        return cls(**out)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read {cls.__name__} ({e})") from e
        return cls.from_dict(raw)

    def override(self, pairs: list[str]) -> Self:
        """Apply ``section.key=value`` overrides (values parsed as JSON, else strings)."""
        raw = self.to_dict()
        for pair in pairs:
            if "=" not in pair or "." not in pair.split("=", 1)[0]:
                raise ValueError(f"override must look like section.key=value, got {pair!r}")
            key, value = pair.split("=", 1)
            section, name = key.split(".", 1)
            if section not in raw or not isinstance(raw[section], dict) or name not in raw[section]:
                raise ValueError(f"unknown config key {key!r}")
            try:
                raw[section][name] = json.loads(value)
            except json.JSONDecodeError:
                raw[section][name] = value
        return type(self).from_dict(raw)


