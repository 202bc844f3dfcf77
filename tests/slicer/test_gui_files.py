"""What can be checked of the module's GUI outside Slicer: the .ui file loads with Qt (PySide6,
offscreen) and holds every widget the widget code uses; the CMake files list files that exist.
The widget itself runs only inside Slicer (MedKitSlicer/README.md: "Reload and Test")."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import ROOT

MODULE_DIR = ROOT / "MedKitSlicer"
SCRIPT = MODULE_DIR / "MedKitSlicer.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MedKitSlicer.ui"


QT_APT = "apt-get install -y libegl1 libgl1 libxkbcommon0 libfontconfig1 libfreetype6 libglib2.0-0 libdbus-1-3 libx11-6"


def import_qt():
    """PySide6's widgets and .ui loader, or a loud skip saying why they cannot be imported."""
    try:
        from PySide6 import QtUiTools, QtWidgets  # noqa: F401
    except ImportError as e:
        pytest.skip(f"SKIPPED LOUDLY: PySide6 cannot be imported ({e}); pip install -e .[test] installs it, "
                    f"and Qt needs the system libraries of: {QT_APT}")


def used_ui_names() -> set:
    return set(re.findall(r"self\.ui\.(\w+)", SCRIPT.read_text()))


def test_widget_code_uses_only_widgets_of_the_ui_file():
    declared = {w.get("name") for w in ET.parse(UI_FILE).iter("widget")}
    used = used_ui_names()
    assert len(used) > 15, used  # the regex found the widget code
    assert used <= declared, f"used by MedKitSlicer.py but not in the .ui: {sorted(used - declared)}"


def test_ui_file_loads_with_qt_and_has_the_widgets():
    import_qt()
    from PySide6.QtWidgets import QWidget

    from tests.slicer.panel import load_ui

    widget = load_ui()
    names = {w.objectName() for w in widget.findChildren(QWidget)}
    missing = used_ui_names() - names
    assert not missing, f"not created by Qt from the .ui: {sorted(missing)}"
    table = widget.findChild(QWidget, "findingsTable")
    assert table.isSortingEnabled() and table.columnCount() == 4
    assert widget.findChild(QWidget, "volumeSelector").property("slicerClass") == "qMRMLNodeComboBox"


def test_panel_renders_to_png(tmp_path):
    import_qt()
    from PySide6.QtGui import QImage

    from tests.slicer.panel import render

    result = {"report": "The lungs are clear.", "modality": "CXR", "knowledge": ["<a, b, c>"],
              "findings": [{"name": "Cardiomegaly", "status": "negative", "probability": 0.1}]}
    image = QImage(str(render(tmp_path / "panel.png", result)))
    assert image.width() > 300 and image.height() > 600
    colors = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colors) > 10  # drawn widgets, not an empty grab


def test_module_file_has_the_template_classes_in_order():
    tree = ast.parse(SCRIPT.read_text())
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    order = [classes.index(c) for c in ("MedKitSlicer", "MedKitSlicerWidget", "MedKitSlicerLogic",
                                        "MedKitSlicerTest")]
    assert order == sorted(order), classes
    bases = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}
    assert bases["MedKitSlicerLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["MedKitSlicerTest"] == ["ScriptedLoadableModuleTest"]


def cmake_files(cmake) -> list:
    """Files named in a module CMakeLists' MODULE_PYTHON_SCRIPTS / MODULE_PYTHON_RESOURCES lists."""
    text = cmake.read_text()
    name = re.search(r"set\(MODULE_NAME (\w+)\)", text).group(1)
    out = []
    for var in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        body = re.search(rf"set\({var}\s+(.*?)\)", text, re.S).group(1)
        out += [f.replace("${MODULE_NAME}", name) for f in body.split()]
    return out


def test_cmake_lists_only_existing_files():
    module = MODULE_DIR / "CMakeLists.txt"
    files = cmake_files(module)
    assert "MedKitSlicer.py" in files and "Resources/UI/MedKitSlicer.ui" in files
    assert [f for f in files if not (MODULE_DIR / f).is_file()] == []
    text = module.read_text()
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    for cmake in [ROOT / "CMakeLists.txt", *MODULE_DIR.rglob("CMakeLists.txt")]:
        for sub in re.findall(r"^\s*add_subdirectory\((\S+)\)", cmake.read_text(), re.M):
            assert (cmake.parent / sub / "CMakeLists.txt").is_file(), f"{cmake}: add_subdirectory({sub})"


def test_extension_cmake_has_the_extension_fields():
    text = (ROOT / "CMakeLists.txt").read_text()
    for field in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf"set\(EXTENSION_{field} ", text), field
    assert "find_package(Slicer REQUIRED)" in text and "add_subdirectory(MedKitSlicer)" in text
    assert "Slicer_EXTENSION_GENERATE_CONFIG" in text and "Slicer_EXTENSION_CPACK" in text


def test_widget_calls_only_existing_logic_methods_and_helpers():
    """The widget runs only in Slicer: at least its calls into the logic and helpers must resolve."""
    tree = ast.parse(SCRIPT.read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    logic_methods = {f.name for f in classes["MedKitSlicerLogic"].body if isinstance(f, ast.FunctionDef)}
    logic_attrs = {t.attr for f in ast.walk(classes["MedKitSlicerLogic"]) if isinstance(f, ast.Assign)
                   for t in f.targets if isinstance(t, ast.Attribute)}
    widget = classes["MedKitSlicerWidget"]
    used = {n.attr for n in ast.walk(widget) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
            and n.value.attr == "logic" and isinstance(n.value.value, ast.Name) and n.value.value.id == "self"}
    assert used and used <= logic_methods | logic_attrs, sorted(used - logic_methods - logic_attrs)
    module_names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} | {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    params = {a.arg for f in ast.walk(widget) if isinstance(f, ast.FunctionDef) for a in f.args.args}
    called = {n.func.id for n in ast.walk(widget) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
              and n.func.id not in params}
    import builtins

    assert called <= module_names | set(dir(builtins)), sorted(called - module_names - set(dir(builtins)))


def test_cmake_copies_what_the_sr_writer_imports():
    """The module imports medkit's SR writer (MedKitSlicer.medkitSR); the extension build copies
    medkit/core/sr.py and every medkit module it imports, and none of them needs more than the standard
    library and pydicom (Slicer's Python has both, not torch)."""
    listed = set(re.search(r"set\(MEDKIT_SR_FILES\s+(.*?)\)", (MODULE_DIR / "CMakeLists.txt").read_text(),
                           re.S).group(1).split())
    need, todo, third_party = {"medkit/__init__.py"}, ["medkit/core/sr.py"], set()
    while todo:
        f = todo.pop()
        if f in need or not (ROOT / f).is_file():
            continue
        need.add(f)
        parts = f.split("/")
        need |= {"/".join(parts[:i]) + "/__init__.py" for i in range(1, len(parts))}
        for node in ast.walk(ast.parse((ROOT / f).read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                top = name.split(".")[0]
                if top == "medkit":
                    p = name.split(".")
                    while p and not (ROOT.joinpath(*p).with_suffix(".py").is_file()):
                        p.pop()
                    if p:
                        todo.append("/".join(p) + ".py")
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third_party.add(top)
    assert listed == need
    assert third_party <= {"pydicom"}
