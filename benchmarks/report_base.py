"""Which text should the findings table edit? Report bases and statement precision on a split.

    .venv/bin/python benchmarks/report_base.py --data ../shared/data [--split val] [--out rb.json]
        [--model runs/cxr/model] [--no-retrieval] [--precision 0.6 0.7 0.8]

Every row runs the shipped student once per study (its findings decide what is stated, as in
`medkit evaluate`) and differs only in the text that `medkit.cxr.consistency.align_report` edits:

- ``template``: the site's normal report fitted on the training reports (the shipped default);
- ``template_alone``: that report for every study, no edits (an image-blind constant: what the
  template alone scores, so that the edits' share of a row is visible);
- ``retrieval_mbr_k{K}``: minimum-Bayes-risk choice among the training reports: the one with the
  highest mean sentence BLEU-4 to the reports of the K training studies nearest by student image
  embedding (retrieval; training reports cannot ship with the model, so only a site's own
  deployment could use it);
- ``nearest_neighbour``: the nearest training study's report;
and ``template_precision_{P}`` refits the statement thresholds for precision P on the training
studies the model's were fitted on (its held-out calibration share, ``train.calibration_share``) (``generator.statement_precision``). The language model's rows come from `medkit
evaluate --report-base generator`. Selection on val only; the test split is scored elsewhere.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from medkit.core.data import load_studies
from medkit.core.metrics import normalize_report, sentence_bleu_matrix
from medkit.cxr.calibrate import calibration_studies, fit_statement_thresholds
from medkit.cxr.consistency import align_report
from medkit.cxr.data import StudyTensors, encode_studies
from medkit.cxr.evaluate import score, study_embedding, train_bank
from medkit.cxr.model import MedKitCXR, findings_from_probs, stack_views

METRICS = ("bleu_4", "meteor", "rouge_l", "cider", "ce_precision", "ce_f1_micro", "ce_f1_macro", "false_alarm_rate")


@torch.no_grad()
def student_probs(model: MedKitCXR, study) -> list[float]:
    present = [i for i, p in enumerate(study.images) if p.exists()]
    arrays = model.load_views([study.images[i] for i in present], [study.views[i] for i in present] if study.views else None)
    x, m = stack_views(arrays, model.cfg.encoder.image_size, model.cfg.encoder.max_views)
    return torch.sigmoid(model.student(x, m).logits)[0].tolist()


def retrieval_rows(model: MedKitCXR, train: list, evals: list, table: list[dict], ks: list[int], row) -> None:
    """The nearest training study's report, and the MBR choice among training reports for each K."""
    bank = train_bank(model, train)
    sims = (torch.stack([study_embedding(model, s) for s in evals]) @ bank.T).numpy()
    row("nearest_neighbour", [train[j].report for j in sims.argmax(1)], table)
    texts = sorted({normalize_report(s.report) for s in train} - {""})
    index = {t: i for i, t in enumerate(texts)}
    owner = np.array([index.get(normalize_report(s.report), -1) for s in train])
    bleu = sentence_bleu_matrix(texts)  # bleu[i, j]: text i as hypothesis, text j as reference
    for k in ks:
        chosen = []
        for q in range(len(evals)):
            weight = np.zeros(len(texts))
            np.add.at(weight, owner[np.argsort(-sims[q])[:k]], 1.0 / k)
            chosen.append(texts[int(np.argmax(bleu @ weight))])
        row(f"retrieval_mbr_k{k}", chosen, table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--k", type=int, nargs="+", default=[20, 50, 100])
    ap.add_argument("--precision", type=float, nargs="+", default=[0.5, 0.55, 0.6, 0.8])
    ap.add_argument("--model", help="model directory (default: the shipped model)")
    ap.add_argument("--no-retrieval", action="store_true", help="skip the nearest-neighbour and MBR rows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    usable = lambda s: s.report.strip() and any(p.exists() for p in s.images)  # noqa: E731
    train = [s for s in load_studies(args.data, "train") if usable(s)]
    evals = [s for s in load_studies(args.data, args.split) if usable(s)]
    model = MedKitCXR.load(args.model)
    gcfg = model.cfg.generator
    refs = [s.report for s in evals]
    probs = np.array([student_probs(model, s) for s in evals])
    flag = gcfg.thresholds(probs.shape[1])

    def decisions(statement: list[float]) -> list[dict]:
        return [{f["name"]: f["status"] for f in findings_from_probs(p.tolist(), flag, statement)} for p in probs]

    shipped = decisions(gcfg.positive_thresholds(probs.shape[1]))
    template = " ".join(gcfg.template)
    rows = {}

    def row(name: str, bases: list[str], table: list[dict]) -> None:
        hyps = [align_report(b, d, gcfg.borderline)[0] for b, d in zip(bases, table)]
        rows[name] = {k: score(refs, hyps)[k] for k in METRICS}
        print(name, {k: round(v, 3) for k, v in rows[name].items()}, flush=True)

    row("template", [template] * len(evals), shipped)
    row("template_alone", [template] * len(evals), [{} for _ in evals])
    if not args.no_retrieval:
        retrieval_rows(model, train, evals, shipped, args.k, row)
    # the statement thresholds are refitted where the model's were: its calibration studies
    tensors = StudyTensors(calibration_studies(train, model.cfg), model.cfg, show=False)
    train_probs = encode_studies(model.student, tensors).probs
    for target in args.precision:
        statement, _ = fit_statement_thresholds(train_probs, tensors.positive_matrix() > 0.5, flag, target)
        row(f"template_precision_{target}", [template] * len(evals), decisions(statement))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"split": args.split, "n_studies": len(evals), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
