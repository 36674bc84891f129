"""The Report tab's gallery: the kept model's most confidently right (green) and wrong (red)
validation tiles, as `cellclf report`'s gallery.png shows them. Which tiles, and where each one
lies in its field, is the engine's (gallery.gallery_tiles, computed in the training worker and
stored in ModelMeta.extra["gallery"]); this view only cuts the thumbnails out of the open fields,
moves the camera to a tile when it is clicked, and relabels it by painting its region on the
field's labels layer, as the brush would (Labels.data_setitem: undo history, `paint` event, and
with it the recount of training tiles)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QColor, QIcon, QImage, QPainter, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..gallery import GalleryTile
from ..objects import image_channel_names
from ..report import RIGHT_COLOUR, WRONG_COLOUR, composite
from ._fields import Field, fields_from_layers, model_channels
from ._grid import camera_of
from ._layers import labels_layer
from ._qt import WARNING_STYLE, alive_only, note_label, row, signals_blocked
from ._session import LABELS_PAINTED, Session

THUMBNAIL_PX = 64
FRAME_PX = 3
# One cell of the icon grid: the thumbnail and three short lines ("true", "pred", "now").
CELL = QSize(118, THUMBNAIL_PX + 2 * FRAME_PX + 50)
# A clicked tile is shown with about two neighbours on each side: enough context to judge it.
VIEW_TILES = 5


def _thumbnail(rgb: np.ndarray | None, colour: str) -> QIcon:
    """The tile (nearest-neighbour scaled: pixels stay pixels) in a frame of `colour`; a grey
    square for a tile whose field is not open."""
    side = THUMBNAIL_PX + 2 * FRAME_PX
    pixmap = QPixmap(side, side)
    pixmap.fill(QColor(colour))
    painter = QPainter(pixmap)
    if rgb is None:
        painter.fillRect(FRAME_PX, FRAME_PX, THUMBNAIL_PX, THUMBNAIL_PX, QColor("#50525a"))
    else:
        image = np.ascontiguousarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
        height, width = image.shape[:2]
        qimage = QImage(image.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
        tile = QPixmap.fromImage(qimage).scaled(
            THUMBNAIL_PX,
            THUMBNAIL_PX,
            Qt.AspectRatioMode.IgnoreAspectRatio,
            Qt.TransformationMode.FastTransformation,
        )
        painter.drawPixmap(FRAME_PX, FRAME_PX, tile)
    painter.end()
    return QIcon(pixmap)


class GalleryPanel(QWidget):
    """`refresh()` redraws from the session's model. Widgets are public for tests: `list` (one
    item per tile, in `tiles` order, its picture in `thumbnails`; clicking or arrowing to an item
    goes to its tile),
    `relabel_class`, `relabel_button`, `note`."""

    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.tiles: list[GalleryTile] = []
        self.thumbnails: list[np.ndarray | None] = []  # (T, T, 3) RGB cut from the open field
        self.selected: int | None = None
        self.relabelled: dict[int, str] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.intro = note_label(
            "Most confident right (green) and wrong (red) validation tiles: click one to go "
            "to it in its field; relabel it if its label was wrong."
        )
        layout.addWidget(self.intro)
        # Icon mode flows the tiles into as many columns as the dock is wide.
        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setWrapping(True)
        self.list.setWordWrap(True)
        self.list.setIconSize(QSize(THUMBNAIL_PX + 2 * FRAME_PX, THUMBNAIL_PX + 2 * FRAME_PX))
        self.list.setGridSize(CELL)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setMinimumHeight(2 * CELL.height() + 12)
        self.list.currentRowChanged.connect(self._on_row)
        self.list.itemClicked.connect(lambda item: self._on_row(self.list.row(item)))
        layout.addWidget(self.list)
        self.relabel_class = QComboBox()
        self.relabel_class.setToolTip("The class to paint over the selected tile")
        self.relabel_button = QPushButton("Relabel tile")
        self.relabel_button.setToolTip(
            "Paint the selected tile's region on its field's labels layer with this class "
            "(undo with the labels layer's undo); retrain to use it"
        )
        self.relabel_button.clicked.connect(self.relabel)
        layout.addLayout(row(QLabel("as"), self.relabel_class, self.relabel_button, stretch=True))
        self.note = note_label()
        layout.addWidget(self.note)
        self.refresh_classes()
        self.refresh()

    # -- view ------------------------------------------------------------------------------------
    @alive_only
    def refresh_classes(self, *_) -> None:
        current = self.relabel_class.currentText()
        self.relabel_class.clear()
        self.relabel_class.addItems(self.session.class_names)
        if current in self.session.class_names:
            self.relabel_class.setCurrentText(current)

    @alive_only
    def refresh(self, *_) -> None:
        trained = self.session.trained
        stored = ((trained.meta.extra or {}).get("gallery") if trained is not None else None) or []
        self.tiles = [GalleryTile.from_dict(d) for d in stored]
        self.selected = None
        self.relabelled = {}
        icons = self.thumbnails = self._icons()
        with signals_blocked(self.list):
            self.list.clear()
            for k, tile in enumerate(self.tiles):
                colour = RIGHT_COLOUR if tile.correct else WRONG_COLOUR
                item = QListWidgetItem(_thumbnail(icons[k], colour), "")
                item.setForeground(QColor(colour))
                item.setToolTip(f"{tile.source}, pixel (y, x) {tile.origin}")
                self.list.addItem(item)
                self._label(k)
        self.list.setVisible(bool(self.tiles))
        self.intro.setVisible(bool(self.tiles))
        self.relabel_button.setEnabled(False)
        self.note.setStyleSheet("")
        self.note.setText(
            ""
            if self.tiles
            else "No gallery: it is made when a model is trained here (with validation tiles); "
            "`cellclf report` draws one for any model."
        )

    def _label(self, k: int) -> None:
        tile = self.tiles[k]
        text = f"true {tile.true}\npred {tile.predicted} {tile.confidence:.0%}"
        if k in self.relabelled:
            text += f"\nnow {self.relabelled[k]}"
        self.list.item(k).setText(text)

    def _fields(self) -> dict[str, Field]:
        viewer = self.session.viewer
        return {} if viewer is None else {f.name: f for f in fields_from_layers(viewer.layers)}

    def _icons(self) -> list[np.ndarray | None]:
        """Thumbnails cut from the open fields, contrast set over all the gallery's tiles (as
        gallery.png sets it); None for a tile whose field is not open."""
        trained = self.session.trained
        fields = self._fields()
        cut: list[np.ndarray | None] = []
        for tile in self.tiles:
            fld = fields.get(tile.source)
            cut.append(None if fld is None or trained is None else self._cut(fld, tile))
        # Tiles must share their channels to share a contrast (fields may differ).
        channels = next((c.shape[0] for c in cut if c is not None), None)
        present = [c for c in cut if c is not None and c.shape[0] == channels]
        if not present:
            return [None] * len(cut)
        sample = np.stack(present)
        low = np.percentile(sample, 1, axis=(0, 2, 3))
        high = np.percentile(sample, 99.8, axis=(0, 2, 3))
        return [None if c is None or c.shape[0] != len(low) else composite(c, low, high) for c in cut]

    def _cut(self, fld: Field, tile: GalleryTile) -> np.ndarray | None:
        meta = self.session.trained.meta
        try:
            channels = model_channels(fld, image_channel_names(meta), meta.channel_indices)
        except ValueError:
            return None
        y0, x0 = tile.origin
        size = tile.tile_size
        if y0 + size > fld.shape[0] or x0 + size > fld.shape[1]:
            return None
        return fld.stack(channels)[:, y0 : y0 + size, x0 : x0 + size]

    # -- actions ---------------------------------------------------------------------------------
    def _tile_field(self, k: int) -> Field | None:
        return self._fields().get(self.tiles[k].source)

    @alive_only
    def _on_row(self, k: int) -> None:
        if 0 <= k < len(self.tiles):
            self.go_to(k)

    def go_to(self, k: int) -> None:
        """Centre the camera on tile k in its field and zoom to about VIEW_TILES tiles across."""
        if self.list.currentRow() != k:
            with signals_blocked(self.list):
                self.list.setCurrentRow(k)
        self.selected = k
        tile = self.tiles[k]
        fld = self._tile_field(k)
        viewer = self.session.viewer
        if fld is None or viewer is None:
            self.relabel_button.setEnabled(False)
            self.note.setStyleSheet(WARNING_STYLE)
            self.note.setText(
                f"'{tile.source}' is not an open field (tiles from imported folders have none): "
                "nothing to go to."
            )
            return
        cy, cx = tile.centre
        (sy, sx), (ty, tx) = fld.scale, fld.translate
        camera = camera_of(viewer)
        camera.center = (ty + sy * cy, tx + sx * cx)
        canvas = min(int(s) for s in viewer.canvas.size) or THUMBNAIL_PX * VIEW_TILES
        camera.zoom = canvas / (VIEW_TILES * tile.tile_size * max(abs(sy), abs(sx)))
        self.relabel_class.setCurrentText(tile.predicted)
        self.relabel_button.setEnabled(True)
        self.note.setStyleSheet("")
        self.note.setText(
            f"{fld.name}, tile at pixel (y, x) {tile.origin}: labelled {tile.true}, predicted "
            f"{tile.predicted} ({tile.confidence:.0%})."
        )

    def relabel(self) -> None:
        """Paint the selected tile's region with the chosen class on its field's labels layer."""
        if self.selected is None:
            return
        k, tile = self.selected, self.tiles[self.selected]
        fld = self._tile_field(k)
        viewer = self.session.viewer
        if fld is None or viewer is None:
            return
        if self.session.labels_source(fld.id) != LABELS_PAINTED:
            self.note.setStyleSheet(WARNING_STYLE)
            self.note.setText(
                f"'{fld.name}' is not labelled by painting (Fields tab): choose painted labels "
                "for it there to relabel single tiles."
            )
            return
        name = self.relabel_class.currentText()
        value = self.session.class_names.index(name) + 1
        layer = labels_layer(viewer, fld, self.session.class_colors, create=True)
        y0, x0 = tile.origin
        size = tile.tile_size
        yy, xx = np.mgrid[y0 : min(y0 + size, fld.shape[0]), x0 : min(x0 + size, fld.shape[1])]
        lead = tuple(np.zeros(yy.size, np.int64) for _ in range(layer.data.ndim - 2))
        layer.data_setitem(lead + (yy.ravel(), xx.ravel()), value)
        self.relabelled[k] = name
        self._label(k)
        self.note.setStyleSheet("")
        self.note.setText(f"Painted the tile at {tile.origin} of {fld.name} as {name}: retrain to use it.")
