"""One chest X-ray encoder training step, timed: where a teacher epoch's minutes go.

Times, on synthetic input of the real shape (batch of B studies x V views, S x S pixels):
the forward + backward + AdamW step of the teacher (Lite0/1/2) and of the student, with and
without ``channels_last``; the radiograph augmentation of one batch (``medkit.cxr.augment``); and,
with ``--data``, decoding + resizing one IU X-ray image as ``medkit.cxr.data.StudyTensors`` does
(once per run, not per step). Prints one table; the numbers size a training plan
(images per epoch x seconds per image).

    OMP_NUM_THREADS=1 python benchmarks/train_step.py --threads 1 --data ../shared/data
    python benchmarks/train_step.py --threads 1 --backbones efficientnet_lite0 efficientnet_lite2 --sizes 224 260
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def time_steps(fn, warmup: int, steps: int) -> float:
    """Median seconds of ``fn()`` over ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def encoder_step(backbone: str, role: str, size: int, batch: int, views: int, channels_last: bool):
    """A closure running one training step of an encoder on random input."""
    import torch.nn.functional as F

    from medkit.cxr.config import EncoderConfig
    from medkit.cxr.encoders import CXREncoder

    cfg = EncoderConfig(image_size=size, teacher_backbone=backbone)
    enc = CXREncoder(cfg, role, pretrained=False).train()
    x = torch.randn(batch, views, 1, size, size)
    y = (torch.rand(batch, cfg.num_labels) < 0.1).float()
    if channels_last:
        enc = enc.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-4)

    def step():
        loss = F.binary_cross_entropy_with_logits(enc(x).logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def decode_seconds(data: Path, n: int, size: int) -> float:
    """Median seconds to load and resize one IU X-ray image (what StudyTensors does per image)."""
    from medkit.cxr.images import load_cxr, to_model_input

    paths = sorted((data / "iu_xray" / "images").glob("*.jpg"))[:n]
    if not paths:
        raise SystemExit(f"{data}/iu_xray/images: no .jpg found")
    out = []
    for p in paths:
        t0 = time.perf_counter()
        to_model_input(load_cxr(p), size)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16, help="studies per step")
    ap.add_argument("--views", type=int, default=2, help="views per study (the IU X-ray studies have 2)")
    ap.add_argument("--backbones", nargs="+", default=["efficientnet_lite0"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[224], help="one per backbone (or one for all)")
    ap.add_argument("--student", action="store_true", help="also time the student (Lite0[:6]) at the first size")
    ap.add_argument("--no-plain", action="store_true", help="time channels_last only")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--data", help="data folder with iu_xray/ (times image decoding too)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = args.sizes * len(args.backbones) if len(args.sizes) == 1 else args.sizes
    if len(sizes) != len(args.backbones):
        raise SystemExit(f"{len(args.backbones)} backbones but {len(sizes)} sizes")
    images = args.batch * args.views
    print(f"threads {torch.get_num_threads()}; batch {args.batch} studies x {args.views} views = {images} images")
    print("| what | size | layout | s / step | ms / image |")
    print("|---|---|---|---|---|")
    runs = [(b, "teacher", s) for b, s in zip(args.backbones, sizes)]
    if args.student:
        runs.append(("efficientnet_lite0", "student", sizes[0]))
    for backbone, role, size in runs:
        for cl in ([True] if args.no_plain else [True, False]):
            s = time_steps(encoder_step(backbone, role, size, args.batch, args.views, cl), args.warmup, args.steps)
            name = f"{role} {backbone.replace('efficientnet_', '')}"
            print(f"| {name} fwd+bwd+AdamW | {size} | {'channels_last' if cl else 'NCHW'} | {s:.3f} | "
                  f"{1000 * s / images:.1f} |", flush=True)
    from medkit.cxr.augment import augment
    from medkit.cxr.config import AugmentConfig

    x = torch.randn(images, 1, sizes[0], sizes[0]).clamp(-1, 1)
    s = time_steps(lambda: augment(x, AugmentConfig()), 1, args.steps)
    print(f"| augmentation of one batch | {sizes[0]} | NCHW | {s:.3f} | {1000 * s / images:.1f} |")
    if args.data:
        s = decode_seconds(Path(args.data), 64, sizes[0])
        print(f"| decode + resize one IU image (once per run) | {sizes[0]} | - | - | {1000 * s:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
