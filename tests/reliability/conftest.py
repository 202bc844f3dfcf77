"""Fixtures of the reliability suite: the session's shared MONAI Label server (the same process
tests/monailabel uses), the bad inputs, and the summary table printed at the end of the run."""

from __future__ import annotations

import pytest

from tests.monailabel.conftest import ct_model_dir, shared_local_server  # noqa: F401 (fixture)
from tests.reliability.inputs import write_bad_inputs
from tests.reliability.summary import reliability_table


@pytest.fixture(scope="session")
def local_server(request, tmp_path_factory, tiny_model_dir, ct_model_dir):  # noqa: F811
    return shared_local_server(request, tmp_path_factory, tiny_model_dir, ct_model_dir)


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory):
    return write_bad_inputs(tmp_path_factory.mktemp("bad_inputs"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    reports = [r for r in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
               if "tests/reliability" in r.nodeid]
    if not reports:
        return
    failed = sum(1 for r in terminalreporter.stats.get("failed", []) if "tests/reliability" in r.nodeid)
    terminalreporter.write_sep("=", "MedKit reliability (monailabel_app/README.md)")
    terminalreporter.write_line(reliability_table())
    terminalreporter.write_line(f"reliability tests: {len(reports) - failed} passed, {failed} failed")
