"""The training engine both modalities share: seeded, resumable epochs with atomic checkpoints,
DistributedDataParallel under torchrun, and the run-folder checks that make resuming safe.

``run_loop`` trains one stage: ``loss_fn(module, idx) -> (loss, logs)`` over seeded batches,
``OUT/<stage>/state.pt`` (trainable tensors, optimiser, step, RNG) every ``ckpt_every`` steps and
at each epoch end. ``check_resumable`` refuses a run folder whose config differs beyond the keys
the modality allows to change. Used by ``medkit.cxr.train``, ``medkit.ct.train`` and the MONAI
Label trainers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from medkit.core.config import ConfigFile
from medkit.core.files import atomic_write

logger = logging.getLogger(__name__)


# ---- distributed helpers ---------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    device = torch.device("cpu")
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return Dist(rank, world, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_order(n: int, seed: int, epoch: int, d: Dist) -> list[int]:
    """This rank's share of a seeded permutation (DistributedSampler semantics, padded)."""
    g = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    total = math.ceil(n / d.world) * d.world
    perm += perm[: total - n]
    return perm[d.rank : total : d.world]


def make_batches(order: list[int], batch_size: int, lengths: list[int] | None, seed: int) -> list[list[int]]:
    """Batches in ``order``; with ``lengths``, items of similar length share a batch (less padding):
    windows of 16 batches are sorted by length, cut into batches, and the batches shuffled."""
    if lengths is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * 16
    batches = []
    for i in range(0, len(order), window):
        chunk = sorted(order[i : i + window], key=lambda j: lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


# ---- checkpointing ---------------------------------------------------------------------------
def save_state(path: Path, module: torch.nn.Module, opt, sched, epoch: int, step: int, extra: dict | None = None) -> None:
    """Trainable tensors + optimiser + position + RNG, written atomically."""
    state = {
        "model": {k: v for k, v in module.state_dict().items() if k in trainable_names(module)},
        "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch, "step": step,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "extra": extra or {},
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def trainable_names(module: torch.nn.Module) -> set[str]:
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    # BatchNorm running statistics are state too (buffers of trainable submodules).
    names |= {n for n, _ in module.named_buffers() if not n.startswith("lm.")}
    return names


def load_state(path: Path, module: torch.nn.Module, opt, sched) -> tuple[int, int, dict]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    module.load_state_dict(state["model"], strict=False)
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return state["epoch"], state["step"], state.get("extra", {})


def make_optimizer(module, lr, cfg: ConfigFile, total_steps: int):
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.train.weight_decay)
    warm = min(cfg.train.warmup_steps, max(1, total_steps // 10))

    def lr_at(step):  # linear warm-up, cosine decay to 10 %
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total_steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


# ---- generic loop ----------------------------------------------------------------------------
def run_loop(name: str, module: torch.nn.Module, loss_fn, n_items: int, batch_size: int, epochs: int, lr: float,
             cfg: ConfigFile, out: Path, d: Dist, ckpt_every: int, on_epoch_end=None,
             lengths: list[int] | None = None, epoch_items=None) -> list[dict]:
    """Seeded, resumable epochs over ``n_items``; ``loss_fn(module, idx) -> (loss, logs)``.
    ``epoch_items(epoch)``, when given, is the list of item indices that epoch draws from (the
    same length every epoch); by default every item, once."""
    if epoch_items is None:
        epoch_items = lambda epoch: range(n_items)  # noqa: E731
    per_epoch = len(epoch_items(0))
    steps_per_epoch = math.ceil(math.ceil(per_epoch / d.world) / batch_size)
    total = steps_per_epoch * epochs
    opt, sched = make_optimizer(module, lr, cfg, total)
    ckpt = out / name / "state.pt"
    history_path = out / name / "history.jsonl"
    epoch, step, extra = 0, 0, {}
    if ckpt.exists():
        epoch, step, extra = load_state(ckpt, module, opt, sched)
        logger.info("%s: resuming at epoch %d step %d", name, epoch, step)
    model = DDP(module, find_unused_parameters=True) if d.world > 1 else module
    history = extra.get("history", [])
    if d.main:
        history_path.parent.mkdir(parents=True, exist_ok=True)
    while epoch < epochs:
        items = epoch_items(epoch)
        order = [items[i] for i in epoch_order(len(items), cfg.train.seed, epoch, d)]
        batches = make_batches(order, batch_size, lengths, cfg.train.seed + epoch)
        module.train()
        bar = tqdm(total=len(batches), initial=step, desc=f"{name} epoch {epoch + 1}/{epochs}", disable=not d.main)
        for b in range(step, len(batches)):
            t0 = time.perf_counter()
            loss, logs = loss_fn(model, batches[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], cfg.train.grad_clip)
            opt.step()
            sched.step()
            rec = {"epoch": epoch, "step": b, "loss": float(loss), **{k: float(v) for k, v in logs.items()},
                   "items": len(batches[b]), "seconds": round(time.perf_counter() - t0, 4)}
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
            bar.update(1)
            if d.main:
                with open(history_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if ckpt_every and (b + 1) % ckpt_every == 0 and b + 1 < len(batches):
                    save_state(ckpt, module, opt, sched, epoch, b + 1, {"history": history})
        bar.close()
        epoch, step = epoch + 1, 0
        if on_epoch_end is not None:
            extra_logs = on_epoch_end(epoch)
            if extra_logs and d.main:
                history.append({"epoch": epoch - 1, **extra_logs})
                with open(history_path, "a") as f:
                    f.write(json.dumps({"epoch": epoch - 1, **extra_logs}) + "\n")
        if d.main:
            save_state(ckpt, module, opt, sched, epoch, 0, {"history": history})
    module.eval()
    return history


def config_changes(a: ConfigFile, b: ConfigFile) -> set[str]:
    """Keys (``section.key``) whose values differ between two configs of the same kind."""
    da, db = a.to_dict(), b.to_dict()
    out = set()
    for section in da:
        if isinstance(da[section], dict):
            out |= {f"{section}.{k}" for k in da[section] if da[section][k] != db[section].get(k)}
        elif da[section] != db[section]:
            out.add(section)
    return out


def trained_epochs(out: Path, stage: str) -> int | None:
    """Epochs a stage's checkpoint has completed (None before its first checkpoint)."""
    ckpt = out / stage / "state.pt"
    return torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] if ckpt.exists() else None


def check_resumable(out: Path, cfg: ConfigFile, stage_epochs: dict[str, int], resumable: set[str]) -> None:
    """Refuse to resume a run folder whose config differs beyond ``resumable`` (the ``section.key``
    settings the modality lets a resumed run change, e.g. ``medkit.cxr.train.RESUMABLE_CHANGES``), or whose
    epochs the checkpoints cannot honour; then save ``cfg``. ``stage_epochs`` maps each stage, in
    training order, to the epochs the config asks of it. A stage cannot be trained to fewer epochs
    than it has, and a finished stage that a later one learned from is never trained further
    (more generator epochs, the last stage, are fine). Checked before anything is written."""
    prev = out / "config.json"
    if prev.exists():
        changed = config_changes(type(cfg).load(prev), cfg) - resumable
        if changed:
            raise ValueError(f"{out} holds a run with another config ({', '.join(sorted(changed))} differ); "
                             "use a new --out or the same settings")
    stages = list(stage_epochs)
    for i, (stage, epochs) in enumerate(stage_epochs.items()):
        done = trained_epochs(out, stage)
        if done is None:
            continue
        if done > epochs:
            raise ValueError(f"{out}: the {stage} stage has trained {done} epochs and the config asks for {epochs}; "
                             "a checkpoint cannot be untrained: use at least that many or a new --out")
        if done < epochs and stage_done(out, stage) and i < len(stages) - 1:
            raise ValueError(f"{out}: the {stage} stage finished after {done} epochs and the config asks for {epochs}; "
                             f"the {', '.join(stages[i + 1:])} stage(s) learned from it, so it is not trained further: "
                             "use a new --out")
    cfg.save(prev)


def stage_done(out: Path, name: str) -> bool:
    return (out / name / "done").exists()


def mark_done(out: Path, name: str, d: Dist) -> None:
    if d.main:
        (out / name / "done").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    if d.world > 1:
        dist.barrier()
