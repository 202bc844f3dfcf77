"""Training: a tiny three-stage run whose losses fall, exact resume after a kill, and DDP with 2 CPU processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT, TINY_OVERRIDES


def _history(run: Path, stage: str) -> list[dict]:
    return [json.loads(x) for x in (run / stage / "history.jsonl").read_text().splitlines()]


def _epoch_means(hist: list[dict]) -> list[float]:
    by_epoch: dict[int, list[float]] = {}
    for h in hist:
        if "loss" in h:
            by_epoch.setdefault(h["epoch"], []).append(h["loss"])
    return [sum(v) / len(v) for _, v in sorted(by_epoch.items())]


def test_tiny_training_losses_fall(tiny_model_dir):
    run = tiny_model_dir.parent
    for stage in ("teacher", "student", "generator"):
        assert (run / stage / "done").exists()
    gen = _epoch_means(_history(run, "generator"))
    assert gen[-1] < gen[0] * 0.9, gen
    student = _epoch_means(_history(run, "student"))
    assert student[-1] < student[0], student
    assert any("val_loss" in h for h in _history(run, "generator"))
    assert (tiny_model_dir / "config.json").exists() and (tiny_model_dir / "model.safetensors").exists()


def _train_cmd(data: Path, out: Path, lm: Path, extra: list[str] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "medkit.cli", "train", "--data", str(data), "--out", str(out), "--lm", str(lm),
           "--ckpt-every", "1"]
    for o in TINY_OVERRIDES + list(extra):
        cmd += ["--set", o]
    return cmd


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(tmp_path, tiny_lm_dir, tiny_manifest):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    subprocess.run(_train_cmd(tiny_manifest, ref, tiny_lm_dir), check=True, env=_env(), capture_output=True)
    proc = subprocess.Popen(_train_cmd(tiny_manifest, cut, tiny_lm_dir), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hist = cut / "generator" / "history.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if hist.exists() and len(hist.read_text().splitlines()) >= 5:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (cut / "model").exists()
    done = subprocess.run(_train_cmd(tiny_manifest, cut, tiny_lm_dir), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    a = load_file(str(ref / "model" / "model.safetensors"))
    b = load_file(str(cut / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_resume_refuses_other_config(tmp_path, tiny_lm_dir, tiny_manifest):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"train": {"seed": 1}}')
    r = subprocess.run(_train_cmd(tiny_manifest, out, tiny_lm_dir), env=_env(), capture_output=True, text=True)
    assert r.returncode == 2 and "another config" in r.stderr


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, tiny_lm_dir, tiny_manifest):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += _train_cmd(tiny_manifest, out, tiny_lm_dir, ["train.generator_epochs=2"])[1:]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "model" / "model.safetensors").exists()
    # 4 training studies, batch 2, 2 processes: each process takes 1 step per epoch (2 alone).
    steps = [h for h in _history(out, "generator") if "loss" in h]
    assert len(steps) == 2 and {h["epoch"] for h in steps} == {0, 1}


def test_resume_refuses_epochs_the_checkpoints_cannot_honour(tmp_path, tiny_model_dir):
    import shutil

    from medkit.core.train import check_resumable
    from medkit.cxr.config import MedKitConfig
    from medkit.cxr.train import RESUMABLE_CHANGES

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir.parent, run)
    saved = (run / "config.json").read_text()
    cfg = MedKitConfig.load(run / "config.json")
    epochs = {"teacher": cfg.train.teacher_epochs, "student": cfg.train.student_epochs,
              "generator": cfg.train.generator_epochs}
    # a finished teacher is not trained further: the student and generator learned from it
    with pytest.raises(ValueError, match="teacher stage finished after 2 epochs.*student, generator"):
        check_resumable(run, cfg.override(["train.teacher_epochs=3"]), {**epochs, "teacher": 3}, RESUMABLE_CHANGES)
    # no stage goes below the epochs its checkpoint holds
    with pytest.raises(ValueError, match="generator stage has trained 8 epochs and the config asks for 4"):
        check_resumable(run, cfg.override(["train.generator_epochs=4"]), {**epochs, "generator": 4}, RESUMABLE_CHANGES)
    assert (run / "config.json").read_text() == saved  # refused before anything was written
    # more epochs of the last stage is how the shipped model was made
    longer = cfg.override(["train.generator_epochs=9"])
    check_resumable(run, longer, {**epochs, "generator": 9}, RESUMABLE_CHANGES)
    assert MedKitConfig.load(run / "config.json").train.generator_epochs == 9


def test_resume_may_change_epochs_only():
    from medkit.core.train import config_changes
    from medkit.cxr.config import MedKitConfig
    from medkit.cxr.train import RESUMABLE_CHANGES

    base = MedKitConfig()
    longer = base.override(["train.generator_epochs=9", "train.eval_limit=5", "train.normal_keep=0.5"])
    assert config_changes(base, longer) <= RESUMABLE_CHANGES
    assert config_changes(base, base.override(["generator.lora_rank=4"])) == {"generator.lora_rank"}


def test_generator_epochs_keep_every_abnormal_study_and_redraw_the_normal_ones():
    from medkit.cxr.train import generator_epoch_items

    findings = [["Cardiomegaly"], [], [], ["Edema", "Atelectasis"], [], [], [], [], [], []]
    abnormal = {0, 3}
    assert generator_epoch_items(findings, 1.0, seed=1)(0) == list(range(10))
    items = generator_epoch_items(findings, 0.5, seed=1)
    draws = [items(e) for e in range(6)]
    for d in draws:
        assert abnormal <= set(d) and len(d) == len(set(d)) == 2 + 4  # half of the 8 normal studies
    assert len({tuple(d) for d in draws}) > 1  # a fresh draw each epoch ...
    assert draws == [generator_epoch_items(findings, 0.5, seed=1)(e) for e in range(6)]  # ... that is seeded
    assert set().union(*draws) == set(range(10))


def test_normal_keep_must_be_a_fraction():
    from medkit.cxr.config import MedKitConfig

    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(ValueError, match="normal_keep"):
            MedKitConfig().override([f"train.normal_keep={bad}"])


def test_export_matches_final_model(tiny_model_dir, tmp_path):
    from medkit.cxr.train import export_model
    from tests.conftest import write_tiny_iu_folder

    run = tiny_model_dir.parent
    out = export_model(run, write_tiny_iu_folder(tmp_path / "d"), tmp_path / "exported")
    a = load_file(str(tiny_model_dir / "model.safetensors"))
    b = load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    from medkit.cxr.config import MedKitConfig

    thresholds = [MedKitConfig.load(d / "config.json").generator.finding_thresholds for d in (tiny_model_dir, out)]
    assert thresholds[0] == thresholds[1] and len(thresholds[0]) == 14


def test_ablation_switches_teacher_encoder_and_generator_budget(tmp_path, tiny_lm_dir, tiny_manifest):
    """``encoder.report_encoder=teacher`` (no student stage; the model reloads with the teacher) and
    ``train.generator_limit`` (the generator trains on the first N studies): benchmarks/ablations.py."""
    from medkit.cxr.model import MedKitCXR

    out = tmp_path / "teacher_run"
    extra = ["encoder.report_encoder=teacher", "train.generator_limit=2", "train.generator_epochs=1"]
    r = subprocess.run(_train_cmd(tiny_manifest, out, tiny_lm_dir, extra), env=_env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (out / "student").exists()  # the teacher feeds the generator: no distillation stage
    steps = [h for h in _history(out, "generator") if "loss" in h]
    assert len(steps) == 1  # 2 studies, batch 2, one epoch
    model = MedKitCXR.load(out / "model", lm_path=str(tiny_lm_dir))
    assert model.student.role == "teacher" and model.cfg.encoder.report_encoder == "teacher"
    out_ = model.report_from_arrays([torch.rand(80, 80).numpy()], num_beams=1)
    assert isinstance(out_["report"], str)


def test_encoders_never_train_on_the_calibration_studies(tmp_path, tiny_manifest):
    """``train.calibration_share``: the held-out studies are in no teacher or student step."""
    from medkit.core.data import load_studies
    from medkit.cxr.config import MedKitConfig
    from medkit.cxr.data import calibration_split
    from medkit.cxr.train import train
    from tests.conftest import TINY_OVERRIDES

    ids = [s.id for s in load_studies(tiny_manifest, "train")]
    seed = next(s for s in range(100) if calibration_split(ids, 0.45, s).sum() == 1)
    cfg = MedKitConfig().override(TINY_OVERRIDES + ["train.calibration_share=0.45", f"train.seed={seed}"])
    train(cfg, tiny_manifest, tmp_path / "run", ckpt_every=0, until="student")
    for stage in ("teacher", "student"):
        first_epoch = [h for h in _history(tmp_path / "run", stage) if "loss" in h and h["epoch"] == 0]
        assert sum(h["items"] for h in first_epoch) == len(ids) - 1, stage
    every = next(s for s in range(1000) if calibration_split(ids, 0.45, s).all())
    cfg = MedKitConfig().override(TINY_OVERRIDES + ["train.calibration_share=0.45", f"train.seed={every}"])
    with pytest.raises(ValueError, match="holds out all 4 training studies"):
        train(cfg, tiny_manifest, tmp_path / "run_all_held", ckpt_every=0, until="teacher")


def test_class_pos_weight_balances_rare_observations():
    import numpy as np

    from medkit.cxr.train import class_pos_weight

    labels = np.zeros((100, 4))
    labels[:4, 0] = 1  # 4 positives: 96 / 4 = 24
    labels[:25, 1] = 1  # 25: 75 / 25 = 3
    labels[:60, 2] = 1  # more common than not: weight 1
    # column 3 has no positive: weight 1
    assert class_pos_weight(labels, "none", 10) is None
    assert class_pos_weight(labels, "balanced", 10).tolist() == [10.0, 3.0, 1.0, 1.0]  # capped at 10
    assert torch.allclose(class_pos_weight(labels, "sqrt", 10), torch.tensor([24**0.5, 3**0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match="pos_weight"):
        class_pos_weight(labels, "focal", 10)
    with pytest.raises(ValueError, match="pos_weight"):
        from medkit.cxr.config import MedKitConfig

        MedKitConfig().override(["train.pos_weight=focal"])


def test_study_tensors_hold_the_directly_decoded_images(tiny_manifest):
    """The in-memory image cache is what decoding each file gives (as float16), views in order."""
    from medkit.cxr.config import MedKitConfig
    from medkit.core.data import load_studies
    from medkit.cxr.images import load_cxr, to_model_input
    from medkit.cxr.data import StudyTensors

    cfg = MedKitConfig().override(["encoder.image_size=64"])
    studies = load_studies(tiny_manifest, "val")
    data = StudyTensors(studies, cfg, show=False)
    for s, x, m in zip(data.studies, data.images, data.masks):
        assert x.shape == (2, 1, 64, 64) and x.dtype == torch.float16
        for v, path in enumerate(s.images):
            direct = torch.from_numpy(to_model_input(load_cxr(path), 64)).half()
            assert torch.equal(x[v, 0], direct), (s.id, v)
        assert m.tolist() == [True, len(s.images) > 1]
        assert not x[len(s.images):].any()  # a missing view is zeros, masked out
    # labeler positives (uncertain = negative) beside the training labels (uncertain = 1)
    assert data.positive_matrix().shape == data.label_matrix().shape == (2, 14)
    assert (data.positive_matrix() <= data.label_matrix()).all()


def test_teacher_stage_validates_keeps_best_and_resumes_exactly(tmp_path, monkeypatch):
    """``--until teacher``: a val AUC line per epoch, the best epoch kept, and a run killed after a
    mid-epoch checkpoint resumes (augmentation RNG included) to the uninterrupted tensors."""
    import medkit.core.train as engine
    import medkit.cxr.train as mt
    from medkit.cxr.config import MedKitConfig
    from tests.conftest import write_tiny_iu_folder

    torch.set_num_threads(1)
    data = write_tiny_iu_folder(tmp_path / "data")
    cfg = MedKitConfig().override(["encoder.image_size=64", "train.teacher_epochs=2", "train.batch_size=2",
                                   "train.warmup_steps=1", "train.auc_min_positives=1"])
    ref = mt.train(cfg, data, tmp_path / "ref", ckpt_every=1, until="teacher")
    assert ref == tmp_path / "ref" / "teacher" and (ref / "done").exists() and not (tmp_path / "ref" / "student").exists()
    lines = [json.loads(x) for x in (ref / "val_auc.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and all(x["mean_auc"] is not None for x in lines)
    best = json.loads((ref / "best.json").read_text())
    assert best["mean_auc"] == max(x["mean_auc"] for x in lines)
    kept, best_t = load_file(str(ref / "teacher.safetensors")), load_file(str(ref / "best.safetensors"))
    assert all(torch.equal(kept[k], best_t[k]) for k in kept)

    calls = {"n": 0}
    save = engine.save_state

    def save_then_die(*a, **k):
        save(*a, **k)
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 2, after its first step (2 steps per epoch + the epoch-1 save)
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        mt.train(cfg, data, tmp_path / "cut", ckpt_every=1, until="teacher")
    monkeypatch.setattr(engine, "save_state", save)
    cut = mt.train(cfg, data, tmp_path / "cut", ckpt_every=1, until="teacher")
    a, b = load_file(str(ref / "teacher.safetensors")), load_file(str(cut / "teacher.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (cut / "val_auc.jsonl").read_text() .count("\n") == 2
