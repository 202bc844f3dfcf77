"""The README's first command ends in ``monailabel_app/run.sh``: it starts the server on the
embedded samples and prints one report (the first study is the CT sample, so this also checks
that run.sh picks the CT model for a volume)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading

from tests.monailabel.conftest import APP, free_port


def test_run_sh_prints_a_report_for_the_first_sample(tmp_path):
    studies = shutil.copytree(APP / "samples", tmp_path / "samples")
    proc = subprocess.Popen(["bash", str(APP / "run.sh"), str(studies), str(free_port())], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = []
    # the loop below ends when run.sh exits; a server that never answers is stopped after 300 s
    watchdog = threading.Timer(300, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        for line in proc.stdout:  # the server keeps serving: read until run.sh says it reported
            lines.append(line)
            if line.startswith("MedKit MONAI Label server on"):
                break
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    text = "".join(lines)
    assert "MedKit MONAI Label server on" in text, text[-2000:]
    result = json.loads(text[text.index("{"): text.rindex("}") + 1])
    assert result["modality"] == "CT" and result["report"] and "liver" in result["measurements"]
