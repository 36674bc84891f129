"""The model asks for labels: "Next uncertain" and one key press per answer.

After a classification every classified tile has an uncertainty (the classes layer's
`uncertainty` feature, from _result_layers / uncertainty.py). "Next uncertain" (button, or N with
a classes layer selected) centres the camera on the most uncertain tile of any classified field
that is not labelled (the tile rule of training: painted pixels on at least MIN_FRACTION of it,
tiling.tile_labels_from_label_image) and not visited yet, and selects that field's classes layer,
whose keys 1..K then paint the tile as class k on "<field> labels" (Labels.data_setitem, as the
brush does: undo history, the tile counts follow) and go on to the next one.
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
from ._session import LABELS_PAINTED, Session

VIEW_TILES = 5  # the camera shows about this many tiles across around the asked tile
NEXT_KEY = "n"
MAX_KEYS = 9  # classes 1..9 answer with a digit


@dataclass
class Asked:
    field_id: str
    field_name: str
    tile: int  # 0-based grid index
    origin: tuple[int, int]  # top-left pixel (y, x)
    size: int
    score: float
    predicted: str
    confidence: float


class Review:
    """Which tiles were asked already, and the one asked now; the keys of the classes layers."""

    def __init__(self, viewer, session: Session, fields_provider):
        self.viewer, self.session, self._fields = viewer, session, fields_provider
        self.visited: dict[str, set[int]] = {}
        self.asked: Asked | None = None
        self.listeners: list = []  # called with the new `asked` (the panel's note)
        session.predictions_changed.connect(self._on_prediction)

    def shut_down(self) -> None:
        self.session.predictions_changed.disconnect(self._on_prediction)

    def _on_prediction(self, field_id: str) -> None:
        self.visited.pop(field_id, None)  # a new classification asks afresh

    # -- which tile --------------------------------------------------------------------------------
    def _labelled(self, fld: Field, grid) -> np.ndarray:
        if self.session.labels_source(fld.id) != LABELS_PAINTED:
            return np.ones(grid.n_tiles, bool)  # a whole-image class: every tile is labelled
        layer = labels_layer(self.viewer, fld, self.session.class_colors, create=False)
        if layer is None:
            return np.zeros(grid.n_tiles, bool)
        plane = np.asarray(layer.data).reshape(fld.shape)
        return tile_labels_from_label_image(plane, grid, MIN_FRACTION.default).ravel() > 0

    def ranked(self) -> list[Asked]:
        """Every unlabelled, unvisited classified tile, most uncertain first."""
        out: list[Asked] = []
        for fld in self._fields():
            entry = self.session.predictions.get(fld.id)
            layer = find_derived(self.viewer.layers, fld.id, ROLE_CLASSES)
            if entry is None or layer is None or "uncertainty" not in layer.features:
                continue
            prediction = entry[1]
            features = layer.features
            tiles = np.asarray(features["index"], np.int64) - 1
            scores = np.zeros(prediction.grid.n_tiles)
            scores[tiles] = np.asarray(features["uncertainty"], float)
            labelled = np.flatnonzero(self._labelled(fld, prediction.grid))
            exclude = np.union1d(labelled, sorted(self.visited.get(fld.id, ())))
            classes = dict(zip(tiles, np.asarray(features["class"])))
            confidence = dict(zip(tiles, np.asarray(features["confidence"], float)))
            origins = prediction.grid.origins()
            for tile in uncertainty.rank_unlabelled(scores, tiles, exclude):
                out.append(
                    Asked(
                        fld.id,
                        fld.name,
                        int(tile),
                        (int(origins[tile][0]), int(origins[tile][1])),
                        prediction.grid.tile_size,
                        float(scores[tile]),
                        str(classes[tile]),
                        float(confidence[tile]),
                    )
                )
        out.sort(key=lambda a: -a.score)  # stable: fields in layer order on ties
        return out

    # -- actions -----------------------------------------------------------------------------------
    def next(self) -> Asked | None:
        """Centre the view on the next tile to ask about; None when none is left."""
        ranked = self.ranked()
        self.asked = ranked[0] if ranked else None
        if self.asked is not None:
            asked = self.asked
            self.visited.setdefault(asked.field_id, set()).add(asked.tile)
            fld = next(f for f in self._fields() if f.id == asked.field_id)
            (sy, sx), (ty, tx) = fld.scale, fld.translate
            # the middle of the tile's pixels inside the field (integers at pixel centres)
            y0, x0 = asked.origin
            cy = (y0 + min(y0 + asked.size, fld.shape[0]) - 1) / 2
            cx = (x0 + min(x0 + asked.size, fld.shape[1]) - 1) / 2
            camera = camera_of(self.viewer)
            camera.center = (ty + sy * cy, tx + sx * cx)
            canvas = min(int(s) for s in self.viewer.canvas.size) or 500
            camera.zoom = canvas / (VIEW_TILES * asked.size * max(abs(sy), abs(sx)))
            layer = find_derived(self.viewer.layers, fld.id, ROLE_CLASSES)
            if layer is not None:
                self.bind_keys(layer)
                self.viewer.layers.selection.active = layer  # its keys answer
        for listener in self.listeners:
            listener(self.asked)
        return self.asked

    def answer(self, value: int) -> bool:
        """Paint the asked tile as class `value` (1-based) and ask the next one."""
        asked = self.asked
        if asked is None or not 1 <= value <= len(self.session.classes):
            return False
        fld = next((f for f in self._fields() if f.id == asked.field_id), None)
        if fld is None or self.session.labels_source(fld.id) != LABELS_PAINTED:
            return False
        layer = labels_layer(self.viewer, fld, self.session.class_colors, create=True)
        y0, x0 = asked.origin
        yy, xx = np.mgrid[y0 : min(y0 + asked.size, fld.shape[0]), x0 : min(x0 + asked.size, fld.shape[1])]
        lead = tuple(np.zeros(yy.size, np.int64) for _ in range(layer.data.ndim - 2))
        layer.data_setitem(lead + (yy.ravel(), xx.ravel()), value)
        self.next()
        return True

    def bind_keys(self, layer) -> None:
        """N and 1..K on this classes layer (its own digit keys switch modes it never uses: it is
        not editable)."""
        layer.bind_key(NEXT_KEY, lambda _layer: self.next(), overwrite=True)
        for k in range(1, min(len(self.session.classes), MAX_KEYS) + 1):
            layer.bind_key(str(k), lambda _layer, k=k: self.answer(k), overwrite=True)
