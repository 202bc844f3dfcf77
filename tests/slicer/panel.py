"""The MedKit panel's .ui file loaded with Qt (PySide6, offscreen): widget names and a rendered figure.

Slicer's own widgets in the .ui (ctkCollapsibleButton, qMRMLNodeComboBox, qMRMLWidget) are not in
PySide6; for the figure they are drawn as their nearest Qt look-alikes (group box, combo box,
plain widget). Writes docs/slicer_panel.png, optionally filled with a real infer result:

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m tests.slicer.panel docs/slicer_panel.png [result.json]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UI_FILE = ROOT / "MedKitSlicer" / "Resources" / "UI" / "MedKitSlicer.ui"
STAND_INS = {"ctkCollapsibleButton": "QGroupBox", "qMRMLNodeComboBox": "QComboBox", "qMRMLWidget": "QWidget"}


def application():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def load_ui(path: Path = UI_FILE):
    """The .ui as a widget tree; Slicer's classes replaced by :data:`STAND_INS`."""
    from PySide6.QtCore import QFile, QIODevice
    from PySide6.QtUiTools import QUiLoader

    application()

    class Loader(QUiLoader):
        def createWidget(self, class_name, parent=None, name=""):
            widget = super().createWidget(STAND_INS.get(class_name, class_name), parent, name)
            if widget is not None and class_name in STAND_INS:
                widget.setProperty("slicerClass", class_name)
            return widget

    f = QFile(str(path))
    if not f.open(QIODevice.ReadOnly):
        raise OSError(f"cannot open {path}")
    loader = Loader()
    widget = loader.load(f)
    f.close()
    if widget is None:
        raise ValueError(f"{path}: {loader.errorString()}")
    return widget


def fill(widget, result: dict | None, volume_name: str = "example_ct_sm") -> None:
    """Titles of the collapsible sections, and (optionally) a result shown as the module shows it."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QComboBox, QGroupBox, QTableWidgetItem

    for box in widget.findChildren(QGroupBox):
        box.setTitle(str(box.property("text") or ""))
    widget.findChild(QComboBox, "volumeSelector").addItem(volume_name)
    widget.findChild(QComboBox, "strategyComboBox").addItems(["medkit_cxr_uncertainty", "random", "first"])
    if not result:
        return
    sys.path.insert(0, str(ROOT / "MedKitSlicer"))
    from MedKitSlicer import findingRows

    widget.findChild(QComboBox, "modelComboBox").setCurrentText("medkit_ct" if result.get("modality") == "CT"
                                                                else "medkit_cxr")
    from PySide6.QtWidgets import QLabel, QListWidget, QPlainTextEdit, QProgressBar, QTableWidget

    widget.findChild(QLabel, "serverStatusLabel").setText("Connected: MedKit serves medkit_ct, medkit_cxr")
    widget.findChild(QPlainTextEdit, "reportTextEdit").setPlainText(result.get("report", ""))
    table = widget.findChild(QTableWidget, "findingsTable")
    rows = findingRows(result)
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            item = QTableWidgetItem()
            item.setData(Qt.DisplayRole, round(value, 3) if isinstance(value, float) else value)
            table.setItem(r, c, item)
    table.setWordWrap(False)
    table.resizeColumnsToContents()
    table.resizeRowsToContents()
    widget.findChild(QListWidget, "knowledgeListWidget").addItems(result.get("knowledge", []))
    widget.findChild(QProgressBar, "progressBar").setVisible(False)
    widget.findChild(QLabel, "statusLabel").setText(
        f"Report for {volume_name}; organ segmentation '{volume_name} organs' loaded.")


def render(out: Path, result: dict | None = None, size=(540, 980)) -> Path:
    widget = load_ui()
    fill(widget, result)
    widget.resize(*size)
    widget.show()
    application().processEvents()
    pixmap = widget.grab()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not pixmap.save(str(out), "PNG"):
        raise OSError(f"could not write {out}")
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "slicer_panel.png"
    example = json.loads(Path(sys.argv[2]).read_text()) if len(sys.argv) > 2 else None
    print(render(target, example))
