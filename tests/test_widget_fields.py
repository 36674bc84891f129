"""Widget: fields that never blend, and a tile grid that stays right at any zoom."""

from __future__ import annotations

import numpy as np
import pytest

from widget_support import add_field, open_widget


def _vertical_lines(shot: np.ndarray, row: int) -> int:
    """Runs of bright pixels along one screen row (the field is black, so are the margins)."""
    bright = shot[row, :, :3].astype(float).mean(axis=1) > 40
    return int(np.count_nonzero(bright[1:] & ~bright[:-1]) + bright[0])


@pytest.mark.parametrize("zoom", [0.3, 0.55, 0.8])
def test_tile_grid_lines_all_drawn_when_zoomed_out(make_napari_viewer, qtbot, zoom):
    """256 px field, 16 px tiles: 17 vertical borders (0, 16, ..., 240 and the last column). The
    1-px line image showed only some of them below one screen pixel per image pixel."""
    viewer = make_napari_viewer(show=True)  # a hidden canvas screenshots black
    add_field(viewer, "A01", np.zeros((1, 256, 256), np.float32), channel_names=("dapi",))
    viewer.layers["A01 [dapi]"].contrast_limits = (0, 1)
    _, widget = open_widget(viewer)
    widget.fields_panel.tile_size.setValue(16)
    qtbot.waitUntil(lambda: "16×16" in widget.fields_panel.grid_note.text(), timeout=3000)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center, camera.zoom = (128, 128), zoom

    def lines() -> int:
        shot = viewer.screenshot(canvas_only=True, flash=False)
        return _vertical_lines(shot, shot.shape[0] // 2 + int(8 * zoom))  # mid-tile, off the rows

    qtbot.waitUntil(lambda: lines() == 17, timeout=3000)


def test_tile_grid_comes_back_after_an_invalid_tile_size(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_field(viewer, "A01", np.zeros((1, 128, 128), np.float32), channel_names=("dapi",))
    _, widget = open_widget(viewer)
    panel = widget.fields_panel
    panel.tile_size.setValue(32)
    qtbot.waitUntil(lambda: "tile grid" in viewer.layers and viewer.layers["tile grid"].visible, timeout=3000)
    panel.tile_size.setValue(256)  # bigger than the field: no grid
    qtbot.waitUntil(lambda: "smaller than one tile" in panel.grid_note.text(), timeout=3000)
    assert not viewer.layers["tile grid"].visible
    panel.tile_size.setValue(64)
    qtbot.waitUntil(lambda: "2×2" in panel.grid_note.text(), timeout=3000)
    assert panel.show_grid.isChecked()
    qtbot.waitUntil(lambda: viewer.layers["tile grid"].visible, timeout=3000)
    assert (np.asarray(viewer.layers["tile grid"].data)[::64, 5] == 1).all()
