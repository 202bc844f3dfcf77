"""The CT report model: 3D student (segmentation + labels + tokens) + CT knowledge graph [+ generator].

    medkit generate medkit/data/samples/ct/totalsegmentator/example_ct_sm.nii.gz --json --out-dir /tmp/ct
    medkit generate medkit/data/samples/ct/totalsegmentator/example_ct_dicom --json

A CT model directory holds ``config.json`` (:class:`medkit.ct.config.CTConfig`), ``model.safetensors``
(student tensors; generator tensors when the model was trained with reports) and ``training.json``
(what it was trained on). The shipped default (``medkit/weights/ct``) has NO generator: no public CT
volume with a report is available here, so its report is written from the measurements alone and
states every value it rests on (``measurement_report``). A model trained by a site on its own
volumes + reports (``medkit train-ct``) writes the report with the language model from the
student's tokens and the knowledge prompt, and still returns the measured findings beside it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from medkit.core.files import volume_stem
from medkit.core.generator.model import ReportGenerator
from medkit.core.knowledge import KnowledgeGraph, Triple
from medkit.core.modeldir import ModelDir
from medkit.ct.config import CTConfig, PlausibilityConfig, TissueConfig, segment_labels
from medkit.ct.encoders import CTStudent
from medkit.ct.images import read_volume
from medkit.ct.measurements import findings_from_measurements, measure_organs
from medkit.ct.plausibility import check_organs, organ_geometry
from medkit.ct.segmentation import segment

logger = logging.getLogger(__name__)

TRAINING_FILE = "training.json"
CT_GRAPH = "knowledge_ct.json"
ORGAN_NAMES = {"liver": "Liver", "spleen": "Spleen", "kidney_right": "Right kidney", "kidney_left": "Left kidney",
               "gallbladder": "Gallbladder", "stomach": "Stomach", "pancreas": "Pancreas", "aorta": "Aorta",
               "lungs": "Lungs", "bone": "Dense bone", "body": "Body outline"}


def default_ct_model_dir() -> Path:
    return ModelDir.shipped("ct").path


def read_ct_config(model_dir: str | Path | None = None) -> CTConfig:
    """A CT model directory's config (default: the shipped CT model)."""
    return ModelDir(model_dir or default_ct_model_dir()).config(CTConfig, "MedKit CT")


def load_ct_graph() -> KnowledgeGraph:
    return KnowledgeGraph.load(packaged=CT_GRAPH)


def measurement_report(volume, measures: dict, findings: list[dict], phase: str, warnings: list[str],
                       unreliable: dict[str, list[str]] | None = None, tissues: dict[str, dict] | None = None) -> str:
    """Report text from measurements only: every sentence states a measured value or a rule outcome.

    ``measures`` holds the organs that passed the plausibility checks; ``unreliable`` the organs that
    failed them, with the reasons (named, never stated as measured); ``tissues`` the threshold
    segments (``medkit.ct.tissues``)."""
    sx, sy, sz = volume.spacing
    nx, ny, nz = volume.size
    lines = [f"CT volume of {nx} x {ny} x {nz} voxels at {sx:.2f} x {sy:.2f} x {sz:.2f} mm. "
             "Automated organ segmentation and measurement (MedKit; not reviewed by a radiologist)."]
    unreliable = {o: r for o, r in (unreliable or {}).items() if r}
    if measures:
        parts = []
        for organ, m in measures.items():
            s = f"{ORGAN_NAMES.get(organ, organ)} {m.volume_ml:g} mL"
            if m.mean_hu is not None:
                s += f", mean attenuation {m.mean_hu:g} HU"
            if m.truncated:
                s += " (partly outside the scanned range)"
            parts.append(s)
        lines.append("Measured organs: " + "; ".join(parts) + ".")
    elif not unreliable:
        lines.append("No organ of the model's list was found in this volume.")
    else:
        lines.append("No organ was measured reliably.")
    if unreliable:
        lines.append("Could not be measured reliably (segment kept for correction): " + "; ".join(
            f"{ORGAN_NAMES.get(o, o)}: {', '.join(r)}" for o, r in unreliable.items()) + ".")
    if tissues:
        parts = []
        for name, t in tissues.items():
            s = f"{ORGAN_NAMES.get(name, name)} {t['volume_ml']:g} mL"
            if name == "lungs":
                s += (f", mean attenuation {t['mean_hu']:g} HU, emphysema index {t['emphysema_index_pct']:g} % "
                      f"(share of lung voxels below {t['emphysema_threshold_hu']:g} HU; valid for thin-section "
                      "inspiratory CT)")
            if t["truncated"]:
                s += " (partly outside the scanned range)"
            parts.append(s)
        lines.append("Threshold measurements (no learned model): " + "; ".join(parts) + ".")
    lines.append(f"Contrast phase from the aorta attenuation: {phase}.")
    for f in findings:
        if f["status"] == "positive":
            lines.append(f"{f['name']}: present by the rule {f['rule']} ({f['evidence']}).")
        elif f["status"] == "negative":
            lines.append(f"{f['name']}: not present by the rule {f['rule']} ({f['evidence']}).")
        else:
            lines.append(f"{f['name']}: not assessable ({f['evidence']}).")
    lines.append("No other finding is assessed by this model.")
    if warnings:
        lines.append("Input warnings: " + " ".join(w.split(": ", 1)[-1] for w in warnings))
    return " ".join(lines)


