"""What counted: the tiles training receives, outlined in their class colour, and where they went.

"<field> labelled tiles" is a Labels layer drawn as outlines (`contour`): one label value per
labelled tile (tile index + 1), coloured by its class, so painted strokes (fills on "<field>
labels") and predicted classes (fills on "<field> classes") never look like what was said. The
tiles are the ones `datasets` cuts for training (painted_tile_classes / whole_tile_classes on the
training grid): the same rule as the counts, not a second one. After a training, "<field>
validation tiles" marks the tiles the split held out (datasets.split_positions, the split
training made).

Hovering any tile of any field puts its info (labelled class, train/validation, predicted class
and confidence) in the status bar, whichever layer is selected.
"""

from __future__ import annotations

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from .. import datasets
from ..tiling import TileGrid, tile_values_to_map
from ._fields import (
    ROLE_CLASSES,
    ROLE_LABELLED,
    ROLE_LABELS,
    ROLE_VALIDATION,
    Field,
    derived_metadata,
    field_id_of,
    find_derived,
    role_of,
)
from ._labelling import ForegroundCache, first_channel, training_spec
from ._layers import TRANSPARENT, keep_selection, labels_layer
from ._objects import objects_layer, show_labelled_cells
from ._session import LABELS_PAINTED, Session

VALIDATION_COLOR = "#ffffff"
_FILLS = {ROLE_LABELS, ROLE_CLASSES}


def tile_classes(session: Session, fld: Field, viewer, foreground: ForegroundCache | None = None):
    """(grid, class value per tile, 0 = not labelled) of a field as training will cut it; None
    when the field gives no tiles (not used, nothing painted, no valid grid)."""
    spec = training_spec(session)
    choice = session.labels_source(fld.id)
    if objects_layer(session, viewer, fld) is not None:
        return None  # object mode: the cells are outlined instead (_objects.show_labelled_cells)
    try:
        grid = spec.grid(fld.shape)
    except ValueError:
        return None
    if choice == LABELS_PAINTED:
        layer = labels_layer(viewer, fld, session.class_colors, create=False)
        if layer is None:
            return None
        return grid, datasets.painted_tile_classes(np.asarray(layer.data), spec, grid)
    if isinstance(choice, int) and 1 <= choice <= len(session.classes):
        if spec.foreground_channel is None:
            return grid, datasets.whole_tile_classes(None, spec, fld.shape, choice)
        if foreground is None:
            image = fld.stack([first_channel(session)])
            return grid, datasets.whole_tile_classes(image, spec, fld.shape, choice)
        try:
            used = foreground.get(fld, grid, first_channel(session))
        except ValueError:
            return None
        return grid, np.where(used, choice, 0).astype(np.int64)
    return None


