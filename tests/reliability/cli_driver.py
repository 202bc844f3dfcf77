"""Runs ``medkit`` command lines in one process (one interpreter start for many bad inputs).

    python -m tests.reliability.cli_driver CASES.json OUT.json

CASES.json: ``{name: [argv...]}``. For each, ``medkit.cli.main(argv)`` runs with stdout and
stderr captured; OUT.json gets ``{name: {rc, stdout, stderr}}``. An exception escaping
``main`` is what a user would see as a traceback: it is recorded with ``Traceback`` in
stderr and rc 1, exactly as the ``medkit`` entry point would exit.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def run(argv: list[str]) -> dict:
    from medkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse errors
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - the point is to see anything that escapes
            traceback.print_exc()
            rc = 1
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}


if __name__ == "__main__":
    cases = json.loads(open(sys.argv[1]).read())
    results = {name: run(argv) for name, argv in cases.items()}
    with open(sys.argv[2], "w") as fp:
        json.dump(results, fp, indent=2)
