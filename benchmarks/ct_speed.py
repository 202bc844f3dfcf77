"""CT path speed: latency and peak memory of ``MedKitCT.report_from_path`` (read, resample,
sliding-window segmentation, mapping back, measurement, report, writing the label volume).

Two inputs: the committed sample (TotalSegmentator ``example_ct_sm``, 122 x 101 x 30 at 3 mm, or
``--volume``) and a 512 x 512 x 200 volume made by resampling that same volume (linear) over its
physical extent (target of issue #4: <= 15 s and <= 4 GiB on a CPU). Each case runs in a fresh
subprocess (peak RSS is per process) with the model loaded first; stages are timed separately.

    python benchmarks/ct_speed.py --threads 2 --out ct_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "medkit" / "data" / "samples" / "ct" / "totalsegmentator" / "example_ct_sm.nii.gz"


def make_large(src: Path, dst: Path, size=(512, 512, 200)) -> None:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(src), sitk.sitkFloat32)
    extent = [n * s for n, s in zip(img.GetSize(), img.GetSpacing())]
    ref = sitk.Image(list(size), sitk.sitkInt16)
    ref.SetSpacing([e / n for e, n in zip(extent, size)])
    ref.SetDirection(img.GetDirection())
    ref.SetOrigin(img.TransformContinuousIndexToPhysicalPoint([-0.5 + 0.5 * e / n / s for e, n, s in
                                                               zip(extent, size, img.GetSpacing())]))
    out = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkInt16)
    sitk.WriteImage(out, str(dst), useCompression=True)


def run_case(path: str, threads: int, repeats: int) -> dict:
    """Executed in a child process: load the model, then time ``repeats`` runs stage by stage."""
    import resource

    import torch

    torch.set_num_threads(threads)
    from medkit.ct.measurements import findings_from_measurements, measure_organs
    from medkit.ct.model import MedKitCT
    from medkit.ct.segmentation import run_student
    from medkit.ct.images import array_to_image, labels_to_original, read_volume, to_model_grid

    t0 = time.perf_counter()
    model = MedKitCT.load()
    load_s = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        st = {}
        t = time.perf_counter()
        vol = read_volume(path, model.cfg.volume)
        st["read"] = time.perf_counter() - t
        t = time.perf_counter()
        arr, ref = to_model_grid(vol.image, model.cfg.volume)
        st["resample"] = time.perf_counter() - t
        t = time.perf_counter()
        probs, logits, tokens = run_student(model.student, arr, model.cfg)
        st["student"] = time.perf_counter() - t
        t = time.perf_counter()
        labels = labels_to_original(array_to_image(probs.argmax(0).to(torch.uint8).numpy(), ref), vol.image)
        st["to_original"] = time.perf_counter() - t
        t = time.perf_counter()
        findings_from_measurements(measure_organs(labels, vol.image, model.cfg.encoder.organs))
        st["measure"] = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            model.report_from_path(path, d)
            st["end_to_end"] = time.perf_counter() - t
        runs.append(st)
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    return {"input_size": list(vol.size), "spacing_mm": [round(s, 3) for s in vol.spacing],
            "model_grid": list(arr.shape), "threads": threads, "model_load_s": round(load_s, 2),
            "stages_s": {k: round(v, 2) for k, v in best.items()},
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volume", default=str(SAMPLE), help="CT volume (file or DICOM folder) to start from")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="ct_speed.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(args.child, args.threads, args.repeats)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        large = Path(tmp) / "ct_512x512x200.nii.gz"
        make_large(Path(args.volume), large)
        results = {}
        for name, path in (("sample", args.volume), ("512x512x200", str(large))):
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            r = subprocess.run([sys.executable, __file__, "--child", path, "--threads", str(args.threads),
                                "--repeats", str(args.repeats)], capture_output=True, text=True, env=env)
            if r.returncode != 0:
                print(r.stderr[-3000:], file=sys.stderr)
                return 1
            results[name] = json.loads(r.stdout.strip().splitlines()[-1])
    stages = list(next(iter(results.values()))["stages_s"])
    print("| case | input | model grid | " + " | ".join(f"{s} s" for s in stages) + " | peak RSS MiB |")
    print("|---|---|---|" + "---|" * len(stages) + "---|")
    for name, r in results.items():
        print(f"| {name} | {'x'.join(map(str, r['input_size']))} | {'x'.join(map(str, r['model_grid']))} | "
              + " | ".join(f"{r['stages_s'][s]:.2f}" for s in stages) + f" | {r['peak_rss_mib']:.0f} |")
    Path(args.out).write_text(json.dumps({"threads": args.threads, "cases": results}, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