def add_tissue_labels(labels, masks: dict, values: dict[str, int]):
    """The organ label volume with the threshold segments written into the voxels no organ claims
    (``values``: name -> label value, from ``segment_labels``; lungs first, then bone, then the rest of the body)."""
    lab = sitk.GetArrayViewFromImage(labels)  # (Z, Y, X)
    tissue = np.zeros(lab.shape, np.uint8)
    for name in ("body", "bone", "lungs"):  # later names win: lungs over bone over the body
        if name in masks:
            tissue[masks[name]] = values[name]
    lab = np.where(lab > 0, lab, tissue)
    out = sitk.GetImageFromArray(lab.astype(np.uint8, copy=False))
    out.CopyInformation(labels)
    return out


class MedKitCT(torch.nn.Module):
    """Student + knowledge graph (+ generator once trained with reports); one object per model."""

    def __init__(self, cfg: CTConfig, student: CTStudent | None = None, with_generator: bool = False,
                 kg: KnowledgeGraph | None = None, lm=None, tokenizer=None, training: dict | None = None):
        super().__init__()
        self.cfg = cfg
        self.student = student or CTStudent(cfg.encoder)
        self.kg = kg or load_ct_graph()
        self.train_info = training or {}
        self.tissue_cfg = TissueConfig()  # anatomy and physics, not model parameters: not in config.json
        self.plausibility_cfg = PlausibilityConfig()
        self.generator = None
        if with_generator:
            n_tokens = int(torch.tensor(cfg.encoder.tokens_grid).prod())
            self.generator = ReportGenerator(cfg.generator, self.student.out_channels, n_tokens, lm, tokenizer)

    # ---- persistence -----------------------------------------------------------------------
    def save(self, model_dir: str | Path, training: dict | None = None) -> None:
        """The trained tensors (student [, generator]) and the config (:class:`medkit.core.modeldir.ModelDir`),
        and ``training.json``."""
        # the student is stored in float16 (half the size; the loss in accuracy is far below the
        # 3 mm grid's); it is cast back to float32 on load
        parts = {"student": {k: v.half() if v.is_floating_point() else v for k, v in self.student.state_dict().items()}}
        if self.generator is not None:
            parts["generator"] = self.generator.trainable_state()
        ModelDir(model_dir).save(parts, self.cfg)
        info = {**self.train_info, **(training or {}), "has_generator": self.generator is not None}
        (Path(model_dir) / TRAINING_FILE).write_text(json.dumps(info, indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: str | Path | None = None, lm_path: str | None = None, optimize: bool = True) -> "MedKitCT":
        model_dir = ModelDir(model_dir or default_ct_model_dir())
        cfg = read_ct_config(model_dir.path)
        if lm_path:
            cfg.generator.lm_path = lm_path
        training = {}
        if (model_dir.path / TRAINING_FILE).exists():
            training = json.loads((model_dir.path / TRAINING_FILE).read_text())
        has_gen = "generator" in model_dir.parts()
        model = cls(cfg, with_generator=has_gen, training=training)
        model.student.load_state_dict({k: v.float() for k, v in model_dir.part("student").items()})
        if has_gen:
            model.generator.load_trained(model_dir.part("generator"), optimize)
        return model.eval()

    # ---- inference ---------------------------------------------------------------------------
    def knowledge_for(self, findings: list[str]) -> tuple[str, list[Triple]]:
        return self.kg.prompt_for(findings, self.cfg.generator.max_triples_per_finding)

    @torch.no_grad()
    def report_from_path(self, path: str | Path, out_dir: str | Path | None = None, **decode) -> dict:
        """Read, segment, measure and report one CT volume (file or DICOM folder).

        Writes the organ label volume (input geometry) to ``out_dir`` (default: beside the input
        for files, inside the working directory for DICOM folders) as ``<name>_organs.nii.gz``.
        """
        vol = read_volume(path, self.cfg.volume)
        for w in vol.warnings:
            logger.warning("%s", w)
        seg = segment(self.student, vol, self.cfg, self.tissue_cfg)
        organs = self.cfg.encoder.organs
        values = segment_labels(organs)
        tissues = seg.tissues
        measures = measure_organs(seg.labels, vol.image, organs, self.plausibility_cfg.soft_tissue_hu)
        geometry = organ_geometry(seg.labels_model, tissues.body_model, seg.ref, organs)
        phase, reasons = check_organs(measures, geometry, seg.confidence, self.plausibility_cfg)
        unreliable = {o: r for o, r in reasons.items() if r}
        reliable = {o: m for o, m in measures.items() if o not in unreliable}
        findings = findings_from_measurements(reliable, unreliable)
        if self.train_info.get("label_head_trained"):
            probs = torch.sigmoid(seg.logits).tolist()
            for name, p in zip(self.cfg.encoder.observations, probs):
                if p >= self.cfg.generator.finding_threshold and name not in {f["name"] for f in findings}:
                    findings.append({"name": name, "status": "positive", "value": round(p, 4), "unit": "probability",
                                     "threshold": self.cfg.generator.finding_threshold, "rule": "student label head",
                                     "evidence": f"predicted probability {p:.2f}", "reference": None,
                                     "source": "prediction"})
        positive = [f["name"] for f in findings if f["status"] == "positive"]
        prompt, triples = self.knowledge_for(positive)
        text = measurement_report(vol, reliable, findings, phase, vol.warnings, unreliable, tissues.measurements)
        report, source = text, "measurements"
        if self.generator is not None:
            mask = torch.ones(seg.tokens.shape[:2], dtype=torch.bool)
            report = self.generator.generate(seg.tokens, mask, [prompt], **decode)[0]
            source = "generator"
        out_path = self._segmentation_path(Path(path), out_dir)
        sitk.WriteImage(add_tissue_labels(seg.labels, tissues.masks, values), str(out_path), useCompression=True)
        warnings = list(vol.warnings) + [
            f"{o}: not measured reliably ({'; '.join(r)}); its segment (label {values[o]}) is kept, marked "
            "reliable: false, for correction" for o, r in unreliable.items()]
        measurements = {}
        for o, m in measures.items():
            measurements[o] = {"volume_ml": m.volume_ml, "mean_hu": m.mean_hu, "median_hu": m.median_hu,
                               "std_hu": m.std_hu, "extent_mm": list(m.extent_mm), "truncated": m.truncated,
                               "soft_tissue_share": m.soft_tissue_share, "label": values[o], "reliable": o not in unreliable,
                               "implausible": reasons.get(o, []), "confidence": seg.confidence.get(o),
                               **{k: geometry[o][k] for k in ("main_component", "inside_body") if o in geometry}}
        for name, t in tissues.measurements.items():
            measurements[name] = {**t, "label": values[name]}
        return {
            "report": report,
            "report_source": source,
            "measurement_report": text,
            "findings": findings,
            "knowledge": [str(t) for t in triples],
            "modality": "CT",
            "measurements": measurements,
            "contrast_phase": phase,
            "segmentation": str(out_path),
            "segmentation_labels": {str(v): name for name, v in values.items()},
            "volume": {"size": list(vol.size), "spacing_mm": [round(s, 4) for s in vol.spacing],
                       "model_grid": list(seg.model_shape)},
            "warnings": warnings,
        }

    @staticmethod
    def _segmentation_path(path: Path, out_dir: str | Path | None) -> Path:
        name = volume_stem(path.name)
        folder = Path(out_dir) if out_dir else (Path.cwd() if path.is_dir() else path.parent)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}_organs.nii.gz"
