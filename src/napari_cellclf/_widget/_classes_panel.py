"""Classes panel: names and colours (row k = label value k), tiles per class, folder import."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGroupBox,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from . import _dialogs
from ._fields import ROLE_LABELS, role_of
from ._labelling import problems
from ._layers import recolor_labels
from ._qt import WARNING_STYLE, Links, alive_only, note_label, row
from ._session import Session

if TYPE_CHECKING:  # pragma: no cover
    from ._controller import Controller

COL_COLOR, COL_NAME, COL_TILES = range(3)
IMPORT_MODES = (("resize each image to one tile", "resize"), ("cut each image into tiles", "tile"))


class ClassesPanel(QWidget):
    def __init__(self, viewer, session: Session, controller: "Controller", parent: QWidget | None = None):
        super().__init__(parent)
        self.links = Links()  # undone when the dock closes
        self.viewer, self.session, self.controller = viewer, session, controller
        self._filling = False

        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["", "Class", "Labelled"])
        self.table.verticalHeader().setVisible(True)  # row numbers = label values
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(COL_COLOR, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(COL_TILES, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setToolTip(
            "Row k is label value k. Double-click a name to rename; selecting a "
            "row makes it the class the active labels layer paints."
        )
        self.add_button = QPushButton("Add class")
        self.remove_button = QPushButton("Remove selected")
        self.hint = note_label(
            "Paint on a field's labels layer (Fields tab) with value k for "
            "class k. A tile counts when at least half of it is painted."
        )
        self.warnings = note_label(style=WARNING_STYLE)

        self.import_mode = QComboBox()
        for text, mode in IMPORT_MODES:
            self.import_mode.addItem(text, mode)
        self.import_button = QPushButton("Import class folders…")
        self.import_button.setToolTip(
            "A folder with one subfolder per class (the folder name is the class), images inside."
        )
        self.forget_button = QPushButton("Forget import")
        self.import_note = note_label()
        import_box = QGroupBox("Images sorted in class folders")
        box = QVBoxLayout(import_box)
        box.addWidget(self.import_mode)
        box.addLayout(row(self.import_button, self.forget_button))
        box.addWidget(self.import_note)

        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(row(self.add_button, self.remove_button))
        layout.addWidget(self.hint)
        layout.addWidget(self.warnings)
        layout.addWidget(import_box)
        layout.addStretch(1)

        self.table.itemChanged.connect(self._on_item_changed)
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self.add_button.clicked.connect(self.add_class)
        self.remove_button.clicked.connect(self.remove_selected)
        self.import_button.clicked.connect(self.import_folders)
        self.forget_button.clicked.connect(controller.forget_import)
        self.links.connect(session.classes_changed, self._on_classes_changed)
        self.links.connect(session.counts_changed, self._on_counts_changed)
        self.links.connect(session.labels_changed, self._on_import_changed)
        self.links.connect(session.jobs.started, self._on_busy)
        self.links.connect(session.jobs.finished, self._on_busy)
        self._fill()
        self._on_import_changed()
        self._on_busy()

    def _fill(self) -> None:
        self._filling = True
        try:
            self.table.setRowCount(len(self.session.classes))
            for r, spec in enumerate(self.session.classes):
                swatch = QPushButton()
                swatch.setFixedWidth(28)
                swatch.setStyleSheet(f"background-color: {spec.color}; border: 1px solid #888;")
                swatch.setToolTip(f"{spec.color}: click to change")
                swatch.clicked.connect(lambda _=False, k=r: self.choose_color(k))
                self.table.setCellWidget(r, COL_COLOR, swatch)
                self.table.setItem(r, COL_NAME, QTableWidgetItem(spec.name))
                tiles = QTableWidgetItem("")
                tiles.setFlags(tiles.flags() & ~_editable_flag())
                self.table.setItem(r, COL_TILES, tiles)
            self.remove_button.setEnabled(len(self.session.classes) > 2)
        finally:
            self._filling = False
        self._on_counts_changed()

    @alive_only
    def _on_classes_changed(self) -> None:
        self._fill()
        recolor_labels(self.viewer, self.session.class_colors)

    @alive_only
    def _on_counts_changed(self) -> None:
        counts = self.session.counts
        self._filling = True
        try:
            for r in range(self.table.rowCount()):
                item = self.table.item(r, COL_TILES)
                if item is not None:
                    n = counts.per_class[r] if counts and r < len(counts.per_class) else 0
                    item.setText(str(n))
        finally:
            self._filling = False
        issues = problems(counts, self.session.class_names) if counts else []
        notes = counts.notes if counts else []
        self.warnings.setText("\n".join(issues + notes))

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() != COL_NAME:
            return
        try:
            self.session.rename_class(item.row(), item.text())
        except ValueError as exc:
            show_warning(str(exc))
            self._fill()

    def _on_row_selected(self) -> None:
        """Selecting class k makes the active labels layer paint value k."""
        rows = self.table.selectionModel().selectedRows()
        layer = self.viewer.layers.selection.active
        if rows and layer is not None and role_of(layer) == ROLE_LABELS:
            layer.selected_label = rows[0].row() + 1

    def add_class(self) -> None:
        self.session.add_class()

    def remove_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            show_warning("Select the class to remove first.")
            return
        index = rows[0].row()
        name = self.session.class_names[index]
        try:
            self.session.remove_class(index)
        except ValueError as exc:
            show_warning(str(exc))
            return
        cleared = _renumber_labels(self.viewer, index + 1)
        if cleared:
            show_info(
                f"Removed class {name!r}; its painted pixels ({cleared}) were cleared and "
                "higher classes moved down by one."
            )

    def choose_color(self, index: int) -> None:
        color = _dialogs.ask_color(self, self.session.classes[index].color)
        if color:
            self.session.set_class_color(index, color)

    def import_folders(self) -> None:
        root = _dialogs.ask_directory(self, "Folder with one subfolder per class")
        if not root:
            return
        offered = self.controller.class_folder_names(root)
        if not offered:
            show_warning(f"{root}: no subfolders with images in them (one subfolder per class).")
            return
        picked = _dialogs.ask_choices(self, "Classes to import (one folder each)", offered)
        if picked:
            self.controller.import_folders(root, self.import_mode.currentData(), picked)

    @alive_only
    def _on_import_changed(self) -> None:
        imported = self.session.imported
        self.forget_button.setEnabled(imported is not None)
        if imported is None:
            self.import_note.setText("")
            return
        counts = imported.dataset.class_counts()
        self.import_note.setText(
            f"{len(imported.dataset)} tiles of {imported.tile_size} px from {imported.root} ("
            + ", ".join(f"{k}: {v}" for k, v in counts.items())
            + ")"
        )

    @alive_only
    def _on_busy(self, *_) -> None:
        self.import_button.setEnabled(not self.session.jobs.busy)


def _editable_flag():
    from qtpy.QtCore import Qt

    return Qt.ItemFlag.ItemIsEditable


def _renumber_labels(viewer, value: int) -> int:
    """After removing class `value`: clear its pixels, move higher values down by one."""
    cleared = 0
    for layer in viewer.layers:
        if role_of(layer) != ROLE_LABELS:
            continue
        data = np.asarray(layer.data)
        hit = data == value
        cleared += int(hit.sum())
        if hit.any() or (data > value).any():
            data[hit] = 0
            data[data > value] -= 1
            layer.refresh()
    return cleared
