"""MedKit's CT path: native 3D volumes, 3D teacher -> student distillation, organ segmentation,
measurements with cited thresholds, CT knowledge graph and report.

    medkit generate medkit/data/samples/ct/totalsegmentator/example_ct_sm.nii.gz --json --out-dir /tmp/ct
    medkit train-ct --data medkit/data/samples/ct/manifest.jsonl --out runs/ct
"""
