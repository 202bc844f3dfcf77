"""The README's two commands are the ones CI runs, and the package imports without MONAI Label/Slicer."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text().split("```bash", 1)[1].split("```", 1)[0]
    commands = [x.strip() for x in readme.strip().splitlines()]
    assert len(commands) == 2
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_core_imports_without_monailabel():
    code = ("import sys; import medkit.cxr.model, medkit.cxr.train, medkit.cxr.evaluate, medkit.cli; "
            "bad = [m for m in sys.modules if m.startswith(('monailabel', 'slicer'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
