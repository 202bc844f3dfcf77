"""Named points where a crash test can hold the server, so that it is killed exactly there.

Off unless the server runs with ``MEDKIT_FAILPOINT_DIR`` set (tests/reliability only). A test
arms a point by creating ``$MEDKIT_FAILPOINT_DIR/<name>.arm``; the next process reaching the
point removes the file, writes ``<name>.reached`` (its pid) and sleeps, so the test can SIGKILL
it in the middle of a report save or a training run. Points:

- ``save_report.after_history``: previous version kept in the history, new one not yet written;
- ``save_report.after_label``: new label written, datastore index not yet updated;
- ``train.epoch_end``: a training epoch done (in the training subprocess), nothing promoted yet.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def failpoint(name: str) -> None:
    folder = os.environ.get("MEDKIT_FAILPOINT_DIR")
    if not folder:
        return
    arm = Path(folder) / f"{name}.arm"
    try:
        arm.unlink()  # one process takes it
    except FileNotFoundError:
        return
    (Path(folder) / f"{name}.reached").write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("MEDKIT_FAILPOINT_SLEEP", "600")))
