"""What the MedKit train tasks share: options, the reported studies, status in ``train_stats.json``,
and running on several GPUs (or CPU processes).

A subclass implements ``prepare(datastore, opts) -> data`` (the studies, split; read once, in the
train task's process) and ``fine_tune(data, opts, d, stats, version_dir) -> dict`` (the result, with
``promoted`` and ``version``), which runs in every rank. :meth:`ReportTrainTask.__call__` records
RUNNING / DONE / ERROR around it so ``GET /info`` shows the run even when it fails or the server
dies mid-run.

Several processes: MONAI Label's ``multi_gpu`` option (default on, as in its BasicTrainTask; its
``gpus`` option picks the devices) trains on every visible GPU with DistributedDataParallel over
NCCL, one process per GPU. ``processes: N`` asks for N explicitly; without a GPU that is N CPU
processes over gloo (how the tests exercise this path). Each rank trains on its share of every
epoch (``medkit.core.train.run_loop``); rank 0 alone writes the stats, saves and promotes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from monailabel.interfaces.tasks.train import TrainTask

from lib.params import parse_bool

logger = logging.getLogger(__name__)


class ReportTrainTask(TrainTask):
    option_types = {"max_epochs": int, "lr": float, "val_split": float, "min_studies": int,
                    "promote_tolerance": float, "seed": int, "multi_gpu": bool, "processes": int}

    def __init__(self, store, defaults: dict, description: str):
        super().__init__(description)
        self.store = store
        self.defaults = defaults

    def config(self):
        return dict(self.defaults)

    def stats(self):
        return self.store.read_stats()

    def options(self, request: dict) -> dict:
        opts = dict(self.defaults)
        for key, kind in self.option_types.items():
            if request.get(key) is not None:
                opts[key] = _parse_option(key, kind, request[key])
        if opts["max_epochs"] < 1 or not 0 < opts["val_split"] < 1 or opts["lr"] <= 0 or opts["min_studies"] < 2:
            raise ValueError(f"train options out of range: {opts}")
        if opts.get("processes") is not None and opts["processes"] < 1:
            raise ValueError(f"train option processes must be at least 1, got {opts['processes']}")
        return opts

    @staticmethod
    def world_size(opts: dict, device: str) -> int:
        """How many training processes: ``processes`` if given, else every visible GPU when
        ``multi_gpu`` (MONAI Label's ``gpus`` option has set CUDA_VISIBLE_DEVICES), else one."""
        import torch

        n_gpus = torch.cuda.device_count() if device == "cuda" else 0
        if opts.get("processes") is not None:
            if device == "cuda" and opts["processes"] > n_gpus:
                raise ValueError(f"train option processes={opts['processes']} but only {n_gpus} GPUs are visible")
            return opts["processes"]
        return n_gpus if opts.get("multi_gpu", True) and n_gpus > 1 else 1

    @staticmethod
    def reported(datastore):
        """``(image_id, image_uri, report_text)`` of every study whose final label is a readable report."""
        # MONAI Label's file watcher reloads the index from its JSON file in another thread; under
        # load that reload can race a label being saved and drop the label from the index (the file
        # stays on disk: a CT training in CI once saw 1 of 2 reported studies). Reconcile the index
        # with the files first, so training sees every report that was acknowledged.
        refresh = getattr(datastore, "refresh", None)
        if callable(refresh):
            refresh()
        for item in datastore.datalist():
            label = str(item.get("label", ""))
            if not label.endswith(".json"):
                continue  # not a report label
            image_id = Path(label).name[: -len(".json")]
            try:
                report = json.loads(Path(label).read_text())["report"]
            except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
                logger.warning("skipping %s: unreadable report label (%s)", image_id, type(e).__name__)
                continue
            yield image_id, item["image"], report

    def __call__(self, request, datastore):
        import torch

        from medkit.core.train import Dist

        opts = self.options(request)
        device = "cuda" if torch.cuda.is_available() and not str(request.get("device", "")).startswith("cpu") else "cpu"
        world = self.world_size(opts, device)
        started = time.time()
        stats = {"status": "RUNNING", "start_ts": int(started), "options": opts, "processes": world,
                 "base": self.store.current_version() or "base", "pid": os.getpid()}
        self.store.write_stats(stats)
        try:
            data = self.prepare(datastore, opts)
            version_dir = self.store.new_version_dir()
            if world == 1:
                result = self.fine_tune(data, opts, Dist(device=torch.device(device)), stats, version_dir)
            else:
                result = self.fine_tune_distributed(world, device, data, opts, stats, version_dir)
        except Exception as e:
            self.store.write_stats({**stats, "status": "ERROR", "error": str(e)[:500], "end_ts": int(time.time())})
            raise
        self.store.write_stats({**stats, **result, "status": "DONE", "end_ts": int(time.time()),
                                "total_time": round(time.time() - started, 1)})
        return result

    def fine_tune_distributed(self, world: int, device: str, data, opts: dict, stats: dict, version_dir: Path) -> dict:
        """``fine_tune`` in ``world`` spawned processes (spawn, not fork: CUDA cannot be forked);
        rank 0's result comes back through a file."""
        import torch.multiprocessing as mp

        logger.info("%s train: %d processes (%s)", self.log_name, world,
                    "one per GPU, NCCL" if device == "cuda" else "CPU, gloo")
        app_dir = str(Path(__file__).resolve().parents[2])
        if app_dir not in sys.path:  # spawned ranks unpickle this task by importing lib.trainers (run_sync: the
            sys.path.insert(0, app_dir)  # server loaded the app from its folder without adding it to sys.path)
        with tempfile.TemporaryDirectory(prefix="medkit-train-") as tmp:
            result_path = Path(tmp) / "result.json"
            mp.spawn(_rank_main, nprocs=world, join=True,
                     args=(world, _free_port(), device, self, data, opts, stats, version_dir, result_path))
            return json.loads(result_path.read_text())

    @property
    def log_name(self) -> str:
        return self.__class__.__name__.lower().replace("medkit", "medkit_")

    def preflight(self, datastore, opts: dict) -> None:
        """Cheap checks in the server before a training subprocess starts (ValueError: HTTP 400)."""
        n = self.count_studies(datastore)
        if n < opts["min_studies"]:
            raise ValueError(f"need at least {opts['min_studies']} {self.study_kind} with a final report to train, "
                             f"the datastore has {n}")

    study_kind = "studies"

    def count_studies(self, datastore) -> int:
        raise NotImplementedError

    def prepare(self, datastore, opts: dict):
        """The studies to train on and to hold out (picklable: sent to every rank)."""
        raise NotImplementedError

    def fine_tune(self, data, opts: dict, d, stats: dict, version_dir: Path) -> dict:
        """Train in rank ``d.rank`` of ``d.world``; rank 0 saves into ``version_dir`` and promotes."""
        raise NotImplementedError

    @staticmethod
    def split(studies: list, opts: dict) -> tuple[list, list]:
        """Seeded ``(held_out, train)``: ``val_split`` of the studies, at least one in each part."""
        import random

        studies = list(studies)
        random.Random(opts["seed"]).shuffle(studies)
        n_val = min(len(studies) - 1, max(1, round(len(studies) * opts["val_split"])))
        return studies[:n_val], studies[n_val:]

    def train_and_judge(self, stage: str, module, loss_fn, n_items: int, batch_size: int, cfg, d, val_loss,
                        opts: dict, stats: dict, version_dir: Path) -> dict:
        """Validation loss before, ``run_loop`` epochs (validated and reported after each), loss
        after and the promotion decision (the same in every rank: DDP keeps the weights equal). The
        run folder (optimiser state) lives beside the new version folder; rank 0 saves into
        ``version_dir`` when ``promoted`` and removes ``work``."""
        import math

        from lib.failpoints import failpoint
        from medkit.core.train import run_loop

        name = self.log_name
        before = val_loss()
        logger.info("%s train: validation loss before %.4f", name, before)
        epochs_log = []

        def on_epoch_end(epoch: int) -> dict:
            v = val_loss()
            epochs_log.append({"epoch": epoch, "val_loss": round(v, 5)})
            if d.main:
                logger.info("%s train: epoch %d/%d validation loss %.4f", name, epoch, opts["max_epochs"], v)
                self.store.write_stats({**stats, "epoch": epoch, "max_epochs": opts["max_epochs"],
                                        "epochs": epochs_log, "val_loss_before": round(before, 5)})
                failpoint("train.epoch_end")
            return {"val_loss": v}

        work = version_dir.parent.parent / "runs" / version_dir.name
        history = run_loop(stage, module, loss_fn, n_items, batch_size, opts["max_epochs"], opts["lr"], cfg, work, d,
                           ckpt_every=0, on_epoch_end=on_epoch_end)
        after = val_loss()
        promoted = math.isfinite(after) and after <= before + opts["promote_tolerance"]
        if d.main:
                logger.info("%s train: validation loss %.4f -> %.4f: %s", name, before, after,
                        "promoted" if promoted else "not promoted (worse than the current model)")
        losses = [h["loss"] for h in history if "loss" in h]
        return {"before": before, "after": after, "promoted": promoted, "epochs": epochs_log, "losses": losses,
                "work": work}


def _parse_option(key: str, kind, value):
    if kind is bool:
        return parse_bool(f"train option {key}", value)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"train option {key} must be {kind.__name__}, got {value!r}") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, device: str, task: ReportTrainTask, data, opts: dict, stats: dict,
               version_dir: Path, result_path: Path) -> None:
    """One spawned training process: join the group, fine-tune, rank 0 writes the result."""
    import torch
    import torch.distributed as dist

    from medkit.core.files import atomic_write
    from medkit.core.train import Dist

    # a spawned process starts without the server's logging: rank 0's lines are the task log
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stdout, force=True,
                        format="[%(asctime)s] [%(process)s] [%(levelname)s] (%(name)s) - %(message)s")
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        if device == "cuda":
            torch.cuda.set_device(rank)
            dev = torch.device("cuda", rank)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
            dev = torch.device("cpu")
        result = task.fine_tune(data, opts, Dist(rank, world, dev), stats, version_dir)
        if rank == 0:
            atomic_write(result_path, json.dumps(result))
    finally:
        dist.destroy_process_group()


def train_defaults(conf: dict, **extra) -> dict:
    """Training defaults from ``--conf train_*`` (each with a default; see the app README)."""
    return {
        "max_epochs": int(conf.get("train_epochs", "3")),
        "lr": float(conf.get("train_lr", "1e-4")),
        "val_split": float(conf.get("train_val_split", "0.2")),
        "min_studies": int(conf.get("train_min_studies", "4")),
        "promote_tolerance": float(conf.get("train_promote_tolerance", "0.0")),
        "seed": int(conf.get("train_seed", "42")),
        "multi_gpu": _parse_option("train_multi_gpu", bool, conf.get("train_multi_gpu", "true")),
        "processes": int(conf["train_processes"]) if conf.get("train_processes") else None,
        **extra,
    }
