"""The Fields table's widgets: the table itself, a field's 'Training labels' choice, a stack's row.
(The 'Objects' column's combo is object mode's: `_objects.objects_combo`.)"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

from ._field_files import Unusable
from ._fields import Field
from ._session import LABELS_PAINTED, LABELS_UNUSED, Session

COL_FIELD, COL_SIZE, COL_LABELS, COL_OBJECTS, COL_TILES = range(5)


def fields_table() -> QTableWidget:
    table = QTableWidget(0, 5)
    table.setHorizontalHeaderLabels(["Field", "Size", "Training labels", "Objects", "Labelled"])
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    # "xy_c…" told no two rows of one plate apart: the end of a name differs, not the start
    table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    header = table.horizontalHeader()
    header.setSectionResizeMode(COL_FIELD, QHeaderView.ResizeMode.Stretch)
    for col in (COL_SIZE, COL_LABELS, COL_OBJECTS, COL_TILES):
        header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
    return table


def labels_combo(session: Session, fld: Field) -> QComboBox:
    combo = QComboBox()
    combo.addItem("painted labels", LABELS_PAINTED)
    for k, name in enumerate(session.class_names, start=1):
        combo.addItem(f"whole image: {name}", k)
    combo.addItem("not used", LABELS_UNUSED)
    index = combo.findData(session.labels_source(fld.id))
    combo.setCurrentIndex(max(index, 0))
    combo.setToolTip("How this field's tiles get their class for training")
    combo.currentIndexChanged.connect(
        lambda _i, fid=fld.id, c=combo: session.set_labels_source(fid, c.currentData())
    )
    return combo


def fill_unusable_row(table, r: int, item: Unusable, use) -> None:
    """A row of the Fields table for a stack: its name, size, a 'Use plane' button, the reason."""
    name = QTableWidgetItem(item.name)
    name.setToolTip(item.reason)
    name.setFlags(name.flags() & ~Qt.ItemFlag.ItemIsSelectable)
    table.setItem(r, COL_FIELD, name)
    table.setItem(r, COL_SIZE, QTableWidgetItem(item.size_text))
    button = QPushButton("Use plane")
    button.setToolTip(item.reason)
    button.clicked.connect(use)
    table.setCellWidget(r, COL_LABELS, button)
    why = QTableWidgetItem("not 2-D")
    why.setToolTip(item.reason)
    table.setItem(r, COL_TILES, why)
