"""The chest X-ray report model: student encoder + knowledge graph + report generator.

A model directory holds ``config.json`` (:class:`medkit.cxr.config.MedKitConfig`) and
``model.safetensors`` with only the trained tensors (student encoder, projector, fusion,
LoRA); the language model's base weights come from their registry package or local path.

    medkit generate medkit/data/samples/nih_00000001_000.png --json
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from medkit.core.config import check_report_base
from medkit.core.generator.model import ReportGenerator
from medkit.core.knowledge import KnowledgeGraph, Triple
from medkit.core.modeldir import ModelDir
from medkit.cxr import consistency
from medkit.cxr.config import MedKitConfig
from medkit.cxr.encoders import CXREncoder
from medkit.cxr.images import load_cxr, order_views, to_model_input
from medkit.cxr.labeler import OBSERVATIONS

logger = logging.getLogger(__name__)


def default_model_dir() -> Path:
    """The trained chest X-ray model shipped inside the package."""
    return ModelDir.shipped("cxr").path


def read_config(model_dir: str | Path | None = None) -> MedKitConfig:
    """A model directory's config (default: the shipped model; the defaults when none is shipped)."""
    model_dir = ModelDir(model_dir or default_model_dir())
    if not model_dir.has_config() and model_dir.path == default_model_dir():
        return MedKitConfig()
    return model_dir.config(MedKitConfig)


