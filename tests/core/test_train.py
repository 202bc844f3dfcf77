"""The shared training engine (medkit.core.train); the CXR and CT stages are tested in tests/cxr and tests/ct."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from medkit.core.config import ConfigFile
from medkit.core.train import Dist, run_loop


@dataclass
class LoopSettings:
    """What the engine reads of a modality's train section."""

    seed: int = 0
    weight_decay: float = 0.0
    warmup_steps: int = 1
    grad_clip: float = 1.0


@dataclass
class ToyConfig(ConfigFile):
    train: LoopSettings = field(default_factory=LoopSettings)


def test_run_loop_trains_on_the_items_each_epoch_draws(tmp_path):
    cfg = ToyConfig()
    seen: list[list[int]] = []
    module = torch.nn.Linear(1, 1)

    def loss_fn(m, idx):
        seen.append(list(idx))
        return m(torch.ones(len(idx), 1)).sum(), {}

    run_loop("toy", module, loss_fn, 10, 2, 2, 1e-3, cfg, tmp_path, Dist(), 0,
             epoch_items=lambda epoch: [epoch, 5, 7])
    steps = [h for h in [json.loads(x) for x in (tmp_path / "toy" / "history.jsonl").read_text().splitlines()] if "loss" in h]
    assert [h["epoch"] for h in steps] == [0, 0, 1, 1]  # 3 items, batch 2: two steps per epoch
    assert sorted(sum(seen[:2], [])) == [0, 5, 7] and sorted(sum(seen[2:], [])) == [1, 5, 7]
