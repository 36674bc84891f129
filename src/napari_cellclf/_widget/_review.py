"""The model asks for labels: "Next uncertain" and one key press per answer (tiles or cells).

After a classification every classified tile has an uncertainty (the classes layer's
`uncertainty` feature, from _result_layers / uncertainty.py). "Next uncertain" (button, or N) centres the camera on the most uncertain tile of any classified field
that is not labelled (the tile rule of training: painted pixels on at least MIN_FRACTION of it,
tiling.tile_labels_from_label_image) and not visited yet, and selects that field's classes layer,
whose keys 1..K then paint the tile as class k on "<field> labels" (Labels.data_setitem, as the
brush does: undo history, the tile counts follow) and go on to the next one. In object mode the
same goes for cells: "<field> cell classes" (instance ids, the per-object table as features), a
cell is labelled when objects.object_classes finds a painted class in it, the camera goes to its
centroid, and a key paints the whole cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import uncertainty
from ..options import MIN_FRACTION
from ..tiling import tile_labels_from_label_image
from ._fields import ROLE_CLASSES, Field, find_derived
from ._grid import camera_of
from ._layers import labels_layer
from ._marker import Marker, asked_box
from ._session import LABELS_PAINTED, Session

VIEW_TILES = 5  # the camera shows about this many tiles (or cells) across around the asked one
ROLE_CELLS = "cells"  # object mode's "<field> cell classes" (_objects.ROLE_CELLS)
NEXT_KEY = "n"
MAX_KEYS = 9  # classes 1..9 answer with a digit


@dataclass
class Asked:
    field_id: str
    field_name: str
    kind: str  # "tile" | "cell"
    item: int  # tile: 0-based grid index; cell: its label (object id)
    centre: tuple[float, float]  # (y, x) in the field's pixels (integers at pixel centres)
    size: int  # pixels across (tile size; a cell: about its diameter)
    score: float
    predicted: str
    confidence: float
    origin: tuple[int, int] = (0, 0)  # a tile's top-left pixel


class Review:
    """Which tiles (or cells) were asked already, and the one asked now; the keys of the
    classes layers."""

    def __init__(self, viewer, session: Session, fields_provider):
        self.viewer, self.session, self._fields = viewer, session, fields_provider
        self.visited: dict[str, set[tuple[str, int]]] = {}
        self.asked: Asked | None = None
        self.listeners: list = []  # called with the new `asked` (the panel's note)
        self.marker = Marker(viewer)  # the rectangle around the asked tile or cell
        session.predictions_changed.connect(self._on_prediction)
        # N on the viewer too, so it works while painting on a labels layer (which binds no N);
        # never taken from whoever bound it first
        try:
            viewer.bind_key(NEXT_KEY, self._on_next_key)
            self._viewer_key = True
        except ValueError:
            self._viewer_key = False

    def _on_next_key(self, _viewer) -> None:
        if self.session.predictions and not self.session.jobs.busy:
            self.next()

    def shut_down(self) -> None:
        self.session.predictions_changed.disconnect(self._on_prediction)
        self.marker.shut_down()
        if self._viewer_key:
            self.viewer.bind_key(NEXT_KEY, None)
            self._viewer_key = False

    def _on_prediction(self, field_id: str) -> None:
        self.visited.pop(field_id, None)  # a new classification asks afresh

    # -- which tile --------------------------------------------------------------------------------
    def _painted(self, fld: Field) -> np.ndarray | None:
        """The field's painted labels, None when it is not labelled by painting (then every tile
        or cell counts as labelled: a whole-image class or unused)."""
        if self.session.labels_source(fld.id) != LABELS_PAINTED:
            return None
        layer = labels_layer(self.viewer, fld, self.session.class_colors, create=False)
        return np.zeros(fld.shape, np.uint8) if layer is None else np.asarray(layer.data).reshape(fld.shape)

    def _tiles(self, fld: Field, layer, painted) -> list[Asked]:
        entry = self.session.predictions.get(fld.id)
        grid = getattr(entry[1], "grid", None) if entry else None
        features = layer.features
        if grid is None or painted is None or "uncertainty" not in features:
            return []
        tiles = np.asarray(features["index"], np.int64) - 1
        scores = np.zeros(grid.n_tiles)
        scores[tiles] = np.asarray(features["uncertainty"], float)
        labelled = np.flatnonzero(tile_labels_from_label_image(painted, grid, MIN_FRACTION.default).ravel())
        seen = [i for kind, i in self.visited.get(fld.id, ()) if kind == "tile"]
        classes = dict(zip(tiles, np.asarray(features["class"])))
        confidence = dict(zip(tiles, np.asarray(features["confidence"], float)))
        origins = grid.origins()
        out = []
        for tile in uncertainty.rank_unlabelled(scores, tiles, np.union1d(labelled, seen)):
            y0, x0 = (int(v) for v in origins[tile])
            # the middle of the tile's pixels inside the field
            centre = (
                (y0 + min(y0 + grid.tile_size, fld.shape[0]) - 1) / 2,
                (x0 + min(x0 + grid.tile_size, fld.shape[1]) - 1) / 2,
            )
            out.append(
                Asked(
                    fld.id,
                    fld.name,
                    "tile",
                    int(tile),
                    centre,
                    grid.tile_size,
                    float(scores[tile]),
                    str(classes[tile]),
                    float(confidence[tile]),
                    (y0, x0),
                )
            )
        return out

    def _cells(self, fld: Field, layer, painted) -> list[Asked]:
        """Object mode's "<field> cell classes" (instance ids; features: the per-object table)."""
        from ._objects import object_index  # the mask's numbering, cached per layer and data

        features = layer.features
        if painted is None or "centroid_y" not in features or not len(features):
            return []
        ids = np.asarray(features["index"], np.int64)
        if "uncertainty" in features:
            scores = np.asarray(features["uncertainty"], float)
        else:
            columns = [c for c in features.columns if str(c).startswith("p_")]
            scores = uncertainty.entropy(np.stack([np.asarray(features[c], float) for c in columns], 1))
        index = object_index(layer)  # each key press asks again: no re-sort of the mask
        classes = index.classes(painted, len(self.session.classes))
        labelled = np.asarray(index.table.labels)[classes > 0]
        seen = [i for kind, i in self.visited.get(fld.id, ()) if kind == "cell"]
        row_of = {int(v): r for r, v in enumerate(ids)}
        out = []
        for r in uncertainty.rank_unlabelled(
            scores,
            np.arange(len(ids)),
            [row_of[int(v)] for v in np.union1d(labelled, seen) if int(v) in row_of],
        ):
            area = float(features["area"].iloc[r]) if "area" in features else 100.0
            out.append(
                Asked(
                    fld.id,
                    fld.name,
                    "cell",
                    int(ids[r]),
                    (float(features["centroid_y"].iloc[r]), float(features["centroid_x"].iloc[r])),
                    max(8, int(2 * np.sqrt(area))),
                    float(scores[r]),
                    str(features["class_name"].iloc[r]) if "class_name" in features else "",
                    float(features["confidence"].iloc[r]),
                )
            )
        return out

    def ranked(self) -> list[Asked]:
        """Every unlabelled, unvisited classified tile or cell, most uncertain first."""
        out: list[Asked] = []
        for fld in self._fields():
            painted = None
            for role, candidates in ((ROLE_CLASSES, self._tiles), (ROLE_CELLS, self._cells)):
                layer = find_derived(self.viewer.layers, fld.id, role)
                if layer is not None:
                    painted = self._painted(fld) if painted is None else painted
                    out += candidates(fld, layer, painted)
        out.sort(key=lambda a: -a.score)  # stable: fields in layer order on ties
        return out

    # -- actions -----------------------------------------------------------------------------------
    def next(self) -> Asked | None:
        """Centre the view on the next tile or cell to ask about; None when none is left."""
        ranked = self.ranked()
        self.asked = ranked[0] if ranked else None
        if self.asked is not None:
            asked = self.asked
            self.visited.setdefault(asked.field_id, set()).add((asked.kind, asked.item))
            fld = next(f for f in self._fields() if f.id == asked.field_id)
            (sy, sx), (ty, tx) = fld.scale, fld.translate
            camera = camera_of(self.viewer)
            camera.center = (ty + sy * asked.centre[0], tx + sx * asked.centre[1])
            canvas = min(int(s) for s in self.viewer.canvas.size) or 500
            camera.zoom = canvas / (VIEW_TILES * asked.size * max(abs(sy), abs(sx)))
            role = ROLE_CLASSES if asked.kind == "tile" else ROLE_CELLS
            layer = find_derived(self.viewer.layers, fld.id, role)
            box = asked_box(asked, fld, layer)
            if box is None:
                self.marker.remove()
            else:
                self.marker.show(box, fld, asked.size, self.session.class_colors)
                self.bind_keys(self.marker.layer)  # selecting the marker keeps the keys working
            if layer is not None:
                self.bind_keys(layer)
                self.viewer.layers.selection.active = layer  # its keys answer
        else:
            self.marker.remove()  # nothing left to ask
        for listener in self.listeners:
            listener(self.asked)
        return self.asked

    def answer(self, value: int) -> bool:
        """Paint the asked tile (or cell) as class `value` (1-based) and ask the next one."""
        asked = self.asked
        if asked is None or not 1 <= value <= len(self.session.classes):
            return False
        fld = next((f for f in self._fields() if f.id == asked.field_id), None)
        if fld is None or self.session.labels_source(fld.id) != LABELS_PAINTED:
            return False
        if asked.kind == "tile":
            y0, x0 = asked.origin
            yy, xx = np.mgrid[
                y0 : min(y0 + asked.size, fld.shape[0]), x0 : min(x0 + asked.size, fld.shape[1])
            ]
            yy, xx = yy.ravel(), xx.ravel()
        else:
            cells = find_derived(self.viewer.layers, fld.id, ROLE_CELLS)
            if cells is None:
                return False
            yy, xx = np.nonzero(np.asarray(cells.data).reshape(fld.shape) == asked.item)
        layer = labels_layer(self.viewer, fld, self.session.class_colors, create=True)
        lead = tuple(np.zeros(yy.size, np.int64) for _ in range(layer.data.ndim - 2))
        layer.data_setitem(lead + (yy, xx), value)
        self.next()
        return True

    def bind_keys(self, layer) -> None:
        """N and 1..K on this classes layer (its own digit keys switch modes it never uses: it is
        not editable)."""
        layer.bind_key(NEXT_KEY, lambda _layer: self.next(), overwrite=True)
        for k in range(1, min(len(self.session.classes), MAX_KEYS) + 1):
            layer.bind_key(str(k), lambda _layer, k=k: self.answer(k), overwrite=True)
