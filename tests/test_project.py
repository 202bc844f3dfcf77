"""The README's two commands are the ones CI runs; the package imports without MONAI Label/Slicer, and its
layout holds: what each part may import (parsed with ast, imports inside functions included), no circles."""

from __future__ import annotations

import ast
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


# ---- the layout: what each part of the package may import ---------------------------------------
MEDKIT = ROOT / "medkit"
# medkit/core is shared by both modalities and imports neither; each modality imports the core and
# itself; the command line (medkit/cli.py) and medkit/__init__.py may import any of them.
MAY_IMPORT = {"core": ("medkit.core",), "cxr": ("medkit.core", "medkit.cxr"), "ct": ("medkit.core", "medkit.ct"),
              "cli": ("medkit",)}
# the MONAI Label app (its `lib` package) and the Slicer module use medkit, never the other way round
NEVER = ("monailabel", "lib", "slicer", "MedKitSlicer", "qt", "ctk", "vtk")


def _part(path) -> str:
    top = path.relative_to(MEDKIT).parts[0]
    return top if top in ("core", "cxr", "ct") else "cli"


def _imports(path) -> list[tuple[int, str, bool]]:
    """(line, imported name, inside a function) of every import in ``path``; ``from a.b import c`` gives a.b.c."""
    tree = ast.parse(path.read_text())
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, id(node) in inside) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out += [(node.lineno, f"{base}.{a.name}", id(node) in inside) for a in node.names]
    return out


def _module_of(name: str) -> str | None:
    """The medkit module that an imported name lives in (``medkit.cxr.model.MedKitCXR`` -> ``medkit.cxr.model``)."""
    parts = name.split(".")
    while parts:
        p = ROOT.joinpath(*parts)
        if p.with_suffix(".py").is_file() or (p / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return None


def _modules():
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in sorted(MEDKIT.rglob("*.py"))}


def test_import_direction():
    """core imports no modality, cxr and ct do not import each other, nothing imports the app or Slicer;
    imports inside functions count too."""
    bad = []
    for name, path in _modules().items():
        allowed = MAY_IMPORT[_part(path)]
        for line, imported, _ in _imports(path):
            where = f"{path.relative_to(ROOT)}:{line}: {imported}"
            if imported.startswith("."):
                bad.append(f"{where} (relative import)")
            elif imported.split(".")[0] in NEVER:
                bad.append(f"{where} (medkit never imports the MONAI Label app or Slicer)")
            elif imported.split(".")[0] == "medkit" and not any(imported == a or imported.startswith(a + ".")
                                                                for a in allowed):
                bad.append(f"{where} ({_part(path)} may import {', '.join(allowed)})")
    assert bad == []


def test_no_import_circles():
    graph = {name: {m for _, imported, _ in _imports(path) if (m := _module_of(imported)) and m != name}
             for name, path in _modules().items()}
    # a package's __init__ is imported with each of its modules: not an edge of the cycle search
    graph = {k: {m for m in v if not (ROOT / m.replace(".", "/") / "__init__.py").is_file()} for k, v in graph.items()}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_imports_inside_functions_say_why():
    """An import inside a function is there for a reason (an optional or slow dependency, start-up time),
    written beside it; every other import is at the top of its module."""
    hidden = []
    for path in _modules().values():
        lines = path.read_text().splitlines()
        for line, imported, inside in _imports(path):
            if inside and "#" not in lines[line - 1]:
                hidden.append(f"{path.relative_to(ROOT)}:{line}: {lines[line - 1].strip()}")
    assert hidden == []
