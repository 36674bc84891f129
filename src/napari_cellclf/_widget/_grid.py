"""The "tile grid" layer: tile borders and the pixels no training tile uses, over the current field.

Drawn as an image, so the dimming of unused pixels and the borders are one cheap layer. A 1-px line
is lost on screen once the view shows less than one screen pixel per image pixel (the GPU samples
one texel per screen pixel and skips the rest: at 0.3-0.8 screen px per image px most lines
vanished and tiles looked 2-3x bigger than they are). So the lines are drawn `line_width` image
pixels wide, at least one screen pixel at the current zoom, and redrawn when the zoom crosses a
step; the line centres stay on the tile borders.
"""

from __future__ import annotations

import math

import numpy as np
from napari.utils.colormaps import Colormap

from ..tiling import TileGrid
from ._fields import ROLE_GRID, Field, derived_metadata, role_of
from ._labelling import first_channel, training_grid
from ._layers import TRANSPARENT, keep_selection
from ._objects import object_index, objects_layer

# Grid overlay values: 0 nothing, 1 a tile border, 2 a pixel no training tile uses (dimmed).
GRID_COLORMAP = Colormap(
    colors=[TRANSPARENT, (1.0, 1.0, 1.0, 0.55), (0.0, 0.0, 0.0, 0.6)],
    controls=[0.0, 1 / 3, 2 / 3, 1.0],
    interpolation="zero",
    name="cellclf tile grid",
)
# A band one screen pixel wide always holds a pixel centre, so the GPU draws it.
_SCREEN_PX = 1.0
_HIDDEN_BY_WIDGET = "hidden_by_widget"


def camera_of(viewer):
    """napari >= 0.9 keeps the camera in `viewer.scene` (`viewer.camera` is deprecated there)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def line_width(zoom: float, scale: float) -> int:
    """Image pixels a border needs to cover at least one screen pixel: `zoom` is napari's camera
    zoom (screen px per world unit), `scale` the layer's world units per image pixel."""
    screen_per_pixel = float(zoom) * float(scale)
    if not screen_per_pixel > 0 or not math.isfinite(screen_per_pixel):
        return 1
    return max(1, math.ceil(_SCREEN_PX / screen_per_pixel))


def grid_image(grid: TileGrid, skipped: np.ndarray | None = None, width: int = 1) -> np.ndarray:
    """(H, W) uint8 overlay: 1 on tile borders (every `stride` pixels, `width` px wide), 2 on
    pixels that no used tile covers (skipped background tiles, the strip a 'drop' grid leaves),
    0 elsewhere."""
    height, size = grid.image_shape[0], grid.image_shape[1]
    t = grid.tile_size
    origins = grid.origins()
    used = np.ones(len(origins), bool) if skipped is None else ~np.asarray(skipped, bool)
    covered = np.zeros((height, size), bool)
    for y0, x0 in origins[used]:
        covered[y0 : y0 + t, x0 : x0 + t] = True
    # lines at every tile origin and after the last tile, per axis
    rows = np.minimum(np.r_[origins[:, 0], origins[:, 0].max() + t - 1], height - 1)
    cols = np.minimum(np.r_[origins[:, 1], origins[:, 1].max() + t - 1], size - 1)
    border = np.zeros((height, size), bool)
    border[_bands(rows, width, height), :] = True
    border[:, _bands(cols, width, size)] = True
    overlay = np.where(covered, 0, 2).astype(np.uint8)
    overlay[border & covered] = 1
    return overlay


def _bands(lines: np.ndarray, width: int, size: int) -> np.ndarray:
    """Pixel indices of `width`-px bands centred on `lines`, shifted inward at the image edges
    (the last border sits on the last pixel: a centred band would lose half its width there)."""
    width = max(1, min(int(width), size))
    start = np.clip(np.unique(lines) - (width - 1) // 2, 0, size - width)
    return np.unique((start[:, None] + np.arange(width)[None, :]).ravel())


def grid_layer(viewer):
    return next((ly for ly in viewer.layers if role_of(ly) == ROLE_GRID), None)


def show_grid(viewer, field: Field, overlay: np.ndarray, visible: bool | None = None):
    """One "tile grid" layer, over the current field; moved and refilled when the field changes.
    `visible=None` leaves an existing layer's eye as the user set it; a grid the widget hid (the
    tile size was invalid for a moment) is shown again."""
    layer = grid_layer(viewer)
    kwargs = field.layer_kwargs()
    if layer is None:
        with keep_selection(viewer):
            layer = viewer.add_image(
                overlay,
                name="tile grid",
                colormap=GRID_COLORMAP,
                contrast_limits=(0, 2),
                blending="translucent",
                interpolation2d="nearest",
                visible=visible is not False,
                metadata=derived_metadata(field.id, ROLE_GRID),
                **kwargs,
            )
    else:
        hidden_by_widget = bool(layer.metadata.get("cellclf", {}).get(_HIDDEN_BY_WIDGET))
        layer.metadata.update(derived_metadata(field.id, ROLE_GRID))
        layer.scale, layer.translate = kwargs["scale"], kwargs["translate"]
        layer.data = overlay
        layer.contrast_limits = (0, 2)
        if visible is None and hidden_by_widget:
            visible = True
        if visible is not None:
            layer.visible = visible
    return layer


def hide_grid(viewer) -> None:
    """Hide the grid (no field, the checkbox off, or no valid grid): remembered, so that the grid
    comes back by itself when the reason goes away, unlike a grid the user hid with its eye."""
    layer = grid_layer(viewer)
    if layer is not None:
        if layer.visible:
            layer.metadata.setdefault("cellclf", {})[_HIDDEN_BY_WIDGET] = True
        layer.visible = False


def draw_grid(viewer, session, fld: Field | None, foreground, width: int, reveal: bool) -> str:
    """Show the training grid of `fld` (or hide it: no field, 'Show tile grid' off, no valid
    grid); the note under the settings. `reveal`: the checkbox was just ticked, so a grid the
    eye had hidden is shown."""
    d = session.data
    masks = objects_layer(session, viewer, fld) if fld is not None else None
    if masks is not None:  # object mode: a tile per cell, the grid is not what training cuts
        hide_grid(viewer)
        n_cells = len(object_index(masks).table)
        return f"{fld.name}: object mode, {n_cells} cells in '{masks.name}', one {d.tile_size} px tile each"
    if fld is None or not d.show_grid:
        hide_grid(viewer)
        return ""
    try:
        grid = training_grid(fld.shape, session)
    except ValueError as exc:
        hide_grid(viewer)
        return f"{fld.name}: {exc}"
    skipped, note = None, ""
    if d.skip_background:
        try:
            skipped = ~foreground.get(fld, grid, first_channel(session))
        except ValueError as exc:
            note = f"Background detection failed: {exc}"
    show_grid(viewer, fld, grid_image(grid, skipped, width), visible=True if reveal else None)
    used = grid.n_tiles - (int(skipped.sum()) if skipped is not None else 0)
    return note or (
        f"{fld.name}: {grid.rows}×{grid.cols} = {grid.n_tiles} tiles"
        + (f", {used} with foreground" if skipped is not None else "")
    )
