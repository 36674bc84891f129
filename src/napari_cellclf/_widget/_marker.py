"""The "asked" marker: one rectangle around the tile or cell that "Next uncertain" asks about.

The camera shows about five tiles around the asked one; without a mark the user has to guess
which of them the keys 1..K will paint. One Shapes layer (no fill, a thick edge in a colour no
class uses, not editable) is drawn over the asked tile's pixels, or the asked cell's bounding box,
in the field's world coordinates (its scale/translate: fields are laid out side by side). It is
kept on top of the layer list, moved at every ask, and removed when nothing is left to ask and
when the dock closes. It never takes the selection: the keys are bound on the classes layer.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_rgb

from ._fields import Field, derived_metadata
from ._layers import keep_selection

ROLE_ASKED = "asked"
MARKER_NAME = "asked"
# Bright colours that read over any image; the first no class uses (nearest class colour the
# furthest away when every one is close to a class).
CANDIDATE_COLORS = ("#ffff00", "#00ffff", "#ff00ff", "#ffffff", "#ff8000")
EDGE_FRACTION = 1 / 12  # of the asked item's size: a few screen pixels at the asked zoom


def marker_color(class_colors) -> str:
    used = np.array([to_rgb(c) for c in class_colors]) if len(class_colors) else np.zeros((0, 3))

    def distance(color: str) -> float:
        if not len(used):
            return np.inf
        return float(np.min(np.abs(used - np.array(to_rgb(color))).sum(1)))

    return max(CANDIDATE_COLORS, key=distance)  # max keeps the first on ties


def pixel_box(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """The rectangle (4 corners, data coords) whose outline covers pixels [y0, y1) x [x0, x1)
    exactly: napari puts pixel centres on integers, so a pixel spans +-0.5 around it."""
    top, left, bottom, right = y0 - 0.5, x0 - 0.5, y1 - 0.5, x1 - 0.5
    return np.array([[top, left], [top, right], [bottom, right], [bottom, left]], float)


def asked_box(asked, fld: Field, cells=None) -> np.ndarray | None:
    """The asked tile's pixels (clipped to the field) or the asked cell's bounding box."""
    if asked.kind == "tile":
        y0, x0 = asked.origin
        return pixel_box(y0, x0, min(y0 + asked.size, fld.shape[0]), min(x0 + asked.size, fld.shape[1]))
    if cells is None:
        return None
    yy, xx = np.nonzero(np.asarray(cells.data).reshape(fld.shape) == asked.item)
    if not yy.size:
        return None
    return pixel_box(int(yy.min()), int(xx.min()), int(yy.max()) + 1, int(xx.max()) + 1)


class Marker:
    """Owns the "asked" layer and the one connection that keeps it on top."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.layer = None
        # last: listeners that track indices (the layer list view) hear of the insert first
        viewer.layers.events.inserted.connect(self._keep_on_top, position="last")

    def _alive(self):
        return self.layer if self.layer is not None and self.layer in self.viewer.layers else None

    def show(self, box: np.ndarray, fld: Field, size: int, class_colors) -> None:
        width = max(2.0, size * EDGE_FRACTION)
        color = marker_color(class_colors)
        layer = self._alive()
        if layer is None:
            with keep_selection(self.viewer):
                layer = self.viewer.add_shapes(
                    [box],
                    shape_type="rectangle",
                    name=MARKER_NAME,
                    edge_color=color,
                    face_color="transparent",
                    edge_width=width,
                    opacity=1.0,
                    blending="translucent_no_depth",
                    metadata=derived_metadata(fld.id, ROLE_ASKED),
                    **fld.layer_kwargs(),
                )
            self.layer = layer
        else:
            layer.metadata.update(derived_metadata(fld.id, ROLE_ASKED))
            layer.scale, layer.translate = fld.layer_kwargs()["scale"], fld.layer_kwargs()["translate"]
            layer.data = [box]
            layer.shape_type = ["rectangle"]
            layer.edge_width = [width]
            layer.edge_color = [color]
            layer.face_color = ["transparent"]
        layer.editable = False
        self._keep_on_top()

    def _keep_on_top(self, *_event) -> None:
        layer = self._alive()
        layers = self.viewer.layers
        if layer is not None and layers.index(layer) != len(layers) - 1:
            with keep_selection(self.viewer):
                layers.move(layers.index(layer), len(layers))

    def remove(self) -> None:
        layer, self.layer = self._alive(), None
        if layer is not None:
            self.viewer.layers.remove(layer)

    def shut_down(self) -> None:
        self.viewer.layers.events.inserted.disconnect(self._keep_on_top)
        self.remove()
