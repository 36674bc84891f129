"""Every question the widget asks through a modal dialog, in one place.

Panels call these through the module (`_dialogs.ask_save_path(...)`), so tests replace them with
`monkeypatch.setattr(_dialogs, "ask_save_path", ...)` instead of driving a native dialog.
Each returns None when the user cancels.
"""

from __future__ import annotations

from qtpy.QtGui import QColor
from qtpy.QtWidgets import QColorDialog, QFileDialog, QWidget


def ask_save_path(parent: QWidget | None, caption: str, name_filter: str, suggestion: str = "") -> str | None:
    path, _ = QFileDialog.getSaveFileName(parent, caption, suggestion, name_filter)
    return path or None


def ask_open_path(parent: QWidget | None, caption: str, name_filter: str) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, caption, "", name_filter)
    return path or None


def ask_directory(parent: QWidget | None, caption: str) -> str | None:
    path = QFileDialog.getExistingDirectory(parent, caption)
    return path or None


def ask_choices(parent: QWidget | None, caption: str, items: list[str]) -> list[str] | None:
    """Tick some of `items` (all ticked to start); None when cancelled."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDialog, QDialogButtonBox, QListWidget, QListWidgetItem, QVBoxLayout

    dialog = QDialog(parent)
    dialog.setWindowTitle(caption)
    listing = QListWidget()
    for text in items:
        item = QListWidgetItem(text)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked)
        listing.addItem(item)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    layout = QVBoxLayout(dialog)
    layout.addWidget(listing)
    layout.addWidget(buttons)
    if not dialog.exec():
        return None
    return [
        listing.item(i).text()
        for i in range(listing.count())
        if listing.item(i).checkState() == Qt.CheckState.Checked
    ]


def ask_color(parent: QWidget | None, current: str) -> str | None:
    color = QColorDialog.getColor(QColor(current), parent, "Class colour")
    return color.name() if color.isValid() else None
