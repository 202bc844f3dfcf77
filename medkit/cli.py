"""``medkit`` command line: train, generate, evaluate.

    medkit generate medkit/data/samples/nih_00000001_000.png --json
    medkit generate CT.nii.gz --json --out-dir out/        # a CT volume (file or DICOM folder)
    medkit train --data ../shared/data --out runs/cxr
    medkit train-ct --data ct_manifest.jsonl --out runs/ct
    medkit evaluate --data ../shared/data --split val --out val.json
    medkit evaluate-ct --manifest medkit/data/samples/ct/manifest.jsonl --out ct_eval.json
    medkit calibrate --data ../shared/data            # per-finding thresholds of the shipped model

Errors in the input print one line naming the file and the problem and exit with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from medkit.core.config import REPORT_BASES
from medkit.core.files import is_volume_path

logger = logging.getLogger("medkit")
# Each command imports the modules it runs (the imports marked "per command"): `medkit generate IMG.png`
# loads neither the CT path nor training, evaluation or the DICOM SR writer.


def _add_run_args(p, data_help: str, config_help: str, set_example: str) -> None:
    """Arguments shared by the training commands."""
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--out", required=True, help="run folder: checkpoints, logs and the final model (OUT/model)")
    p.add_argument("--config", help=f"{config_help} to start from (default: built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help=f"override one config value, e.g. --set {set_example} (repeatable)")
    p.add_argument("--lm", help="local Hugging Face causal-LM directory (default: packaged SmolLM2-135M-Instruct)")
    p.add_argument("--ckpt-every", type=int, default=50, help="checkpoint every N optimiser steps")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train teacher -> student -> generator (resumable; torchrun-ready)")
    _add_run_args(p, "folder with iu_xray/annotation.json, an annotation .json or a .jsonl manifest",
                  "MedKit config.json", "train.generator_epochs=2")
    p.add_argument("--until", choices=("teacher", "student", "generator"), default="generator",
                   help="stop after this stage (rerun with a later one to continue)")


def _add_train_ct(sub) -> None:
    p = sub.add_parser("train-ct", help="train the CT path: teacher probe -> 3D student -> generator (resumable)")
    _add_run_args(p, "JSONL manifest: {id, images: [volume], report, split[, masks]}", "MedKit CT config.json",
                  "train.student_epochs=100")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a model directory from a run's latest checkpoints")
    p.add_argument("--run", required=True, help="run folder of `medkit train`")
    p.add_argument("--data", required=True, help="the run's training data (for the report vocabulary)")
    p.add_argument("--out", required=True, help="model directory to write")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="write a report for one study (its views, or one CT volume)")
    p.add_argument("images", nargs="+", help="PNG, JPEG or DICOM files: the views of one study; or one CT "
                                             "volume (NIfTI/NRRD file or DICOM series folder)")
    p.add_argument("--out-dir", help="CT: folder for the organ label volume (default: beside the input)")
    p.add_argument("--model", help="model directory (default: the shipped model)")
    p.add_argument("--lm", help="override the language model directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--num-beams", type=int)
    p.add_argument("--max-new-tokens", type=int)
    _add_report_text_options(p)
    p.add_argument("--sr", metavar="FILE", help="also write a DICOM Structured Report referencing the DICOM inputs "
                                              "(CT: the slices of the DICOM series)")


def _add_report_text_options(p) -> None:
    """Which text a chest X-ray report starts from and whether the findings table edits it."""
    p.add_argument("--no-state-findings", action="store_true",
                   help="chest X-ray: the base text alone, not made to agree with the findings table")
    p.add_argument("--report-base", choices=REPORT_BASES,
                   help="chest X-ray: start from the site's normal report or from the language model's text "
                        "(default: the model's generator.report_base)")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model on a split, with floors")
    p.add_argument("--data", required=True, help="folder holding iu_xray/annotation.json and iu_xray/images/")
    p.add_argument("--split", default="val")
    p.add_argument("--model", help="model directory (default: the shipped model)")
    p.add_argument("--lm", help="override the language model directory")
    p.add_argument("--out", help="write the full result as JSON")
    p.add_argument("--limit", type=int, help="score only the first N studies")
    p.add_argument("--no-floors", action="store_true",
                   help="skip the most-frequent, nearest-neighbour and consensus floors")
    p.add_argument("--examples", action="store_true",
                   help="keep five reference/generated report pairs in the --out JSON (off: the dataset's "
                        "licence may forbid sharing its report text)")
    p.add_argument("--num-beams", type=int)
    _add_report_text_options(p)


def _add_evaluate_ct(sub) -> None:
    p = sub.add_parser("evaluate-ct", help="CT: Dice and volume error per organ against reference masks, "
                                           "organs rejected by the plausibility checks, latency")
    p.add_argument("--manifest", required=True, help="JSONL manifest of volumes with reference masks "
                                                     "(the train-ct format: images, masks, mask_labels, split)")
    p.add_argument("--model", help="CT model directory (default: the shipped CT model)")
    p.add_argument("--split", help="evaluate only this split (default: all; 'train' studies count as seen)")
    p.add_argument("--out", help="write the full result as JSON")


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="fit each finding's threshold on the training split (rewrites config.json)")
    p.add_argument("--data", required=True, help="the model's training data (its train split is used)")
    p.add_argument("--model", help="model directory (default: the shipped model)")


def _add_import_masks(sub) -> None:
    p = sub.add_parser("import-masks", help="store TotalSegmentator outputs as the organ masks of CT studies on a "
                                            "MedKit MONAI Label server (then POST /train/medkit_ct learns from them)")
    p.add_argument("masks", nargs="+", help="per study: <image id>.nii.gz (a TotalSegmentator multi-label map) or "
                                            "a folder <image id>/ of per-organ masks (<organ>.nii.gz)")
    p.add_argument("--server", default="http://127.0.0.1:8000", help="MONAI Label server URL")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="medkit", description="MedKit radiology report generation")
    ap.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    sub = ap.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_train_ct(sub)
    _add_generate(sub)
    _add_evaluate(sub)
    _add_evaluate_ct(sub)
    _add_export(sub)
    _add_calibrate(sub)
    _add_import_masks(sub)
    return ap


def _decode_overrides(args) -> dict:
    out = {}
    if getattr(args, "num_beams", None):
        out["num_beams"] = args.num_beams
    if getattr(args, "max_new_tokens", None):
        out["max_new_tokens"] = args.max_new_tokens
    return out


def cmd_train(args) -> int:
    from medkit.cxr.config import MedKitConfig  # per command: start-up time
    from medkit.cxr.train import train  # per command: start-up time

    cfg = MedKitConfig.load(args.config) if args.config else MedKitConfig()
    if args.lm:
        cfg.generator.lm_path = args.lm
    cfg = cfg.override(args.set)
    final = train(cfg, args.data, args.out, ckpt_every=args.ckpt_every, until=args.until)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"model written to {final}" if args.until == "generator" else f"{args.until} written to {final}")
    return 0


def cmd_train_ct(args) -> int:
    from medkit.ct.config import CTConfig  # per command: start-up time
    from medkit.ct.train import train_ct  # per command: start-up time

    cfg = CTConfig.load(args.config) if args.config else CTConfig()
    if args.lm:
        cfg.generator.lm_path = args.lm
    cfg = cfg.override(args.set)
    print(f"model written to {train_ct(cfg, args.data, args.out, ckpt_every=args.ckpt_every)}")
    return 0


def _write_result(args, result: dict, sources) -> bool:
    """The DICOM SR (``--sr``), then the result as JSON (``--json``: True) or its report text (False)."""
    if args.sr:
        from medkit.core.sr import write_report_sr  # per command: start-up time

        write_report_sr(result, sources, args.sr)
    print(json.dumps(result, indent=2) if args.json else result["report"])
    return args.json


def cmd_generate_ct(args) -> int:
    from medkit.ct.model import MedKitCT  # per command: start-up time
    from medkit.ct.images import read_volume  # per command: start-up time

    read_volume(args.images[0])  # fail fast on bad input before loading the model
    sources = None
    if args.sr:  # the SR references the series' slices
        from medkit.core.sr import dicom_sources  # per command: start-up time
        from medkit.ct.images import dicom_series_files  # per command: start-up time

        volume = Path(args.images[0])
        sources = dicom_sources(dicom_series_files(volume) if volume.is_dir() else [volume])
    model = MedKitCT.load(args.model, lm_path=args.lm)
    result = model.report_from_path(args.images[0], args.out_dir, **_decode_overrides(args))
    if not _write_result(args, result, sources):
        print(f"\nSegmentation: {result['segmentation']}")
    return 0


def cmd_generate(args) -> int:
    from medkit.cxr.images import load_cxr  # per command: start-up time
    from medkit.cxr.model import MedKitCXR  # per command: start-up time

    if len(args.images) == 1 and is_volume_path(args.images[0]):
        return cmd_generate_ct(args)
    for p in args.images:  # fail fast on bad input before loading the model
        load_cxr(p)
    sources = None
    if args.sr:
        from medkit.core.sr import dicom_sources  # per command: start-up time

        sources = dicom_sources(args.images)
    model = MedKitCXR.load(args.model, lm_path=args.lm)
    result = model.report_from_files(args.images, state_findings=False if args.no_state_findings else None,
                                     report_base=args.report_base, **_decode_overrides(args))
    if not _write_result(args, result, sources):
        for status in ("positive", "borderline"):
            names = [f"{f['name']} ({f['probability']:.2f})" for f in result["findings"] if f["status"] == status]
            print(f"\n{status.capitalize()} findings: " + (", ".join(names) or "none"), end="")
        print()
    return 0


def cmd_evaluate(args) -> int:
    from medkit.cxr.evaluate import evaluate, markdown_table  # per command: start-up time

    result = evaluate(args.data, args.split, args.model, args.limit, args.lm, _decode_overrides(args),
                      floors=not args.no_floors, state_findings=False if args.no_state_findings else None,
                      report_base=args.report_base)
    print(markdown_table(result))
    if args.out:
        if not args.examples:
            result.pop("examples", None)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def cmd_export(args) -> int:
    from medkit.cxr.train import export_model  # per command: start-up time

    print(f"model written to {export_model(args.run, args.data, args.out)}")
    return 0


def cmd_evaluate_ct(args) -> int:
    from medkit.ct.evaluate import evaluate_ct, markdown_table  # per command: start-up time

    result = evaluate_ct(args.manifest, args.model, args.split)
    print(markdown_table(result))
    print(json.dumps(result["summary"], indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {args.out}")
    return 0


def cmd_calibrate(args) -> int:
    from medkit.cxr.calibrate import calibrate, markdown_table  # per command: start-up time

    print(markdown_table(calibrate(args.model, args.data)))
    return 0


def cmd_import_masks(args) -> int:
    """Each mask converted to MedKit's organ values on its own grid, then ``PUT /datastore/label?tag=organs``;
    the server checks it lies on the study image's grid. One line per study; exit 1 if any failed."""
    import requests  # per command: start-up time
    import SimpleITK as sitk  # per command: start-up time

    from medkit.ct.images import VolumeInputError, totalsegmentator_mask  # per command: start-up time

    failed = 0
    for entry in args.masks:
        path = Path(entry.rstrip("/"))
        image_id = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
        try:
            mask = totalsegmentator_mask(path)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "organs.nii.gz"
                sitk.WriteImage(mask, str(out), useCompression=True)
                r = requests.put(f"{args.server.rstrip('/')}/datastore/label", params={"image": image_id,
                                 "tag": "organs"}, files={"label": ("organs.nii.gz", out.read_bytes())}, timeout=300)
            if not r.ok:
                raise ValueError(f"server answered {r.status_code}: {r.json().get('detail', r.text)[:300]}")

            organs = int((np.unique(sitk.GetArrayViewFromImage(mask)) > 0).sum())
            print(f"{image_id}: organ mask stored ({organs} organs)")
        except (VolumeInputError, ValueError, requests.RequestException) as e:
            failed += 1
            print(f"{image_id}: not stored: {e}", file=sys.stderr)
    return 1 if failed else 0


COMMANDS = {"train": cmd_train, "train-ct": cmd_train_ct, "generate": cmd_generate, "evaluate": cmd_evaluate,
            "evaluate-ct": cmd_evaluate_ct, "export": cmd_export, "calibrate": cmd_calibrate,
            "import-masks": cmd_import_masks}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("medkit").setLevel(logging.DEBUG if args.debug else logging.INFO)
    if not args.debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

        warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from packages or local paths only
    if args.threads:
        import torch  # per command: start-up time

        torch.set_num_threads(args.threads)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        if args.debug:
            raise
        print(f"medkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
