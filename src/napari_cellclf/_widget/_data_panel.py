"""Fields panel: which fields of view, how each is labelled, which channels, the tile grid."""

from __future__ import annotations

from typing import Callable

from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..options import TILE_SIZE
from ._field_files import Unusable, channel_groups, group_channels, unusable_images, use_plane
from ._fields import Field, field_id_of, fields_from_layers
from ._fields_table import (
    COL_FIELD,
    COL_LABELS,
    COL_OBJECTS,
    COL_SIZE,
    COL_TILES,
    fields_table,
    fill_unusable_row,
    labels_combo,
)
from ._grid import camera_of, draw_grid, line_width
from ._labelling import ForegroundCache
from ._layers import labels_layer
from ._layout import lay_out
from ._objects import ObjectsBox, objects_combo, objects_layer
from ._overlay import LabelledTiles
from ._qt import Links, alive_only, debouncer, note_label, row, signals_blocked
from ._session import LABELS_PAINTED, Session

OBJECT_BRUSH_FRACTION = 4  # object mode: the brush is a quarter tile, a dab inside one cell


class FieldsPanel(QWidget):
    def __init__(
        self,
        viewer,
        session: Session,
        foreground: ForegroundCache,
        fields_provider: Callable[[], list[Field]] | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.links = Links()  # undone when the dock closes
        self.viewer, self.session, self._foreground = viewer, session, foreground
        # the dock's one field registry (Controller.fields); alone, the viewer's layers
        self._fields_provider = fields_provider or (lambda: fields_from_layers(viewer.layers))
        self.fields: list[Field] = []
        self.unusable: list[Unusable] = []  # stacks and time series: listed, with a way to pick a plane
        self._filling = False
        self._reveal_grid = False  # the checkbox was just ticked: show a grid the eye had hidden
        self._grid_width = 1  # image px of the drawn grid lines (grows as the view zooms out)

        self.table = fields_table()
        self.table.setMinimumHeight(110)
        self.table.setToolTip(
            "Open images or the sample data (File > Open Sample) to add fields. "
            "'Training labels' says how a field's tiles get their class."
        )
        self.empty_note = note_label(
            "No fields of view yet: open images, or File > Open Sample > Cell classifier - tiles and CNN."
        )
        self.paint_button = QPushButton("Paint labels on selected field")
        self.paint_button.setToolTip(
            "Adds (or selects) '<field> labels': paint value k for "
            "class k with napari's brush, fill and eraser."
        )
        self.paint_class = QComboBox()
        self.group_button = QPushButton("Group channel files into fields")
        self.group_button.setToolTip(
            "One file per channel (same name but a channel suffix such as _D/_F/_R, _w1/_w2, "
            "_ch00; same size) becomes one field with those channels."
        )
        self.paint_class.setToolTip("The class the brush paints (the labels layer's label value)")

        self.channel_list = QListWidget()
        self.channel_list.setMaximumHeight(90)
        self.channel_list.setToolTip("Channels stacked into the model's input, in this order.")

        self.tile_size = QSpinBox()
        self.tile_size.setRange(int(TILE_SIZE.minimum or 1), int(TILE_SIZE.maximum or 1024))
        self.tile_size.setSuffix(" px")
        self.stride = QSpinBox()
        self.stride.setRange(0, 1024)
        self.stride.setSuffix(" px")
        self.stride.setSpecialValueText("same as tile size")
        self.stride.setToolTip(
            "Distance between tile origins; smaller than the tile size makes overlapping tiles."
        )
        self.skip_background = QCheckBox("Skip background tiles")
        self.skip_background.setToolTip(
            "Tiles where the first chosen channel is mostly below its "
            "Otsu threshold are not trained on nor classified "
            "(dimmed in the tile grid)."
        )
        self.show_grid = QCheckBox("Show tile grid")
        self.show_labelled = QCheckBox("Outline the tiles (or cells) training receives")
        self.show_labelled.setChecked(True)
        self.show_labelled.setToolTip(
            "'<field> labelled tiles': each tile that takes a class (at least half of it painted, "
            "or a whole-image class) outlined in its class colour; after a training, tiles held "
            "out for validation carry a white ring. Hover a tile for its details."
        )

        tiles_box = QGroupBox("Tiles")
        form = QFormLayout(tiles_box)
        form.addRow("Tile size", self.tile_size)
        form.addRow("Stride", self.stride)
        form.addRow(self.skip_background)
        form.addRow(self.show_grid)
        form.addRow(self.show_labelled)
        channels_box = QGroupBox("Channels")
        QVBoxLayout(channels_box).addWidget(self.channel_list)
        self.grid_note = note_label()
        self.objects_box = ObjectsBox(session)

        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(self.empty_note)
        layout.addLayout(row(self.paint_button, self.paint_class))
        layout.addWidget(self.group_button)
        layout.addWidget(channels_box)
        layout.addWidget(tiles_box)
        layout.addWidget(self.grid_note)
        layout.addWidget(self.objects_box)
        layout.addStretch(1)

        self._load_settings()
        self._refresh_fields_later = debouncer(self, 50, self.refresh_fields)
        self._grid_later = debouncer(self, 120, self.update_grid)
        self.labelled = LabelledTiles(viewer, session, lambda: self.fields, foreground, self._line_width)
        self._labelled_later = debouncer(self, 120, self._refresh_labelled)
        self.destroyed.connect(self.labelled.close)  # the viewer outlives the dock

        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self.paint_button.clicked.connect(self.paint_labels)
        self.group_button.clicked.connect(self.group_channel_files)
        self.paint_class.currentIndexChanged.connect(self._on_paint_class)
        self.channel_list.itemChanged.connect(self._on_channels_changed)
        self.tile_size.valueChanged.connect(self._on_tile_settings)
        self.stride.valueChanged.connect(self._on_tile_settings)
        self.skip_background.toggled.connect(self._on_tile_settings)
        self.show_grid.toggled.connect(self._on_tile_settings)
        self.show_labelled.toggled.connect(self._outline_later)

        layers = viewer.layers
        for emitter in (layers.events.inserted, layers.events.removed, layers.events.moved):
            self.links.connect(emitter, self._on_layers_changed)
        self.links.connect(layers.selection.events.active, self._on_active_layer)
        self.links.connect(camera_of(viewer).events.zoom, self._on_zoom)
        self.links.connect(session.classes_changed, self._on_classes_changed)
        self.links.connect(session.labels_changed, self._on_labels_changed)
        self.links.connect(session.counts_changed, self._on_counts_changed)
        self.links.connect(session.counts_changed, self._outline_later)
        self.links.connect(session.model_changed, self._outline_later)  # the split of a new training
        self.links.connect(session.data.events, self._on_settings_changed)  # e.g. a loaded model's tile size
        self._fill_paint_classes()
        self.refresh_fields()

    # -- settings <-> controls -------------------------------------------------------------------
    def _load_settings(self) -> None:
        d = self.session.data
        self.tile_size.setValue(d.tile_size)
        self.stride.setValue(d.stride)
        self.skip_background.setChecked(d.skip_background)
        self.show_grid.setChecked(d.show_grid)

    @alive_only
    def _on_settings_changed(self, *_) -> None:
        with signals_blocked(self.tile_size, self.stride, self.skip_background, self.show_grid):
            self._load_settings()
        self._grid_later.start()

    def _on_tile_settings(self, *_) -> None:
        d = self.session.data
        switched_on = self.show_grid.isChecked() and not d.show_grid
        d.tile_size = self.tile_size.value()
        d.stride = self.stride.value()
        d.skip_background = self.skip_background.isChecked()
        d.show_grid = self.show_grid.isChecked()
        self._reveal_grid = self._reveal_grid or switched_on
        self._grid_later.start()

    def _line_width(self, fld: Field) -> int:
        return line_width(camera_of(self.viewer).zoom, min(fld.scale))

    @alive_only
    def _on_zoom(self, *_) -> None:
        fld = self.current()
        if fld is not None and self._line_width(fld) != self._grid_width:  # outlines follow it too
            self._grid_later.start()
            self._labelled_later.start()

    @alive_only
    def _outline_later(self, *_) -> None:
        self._labelled_later.start()

    @alive_only
    def _refresh_labelled(self) -> None:
        self.labelled.enabled = self.show_labelled.isChecked()
        self.labelled.refresh()

    def _on_channels_changed(self, *_) -> None:
        if self._filling:
            return
        checked = [
            self.channel_list.item(i).checkState() == Qt.CheckState.Checked
            for i in range(self.channel_list.count())
        ]
        chosen = tuple(i for i, on in enumerate(checked) if on)
        if not chosen:
            show_warning("At least one channel is needed; keeping the first.")
            self.channel_list.item(0).setCheckState(Qt.CheckState.Checked)
            return
        self.session.data.channels = () if all(checked) else chosen
        self._grid_later.start()

    # -- fields ----------------------------------------------------------------------------------
    def current(self) -> Field | None:
        for fld in self.fields:
            if fld.id == self.session.current_field:
                return fld
        return self.fields[0] if self.fields else None

    def _on_layers_changed(self, event=None) -> None:
        self._refresh_fields_later.start()

    @alive_only
    def refresh_fields(self) -> None:
        self.fields = self._fields_provider()
        self.unusable = unusable_images(self.viewer.layers)
        if lay_out(self.viewer, self.fields):
            self.viewer.reset_view()  # show every field, the moved ones included
        ids = [f.id for f in self.fields]
        if self.session.current_field not in ids:
            self.session.set_current_field(ids[0] if ids else None)
        self._fill_table()
        self._fill_channels()
        self.empty_note.setVisible(not self.fields and not self.unusable)
        groups = channel_groups(self.fields)
        self.group_button.setVisible(bool(groups))
        self.group_button.setToolTip(
            "\n".join(f"{g.stem}: {', '.join(g.channels)}" for g, _ in groups) or self.group_button.toolTip()
        )
        self.paint_button.setEnabled(bool(self.fields))
        self._grid_later.start()

    def _fill_table(self) -> None:
        self._filling = True
        try:
            self.table.setRowCount(len(self.fields) + len(self.unusable))
            for r, item in enumerate(self.unusable, start=len(self.fields)):
                fill_unusable_row(self.table, r, item, lambda _=False, it=item: use_plane(self.viewer, it))
            for r, fld in enumerate(self.fields):
                name = QTableWidgetItem(fld.name)
                name.setToolTip(f"{fld.source}\nchannels: {', '.join(fld.channel_names)}")
                self.table.setItem(r, COL_FIELD, name)
                self.table.setItem(r, COL_SIZE, QTableWidgetItem(f"{fld.shape[1]}×{fld.shape[0]}"))
                self.table.setCellWidget(r, COL_LABELS, self._labels_combo(fld))
                self.table.setCellWidget(r, COL_OBJECTS, objects_combo(self.viewer, self.session, fld))
                self.table.setItem(r, COL_TILES, QTableWidgetItem(""))
                if fld.id == self.session.current_field:
                    self.table.selectRow(r)
        finally:
            self._filling = False
        self._on_counts_changed()

    def _fill_paint_classes(self) -> None:
        current = max(self.paint_class.currentIndex(), 0)
        with signals_blocked(self.paint_class):
            self.paint_class.clear()
            for k, name in enumerate(self.session.class_names, start=1):
                self.paint_class.addItem(f"{k}: {name}", k)
            self.paint_class.setCurrentIndex(min(current, self.paint_class.count() - 1))

    def _on_paint_class(self, *_) -> None:
        fld = self.current()
        layer = labels_layer(self.viewer, fld, self.session.class_colors, create=False) if fld else None
        if layer is not None and self.paint_class.currentData() is not None:
            layer.selected_label = int(self.paint_class.currentData())

    def _labels_combo(self, fld: Field) -> QComboBox:
        return labels_combo(self.session, fld)

    def labels_combo(self, field_name: str) -> QComboBox:
        """The 'Training labels' choice of a field (tests and keyboard users select through it)."""
        for r, fld in enumerate(self.fields):
            if fld.name == field_name:
                return self.table.cellWidget(r, COL_LABELS)
        raise KeyError(field_name)

    def objects_combo(self, field_name: str) -> QComboBox:
        """The 'Objects' choice of a field: tiles, or a Labels layer of cell masks."""
        for r, fld in enumerate(self.fields):
            if fld.name == field_name:
                return self.table.cellWidget(r, COL_OBJECTS)
        raise KeyError(field_name)

    def _fill_channels(self) -> None:
        fld = self.current()
        names = fld.channel_names if fld else []
        chosen = self.session.data.channels
        self._filling = True
        try:
            self.channel_list.clear()
            for i, name in enumerate(names):
                item = QListWidgetItem(f"{i}: {name}")
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                on = not chosen or i in chosen
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
                self.channel_list.addItem(item)
        finally:
            self._filling = False

    def _on_row_selected(self) -> None:
        if self._filling:
            return
        rows = self.table.selectionModel().selectedRows()
        if rows and rows[0].row() < len(self.fields):
            self.session.set_current_field(self.fields[rows[0].row()].id)
            self._fill_channels()
            self._grid_later.start()

    def select_field(self, field_name: str) -> None:
        for r, fld in enumerate(self.fields):
            if fld.name == field_name:
                self.table.selectRow(r)
                return
        raise KeyError(field_name)

    def _on_active_layer(self, event=None) -> None:
        layer = self.viewer.layers.selection.active
        fid = field_id_of(layer) if layer is not None else None
        for r, fld in enumerate(self.fields):
            if fld.id == fid and fid != self.session.current_field:
                self.table.selectRow(r)

    @alive_only
    def _on_classes_changed(self) -> None:
        self._fill_table()
        self._fill_paint_classes()

    @alive_only
    def _on_labels_changed(self) -> None:
        for r, fld in enumerate(self.fields):
            combo = self.table.cellWidget(r, COL_LABELS)
            index = combo.findData(self.session.labels_source(fld.id)) if combo else -1
            if combo is not None and index >= 0 and index != combo.currentIndex():
                with signals_blocked(combo):
                    combo.setCurrentIndex(index)
        self._grid_later.start()

    @alive_only
    def _on_counts_changed(self) -> None:
        counts = self.session.counts
        for r, fld in enumerate(self.fields):
            item = self.table.item(r, COL_TILES)
            if item is None:
                continue
            per_class = counts.per_field.get(fld.id) if counts is not None else None
            item.setText("" if per_class is None else str(sum(per_class)))
            if per_class is not None:
                item.setToolTip(
                    "\n".join(f"{name}: {n}" for name, n in zip(self.session.class_names, per_class))
                )

    # -- actions ---------------------------------------------------------------------------------
    def group_channel_files(self) -> None:
        groups = group_channels(self.viewer, self.fields)
        self.refresh_fields()
        show_info(
            "Grouped " + "; ".join(f"{g.stem} ({', '.join(g.channels)})" for g in groups)
            if groups
            else "No channel files to group."
        )

    def paint_labels(self) -> None:
        fld = self.current()
        if fld is None:
            show_warning("Open a field of view first.")
            return
        layer = labels_layer(self.viewer, fld, self.session.class_colors)
        self.session.set_labels_source(fld.id, LABELS_PAINTED)
        self.viewer.layers.selection.active = layer
        tile = self.session.data.tile_size
        masks = objects_layer(self.session, self.viewer, fld)
        if masks is None:
            # A brush as wide as a tile: one click in a tile paints pi/4 of it, over the half a
            # tile needs to count, so a click labels a tile and a stroke a row of tiles.
            layer.brush_size = tile
            rule = (
                "A tile takes a class when at least half of it is painted: one click in a tile "
                "with this brush (one tile wide) labels it; counted tiles get an outline."
            )
        else:
            # Object mode: a cell takes the class painted on most of its painted pixels, so a
            # dab inside it is enough; a tile-wide brush would spill onto the neighbours.
            layer.brush_size = max(1, tile // OBJECT_BRUSH_FRACTION)
            rule = (
                f"A cell of '{masks.name}' takes the class painted on most of its painted pixels: "
                "one click inside a cell labels the whole cell; counted cells get an outline."
            )
        layer.selected_label = int(self.paint_class.currentData() or 1)
        layer.mode = "paint"
        show_info(
            f"Painting on '{layer.name}': value k = class k "
            f"({', '.join(f'{k} {n}' for k, n in enumerate(self.session.class_names, 1))}). " + rule
        )

    @alive_only
    def update_grid(self) -> None:
        fld = self.current()
        if fld is not None:
            self._grid_width = self._line_width(fld)
        note = draw_grid(
            self.viewer, self.session, fld, self._foreground, self._grid_width, self._reveal_grid
        )
        self._reveal_grid = False
        self.grid_note.setText(note)
