"""MedKit's CT path: native 3D volumes, 3D teacher -> student distillation, organ segmentation,
measurements with cited thresholds and plausibility checks, threshold segments (body, lungs,
bone), CT knowledge graph, report and evaluation.

    medkit generate medkit/data/samples/ct/totalsegmentator/example_ct_sm.nii.gz --json --out-dir /tmp/ct
    medkit train-ct --data medkit/data/samples/ct/manifest.jsonl --out runs/ct
    medkit evaluate-ct --manifest medkit/data/samples/ct/manifest.jsonl --out ct_eval.json
"""
