"""Tune decoding on val: one model load, the encoder run once per study, many decoding settings.

    python benchmarks/decoding.py --data ../shared/data --split val --limit 100 --out runs/decoding.json

Each setting overrides the model's ``generator`` decoding options (``num_beams``,
``repetition_penalty``, ``no_repeat_ngram_size``, ``length_penalty``, ``min_new_tokens``,
``max_new_tokens``, ``draft_tokens``; beam search always runs in PyTorch); the table gives the language and clinical-efficacy metrics of
``medkit evaluate`` (same scorer) plus the mean generated length and the decoding time per
study. Pick on val only; the test split is scored with ``medkit evaluate`` as shipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from medkit.core.data import load_studies
from medkit.cxr.evaluate import score
from medkit.cxr.model import MedKitCXR

# name -> generate() overrides; "shipped" uses the model's own config
SETTINGS: dict[str, dict] = {
    "shipped": {},
    "repetition_1.0": {"repetition_penalty": 1.0},
    "repetition_1.05": {"repetition_penalty": 1.05},
    "repetition_1.2": {"repetition_penalty": 1.2},
    "ngram_3": {"no_repeat_ngram_size": 3},
    "ngram_off": {"no_repeat_ngram_size": 0},
    "min_tokens_20": {"min_new_tokens": 20},
    "min_tokens_35": {"min_new_tokens": 35},  # val references are longer than greedy reports (BLEU's brevity penalty)
    "min_tokens_45": {"min_new_tokens": 45},
    "beams_3": {"num_beams": 3},  # PyTorch generate: several times slower per study
    # speculative greedy decoding (medkit.core.generator.drafts): same reports, time only
    "drafts_0": {"draft_tokens": 0},
    "drafts_2": {"draft_tokens": 2},
    "drafts_4": {"draft_tokens": 4},
    "drafts_6": {"draft_tokens": 6},
}
GREEDY = [name for name, o in SETTINGS.items() if o.get("num_beams", 1) == 1]
COLUMNS = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "ce_f1_micro", "ce_f1_macro")


def encode(model: MedKitCXR, study) -> tuple:
    present = [i for i, p in enumerate(study.images) if p.exists()]
    views = [study.views[i] for i in present] if study.views else None
    tokens, mask, prompt, _, _ = model.generator_inputs(model.load_views([study.images[i] for i in present], views))
    return tokens, mask, prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--settings", nargs="*", default=GREEDY, choices=list(SETTINGS))
    ap.add_argument("--runtime", choices=["auto", "torch", "onnx"], default=None,
                    help="greedy decoding backend (default: the model's generator.runtime)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)

    model = MedKitCXR.load(a.model, optimize=False)
    if a.runtime:
        model.generator.cfg.runtime = a.runtime
    model.generator.optimize_for_inference()
    studies = [s for s in load_studies(a.data, a.split) if s.report.strip() and any(p.exists() for p in s.images)]
    studies = studies[: a.limit]
    inputs = [encode(model, s) for s in studies]
    refs = [s.report for s in studies]
    results = json.loads(a.out.read_text()) if a.out and a.out.exists() else {}
    texts: dict[str, list[str]] = {}
    for name in a.settings:
        if name in results:  # resume a sweep that was stopped
            continue
        hyps, times = [], []
        for tokens, mask, prompt in inputs:
            t0 = time.perf_counter()
            hyps.append(model.generator.generate(tokens, mask, [prompt], **SETTINGS[name])[0])
            times.append(time.perf_counter() - t0)
        texts[name] = hyps
        m = score(refs, hyps)
        m.pop("per_observation", None)
        results[name] = {"overrides": SETTINGS[name], "n_studies": len(studies), "metrics": m,
                         "mean_words": float(np.mean([len(h.split()) for h in hyps])),
                         "decode_s_p50": float(np.median(times))}
        print(name, {c: round(m[c], 3) for c in COLUMNS}, f"words {results[name]['mean_words']:.1f}",
              f"decode p50 {results[name]['decode_s_p50']:.2f} s", flush=True)
        if "drafts_0" in texts and "draft_tokens" in SETTINGS[name]:  # speculation must not change a report
            same = sum(x == y for x, y in zip(texts["drafts_0"], hyps))
            results[name]["same_reports_as_drafts_0"] = same
            print(f"{name}: {same} of {len(hyps)} reports identical to drafts_0")
        if a.out:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(results, indent=2))
    print(f"\nreference mean words {np.mean([len(r.split()) for r in refs]):.1f}")
    print("| setting | " + " | ".join(COLUMNS) + " | words | decode p50 s |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    for name, r in results.items():
        cells = [f"{r['metrics'][c]:.3f}" for c in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + f" | {r['mean_words']:.1f} | {r['decode_s_p50']:.2f} |")


if __name__ == "__main__":
    main()