def outline_width(tile_size: int, line_px: int) -> int:
    """Outline thickness in image px: visible beside the 1-screen-px grid, thin next to a tile."""
    return int(max(2 * line_px, min(4, max(1, tile_size // 16))))


def outline_map(grid: TileGrid, classes: np.ndarray, width: int) -> np.ndarray:
    """(H, W) uint8/uint16: the class value on a `width`-px band inside the border of each
    labelled tile's cell (TileGrid.tile_at's cells), 0 elsewhere. Drawn here with 1-D masks
    because napari's Labels `contour` (a grey erosion per refresh) took over 1 s on a 2048² field."""
    n = grid.n_tiles
    cells = np.asarray(tile_values_to_map(np.arange(1, n + 1), grid, np.arange(n), fill=0))
    mid = grid.tile_size // 2
    row_of = np.where(cells[:, mid] > 0, (cells[:, mid] - 1) // grid.cols, -1)
    col_of = np.where(cells[mid, :] > 0, (cells[mid, :] - 1) % grid.cols, -1)
    border = [_band(row_of, width)[:, None], _band(col_of, width)[None, :]]
    lut = np.zeros(n + 1, dtype=np.uint16 if classes.max(initial=0) >= 255 else np.uint8)
    lut[1:] = classes
    return np.where(border[0] | border[1], lut[cells], 0).astype(lut.dtype, copy=False)


def _band(cell: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` of a change of cell along one axis (the axis ends count as one)."""
    padded = np.r_[-2, cell, -2]
    out = np.zeros(len(cell), bool)
    for k in range(1, max(1, int(width)) + 1):
        before = np.r_[np.full(k - 1, -2), padded[: len(padded) - k]][: len(cell)]
        after = np.r_[padded[k + 1 :], np.full(k - 1, -2)][: len(cell)]
        out |= (before != cell) | (after != cell)
    return out


def show_labelled(viewer, fld: Field, grid: TileGrid, classes: np.ndarray, names, colors, split, width: int):
    """Create or refill "<field> labelled tiles" (and its validation marks); None when empty.
    Label value = class value (K colours, cheap to draw); the per-tile table (row, col, class,
    split) is in metadata["cellclf"]["tiles"]."""
    layer = find_derived(viewer.layers, fld.id, ROLE_LABELLED)
    chosen = np.flatnonzero(classes)
    if not len(chosen):
        if layer is not None:
            viewer.layers.remove(layer)
        _show_validation(viewer, fld, grid, chosen, split)
        return None
    outlines = outline_map(grid, classes, width)
    color_dict = {None: TRANSPARENT, 0: TRANSPARENT}
    color_dict.update({k: c for k, c in enumerate(colors, start=1)})
    rows, cols = grid.row_col(chosen)
    held_out = split.get("validation", set()) if split else set()
    tiles = {
        "tile": [int(t) + 1 for t in chosen],
        "row": [int(r) for r in rows],
        "col": [int(c) for c in cols],
        "class": [names[int(classes[t]) - 1] for t in chosen],
        "split": [
            ("validation" if (int(r), int(c)) in held_out else "train") if split else "-"
            for r, c in zip(rows, cols)
        ],
    }
    features = {"index": np.arange(1, len(names) + 1), "class": np.asarray(names)}
    metadata = derived_metadata(fld.id, ROLE_LABELLED)
    metadata["cellclf"].update(tiles=tiles, colors=list(colors))
    if layer is None:
        with keep_selection(viewer):
            layer = viewer.add_labels(
                outlines,
                name=f"{fld.name} labelled tiles",
                colormap=DirectLabelColormap(color_dict=color_dict),
                features=features,
                opacity=1.0,
                metadata=metadata,
                **fld.layer_kwargs(),
            )
    else:
        recolour = layer.metadata.get("cellclf", {}).get("colors") != list(colors)
        layer.metadata.update(metadata)
        if recolour:  # each colormap change redraws the whole field: only when classes changed
            layer.colormap = DirectLabelColormap(color_dict=color_dict)
        layer.features = features
        layer.data = outlines
    layer.editable = False
    _show_validation(viewer, fld, grid, chosen, split)
    return layer


def _show_validation(viewer, fld: Field, grid: TileGrid, chosen: np.ndarray, split) -> None:
    """A white ring in the middle of each labelled tile that the last training held out."""
    layer = find_derived(viewer.layers, fld.id, ROLE_VALIDATION)
    held_out = (split or {}).get("validation", set())
    rows, cols = grid.row_col(chosen)
    keep = [i for i, (r, c) in enumerate(zip(rows, cols)) if (int(r), int(c)) in held_out]
    if not keep:
        if layer is not None:
            viewer.layers.remove(layer)
        return
    origins = grid.origins()[chosen[keep]]
    centres = origins + (grid.tile_size - 1) / 2
    if layer is None:
        with keep_selection(viewer):
            layer = viewer.add_points(
                centres,
                name=f"{fld.name} validation tiles",
                symbol="ring",
                size=grid.tile_size * 0.4,
                face_color=VALIDATION_COLOR,
                border_width=0,
                metadata=derived_metadata(fld.id, ROLE_VALIDATION),
                **fld.layer_kwargs(),
            )
    else:
        layer.data = centres
        layer.size = grid.tile_size * 0.4
    layer.editable = False


def hover_text(viewer, session: Session, fields, cache: dict, world) -> str:
    """The tile under `world` (any field): where it is, its class as labelled, its split and its
    predicted class; "" outside every field."""
    point = np.asarray(world, dtype=float)[-2:]
    for fld in fields:
        (sy, sx), (ty, tx) = fld.scale, fld.translate
        y, x = (point[0] - ty) / sy, (point[1] - tx) / sx
        if not (-0.5 <= y < fld.shape[0] - 0.5 and -0.5 <= x < fld.shape[1] - 0.5):
            continue
        parts = [fld.name]
        hit = cache.get(fld.id)
        try:
            grid = hit[0] if hit else training_spec(session).grid(fld.shape)
        except ValueError:
            return fld.name
        tile = grid.tile_at(y, x)
        if tile is not None:
            row, col = (int(v) for v in grid.row_col(tile))
            parts.append(f"tile {tile + 1} (row {row}, col {col})")
            value = int(hit[1][tile]) if hit else 0
            if value:
                split = session_split(session).get(fld.name)
                where = ""
                if split:
                    where = " (validation)" if (row, col) in split["validation"] else " (train)"
                parts.append(f"labelled {session.class_names[value - 1]}{where}")
            else:
                parts.append("not labelled")
        predicted = _predicted(viewer, fld, world)
        if predicted:
            parts.append(predicted)
        return " · ".join(parts)
    return ""


def session_split(session: Session) -> dict:
    """The last training's split while its model is the current one (a loaded model has none)."""
    trained = session.trained
    if trained is None or trained.source != "trained":
        return {}
    return getattr(session, "training_split", None) or {}


def _predicted(viewer, fld: Field, world) -> str:
    layer = find_derived(viewer.layers, fld.id, ROLE_CLASSES)
    if layer is None or not layer.visible:
        return ""
    value = layer.get_value(world, world=True)
    features = layer.features
    if not value or "index" not in features:
        return ""
    rows = features[features["index"] == int(value)]
    if not len(rows):
        return ""
    first = rows.iloc[0]
    confidence = f", confidence {float(first['confidence']):.2f}" if "confidence" in rows else ""
    return f"predicted {first['class']}{confidence}"


class LabelledTiles:
    """Keeps every field's "labelled tiles" overlay in step with the counts, and the hover text."""

    def __init__(self, viewer, session: Session, fields, foreground: ForegroundCache, line_px):
        self.viewer, self.session = viewer, session
        self._fields, self._foreground, self._line_px = fields, foreground, line_px
        self.enabled = True
        self.cache: dict[str, tuple] = {}  # field id -> (grid, classes)
        self._drawn: dict[str, tuple] = {}  # field id -> what the layer shows (skip equal redraws)
        viewer.cursor.events.position.connect(self.on_hover)

    def refresh(self) -> None:
        names, colors = self.session.class_names, self.session.class_colors
        splits = session_split(self.session)
        seen = set()
        for fld in self._fields():
            seen.add(fld.id)
            painted = labels_layer(self.viewer, fld, colors, create=False)
            show_labelled_cells(self.viewer, self.session, fld, painted, self.enabled)
            hit = tile_classes(self.session, fld, self.viewer, self._foreground) if self.enabled else None
            if hit is None:
                self.cache.pop(fld.id, None)
                if self._drawn.pop(fld.id, None) is not None:
                    _remove(self.viewer, fld.id)
                continue
            grid, classes = hit
            self.cache[fld.id] = hit
            split = splits.get(fld.name)
            width = outline_width(grid.tile_size, self._line_px(fld))
            key = (grid, classes.tobytes(), tuple(names), tuple(colors), _frozen(split), width)
            if self._drawn.get(fld.id) != key or not find_derived(self.viewer.layers, fld.id, ROLE_LABELLED):
                self._drawn[fld.id] = key
                show_labelled(self.viewer, fld, grid, classes, names, colors, split, width)
            _keep_on_top(self.viewer, fld.id)
        for fid in set(self._drawn) - seen:
            self._drawn.pop(fid, None)
            self.cache.pop(fid, None)

    def on_hover(self, event=None) -> None:
        text = hover_text(self.viewer, self.session, self._fields(), self.cache, self.viewer.cursor.position)
        if not text:
            return
        status = self.viewer.status
        if isinstance(status, dict):
            status = dict(status)
            status["coordinates"] = f"{status.get('coordinates', '')}  {text}".strip()
            self.viewer.status = status
        else:
            self.viewer.status = text

    def close(self, *_) -> None:
        self.viewer.cursor.events.position.disconnect(self.on_hover)


def _keep_on_top(viewer, field_id: str) -> None:
    """Outlines and rings above the field's fills (painted labels, predicted classes), which are
    added later and would otherwise cover them."""
    layers = viewer.layers
    fills = [layers.index(ly) for ly in layers if field_id_of(ly) == field_id and role_of(ly) in _FILLS]
    for role in (ROLE_LABELLED, ROLE_VALIDATION):
        layer = find_derived(layers, field_id, role)
        if layer is not None and fills and layers.index(layer) < max(fills):
            with keep_selection(viewer):
                layers.move(layers.index(layer), len(layers))
            fills = [
                layers.index(ly) for ly in layers if field_id_of(ly) == field_id and role_of(ly) in _FILLS
            ]


def _frozen(split) -> tuple:
    if not split:
        return ()
    return tuple(sorted(split.get("validation", ()))), tuple(sorted(split.get("train", ())))


def _remove(viewer, field_id: str) -> None:
    for role in (ROLE_LABELLED, ROLE_VALIDATION):
        layer = find_derived(viewer.layers, field_id, role)
        if layer is not None:
            viewer.layers.remove(layer)