def stack_views(arrays: Sequence[np.ndarray], size: int, max_views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed views -> (1, V, 1, S, S) tensor and (1, V) mask."""
    views = [torch.from_numpy(to_model_input(a, size)) for a in arrays[:max_views]]
    x = torch.stack(views)[None, :, None]  # (1, V, 1, S, S)
    return x, torch.ones(1, len(views), dtype=torch.bool)


def findings_from_probs(probs: Sequence[float], thresholds: Sequence[float],
                        positive_thresholds: Sequence[float] | None = None) -> list[dict]:
    """One entry per observation: probability, thresholds, status.

    ``status`` is "positive" at or above ``threshold`` (the observation's positive threshold,
    ``positive_thresholds``; 1.0 or more: never positive), "borderline" at or above
    ``borderline_threshold`` (``thresholds``: flagged, below positive), else "negative". Without
    ``positive_thresholds`` every flagged finding is positive (no borderline)."""
    positive_thresholds = thresholds if positive_thresholds is None else positive_thresholds
    if not len(probs) == len(thresholds) == len(positive_thresholds) == len(OBSERVATIONS):
        raise ValueError(f"{len(probs)} probabilities and {len(thresholds)} / {len(positive_thresholds)} thresholds "
                         f"for {len(OBSERVATIONS)} observations")
    out = []
    for name, p, t, s in zip(OBSERVATIONS, probs, thresholds, positive_thresholds):
        s = max(s, t)
        status = "positive" if s < 1.0 and p >= s else "borderline" if p >= t else "negative"
        out.append({"name": name, "probability": round(float(p), 4), "threshold": round(float(s), 4),
                    "borderline_threshold": round(float(t), 4), "status": status})
    return out


def prompt_findings(findings: list[dict]) -> list[str]:
    """Flagged findings (positive or borderline) that drive the knowledge prompt ("No Finding"
    drives the normal prompt)."""
    return [f["name"] for f in findings if f["status"] in ("positive", "borderline") and f["name"] != "No Finding"]


def load_student(model_dir: str | Path, cfg: MedKitConfig) -> CXREncoder:
    """Only the student encoder of a model directory (no language model loaded)."""
    student = CXREncoder(cfg.encoder, cfg.encoder.report_encoder, pretrained=False)
    student.load_state_dict(ModelDir(model_dir).part("student"))
    return student.eval()


class MedKitCXR(torch.nn.Module):
    """Student encoder + generator with the knowledge graph; one object per loaded model."""

    def __init__(self, cfg: MedKitConfig, student: CXREncoder | None = None, generator: ReportGenerator | None = None,
                 kg: KnowledgeGraph | None = None, lm=None, tokenizer=None, generator_state: dict | None = None):
        """``generator_state`` (the trained generator tensors, for inference) defers building the
        generator, and loading its language model, to its first use: a model whose reports start
        from the site template (:meth:`uses_template`) never needs it to report."""
        super().__init__()
        self.cfg = cfg
        self.student = student or CXREncoder(cfg.encoder, cfg.encoder.report_encoder)
        self._deferred_generator = generator_state
        if generator_state is None:
            self.generator = generator or self._new_generator(lm, tokenizer)
        self.kg = kg or KnowledgeGraph.load()

    def _new_generator(self, lm=None, tokenizer=None) -> ReportGenerator:
        n_tokens = self.cfg.encoder.max_views * self.cfg.encoder.tokens_grid**2
        return ReportGenerator(self.cfg.generator, self.student.out_channels, n_tokens, lm, tokenizer)

    @property
    def generator(self) -> ReportGenerator:
        """The report generator (built, and its trained state loaded, on first use when deferred)."""
        if "generator" not in self._modules:
            generator = self._new_generator()
            generator.load_trained(self._deferred_generator, True)
            self._deferred_generator = None
            self.generator = generator.train(self.training)  # nn.Module.__setattr__ registers it
        return self._modules["generator"]

    # ---- persistence ---------------------------------------------------------------------
    def save(self, model_dir: str | Path) -> None:
        """The trained tensors (student, generator) and the config (:class:`medkit.core.modeldir.ModelDir`)."""
        ModelDir(model_dir).save({"student": self.student.state_dict(), "generator": self.generator.trainable_state()},
                                 self.cfg)

    @classmethod
    def load(cls, model_dir: str | Path | None = None, lm_path: str | None = None,
             optimize: bool = True) -> "MedKitCXR":
        """Load a model directory (default: the shipped model); ``lm_path`` overrides the LM.

        ``optimize`` merges LoRA and prunes the vocabulary for fast decoding (inference only);
        pass False to fine-tune or re-save the loaded model."""
        model_dir = ModelDir(model_dir or default_model_dir())
        cfg = read_config(model_dir.path)
        if not model_dir.has_config():
            logger.warning("no trained model shipped in %s: using an UNTRAINED model", model_dir.path)
            return cls(cfg).eval()
        if lm_path:
            cfg.generator.lm_path = lm_path
        student = CXREncoder(cfg.encoder, cfg.encoder.report_encoder, pretrained=False)
        student.load_state_dict(model_dir.part("student"))
        if optimize:  # inference: the generator is built when first needed (template reports never need it)
            return cls(cfg, student=student, generator_state=model_dir.part("generator")).eval()
        model = cls(cfg, student=student)
        model.generator.load_trained(model_dir.part("generator"), optimize)
        return model.eval()

    # ---- inference -----------------------------------------------------------------------
    def knowledge_for(self, findings: list[str]) -> tuple[str, list[Triple]]:
        return self.kg.prompt_for(findings, self.cfg.generator.max_triples_per_finding)

    @torch.no_grad()
    def generator_inputs(self, arrays: Sequence[np.ndarray]) -> tuple:
        """One study's views -> (visual tokens, token mask, knowledge prompt, findings, triples):
        everything the generator needs before decoding."""
        if not arrays:
            raise ValueError("a study needs at least one image")
        x, mask = stack_views(arrays, self.cfg.encoder.image_size, self.cfg.encoder.max_views)
        enc = self.student(x, mask)
        probs = torch.sigmoid(enc.logits)[0].tolist()
        gcfg = self.cfg.generator
        findings = findings_from_probs(probs, gcfg.thresholds(len(probs)), gcfg.positive_thresholds(len(probs)))
        prompt, triples = self.knowledge_for(prompt_findings(findings))
        return enc.tokens, enc.token_mask, prompt, findings, triples

    def uses_template(self, report_base: str | None = None) -> bool:
        """Whether reports start from the site's normal report (``generator.report_base``; a
        config without a fitted template uses the generator)."""
        gcfg = self.cfg.generator
        return (report_base or gcfg.report_base) == "template" and bool(gcfg.template)

    @torch.no_grad()
    def report_from_arrays(self, arrays: Sequence[np.ndarray], state_findings: bool | None = None,
                           report_base: str | None = None, **decode) -> dict:
        """One study (its views as (H, W) 0..1 arrays) -> report, findings, knowledge.

        The text starts from the site's normal report or the generator's (``report_base``, default
        ``generator.report_base``; see :meth:`uses_template`). ``state_findings`` (default
        ``generator.state_findings``) makes the report agree with the findings table
        (:func:`medkit.cxr.consistency.align_report`): ``stated_findings`` lists the positive findings
        it had to state, ``hedged_findings`` the borderline ones it hedged, ``withdrawn_findings``
        those the table calls negative whose sentences it withdrew."""
        if report_base is not None:
            check_report_base(report_base)
        tokens, mask, prompt, findings, triples = self.generator_inputs(arrays)
        if self.uses_template(report_base):
            report = " ".join(self.cfg.generator.template)
        else:
            report = self.generator.generate(tokens, mask, [prompt], **decode)[0]
        edits = {"stated": [], "hedged": [], "withdrawn": []}
        if self.cfg.generator.state_findings if state_findings is None else state_findings:
            report, edits = consistency.align_report(report, {f["name"]: f["status"] for f in findings},
                                                     self.cfg.generator.borderline)
        return {"report": report, "findings": findings, "stated_findings": edits["stated"],
                "hedged_findings": edits["hedged"], "withdrawn_findings": edits["withdrawn"],
                "knowledge": [str(t) for t in triples], "modality": "CXR"}

    def load_views(self, paths: Sequence[str | Path], views: list[str | None] | None = None) -> list[np.ndarray]:
        """The views this model reads, in its order (frontal first, at most ``max_views``)."""
        paths = [Path(p) for p in paths]
        return [load_cxr(paths[i]) for i in order_views(paths, views, self.cfg.encoder.max_views)]

    def report_from_files(self, paths: Sequence[str | Path], views: list[str | None] | None = None, **decode) -> dict:
        return self.report_from_arrays(self.load_views(paths, views), **decode)
