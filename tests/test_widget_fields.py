"""Widget: fields that never blend, and a tile grid that stays right at any zoom."""

from __future__ import annotations

import numpy as np
import pytest

from widget_support import add_field, click_when_enabled, open_widget, paint_tiles, wait_idle


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


def _world_box(layer) -> tuple[np.ndarray, np.ndarray]:
    extent = np.asarray(layer.extent.world)[:, -2:]
    return extent[0], extent[1]


def _disjoint(a, b) -> bool:
    (a0, a1), (b0, b1) = a, b
    return bool((a1 <= b0).any() or (b1 <= a0).any())


def test_two_sample_fields_opened_from_the_menu_never_overlap(make_napari_viewer, qtbot):
    """File > Open Sample twice: napari puts both 1024 px fields at the origin; the widget moves the
    second, with its ground truth and cell masks, beside the first, and its labels layer follows."""
    viewer = make_napari_viewer()
    _, widget = open_widget(viewer)
    viewer.open_sample("napari-cellclf", "puncta")
    viewer.open_sample("napari-cellclf", "diffuse")
    panel = widget.fields_panel
    qtbot.waitUntil(lambda: len(panel.fields) == 2, timeout=5000)
    groups = {
        name: [ly for ly in viewer.layers if ly.name.startswith(name)] for name in ("puncta", "diffuse")
    }
    assert all(len(g) == 4 for g in groups.values())  # two channels, the ground truth, the cell masks
    for a in groups["puncta"]:
        for b in groups["diffuse"]:
            assert _disjoint(_world_box(a), _world_box(b)), (a.name, b.name)
    # within a field the channels still sit on one another (composited per field)
    boxes = {tuple(np.r_[_world_box(ly)]) for ly in groups["diffuse"]}
    assert len(boxes) == 1
    panel.select_field("diffuse")
    panel.paint_button.click()
    labels = viewer.layers["diffuse labels"]
    np.testing.assert_allclose(_world_box(labels), _world_box(groups["diffuse"][0]))
    qtbot.waitUntil(
        lambda: (
            "tile grid" in viewer.layers
            and np.allclose(viewer.layers["tile grid"].translate, labels.translate)
        ),
        timeout=3000,
    )


def test_a_field_dropped_on_another_is_moved_beside_it(make_napari_viewer, qtbot, tmp_path):
    import tifffile

    for name in ("xy_c01_long_plate_name_A01", "xy_c01_long_plate_name_A02"):
        tifffile.imwrite(tmp_path / f"{name}.tif", np.zeros((2, 64, 96), np.uint16), metadata={"axes": "CYX"})
    viewer = make_napari_viewer()
    _, widget = open_widget(viewer)
    for name in ("xy_c01_long_plate_name_A01", "xy_c01_long_plate_name_A02"):
        viewer.open(str(tmp_path / f"{name}.tif"), plugin="napari-cellclf")
    panel = widget.fields_panel
    qtbot.waitUntil(lambda: len(panel.fields) == 2, timeout=5000)
    first, second = panel.fields
    assert _disjoint(_world_box(first.layers[0]), _world_box(second.layers[0]))
    assert first.translate == (0.0, 0.0)
    # names of one plate differ at the end: elided in the middle, the whole path in the tooltip
    from qtpy.QtCore import Qt

    assert panel.table.textElideMode() == Qt.TextElideMode.ElideMiddle
    assert panel.table.item(1, 0).toolTip().startswith(str(tmp_path / "xy_c01_long_plate_name_A02"))


def test_labelled_tile_overlay_is_what_training_receives(make_napari_viewer, qtbot, monkeypatch):
    """Outlines on exactly the tiles the training got (recorded at the call of training.train),
    white rings on the ones its split held out, and hover text without selecting any layer."""
    from napari_cellclf import data
    from napari_cellclf._widget import _controller

    received = []

    def recording_train(dataset, config, **kwargs):
        received.append((dataset, config))
        return (yield from real_train(dataset, config, **kwargs))

    real_train = _controller.train
    monkeypatch.setattr(_controller, "train", recording_train)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    add_field(viewer, "A01", rng.normal(100, 10, (2, 128, 192)).astype(np.float32))
    _, widget = open_widget(viewer)
    panel = widget.fields_panel
    panel.tile_size.setValue(32)
    panel.paint_button.click()
    labels = viewer.layers["A01 labels"]
    paint_tiles(labels, [(0, c) for c in range(6)], 32, 1)
    paint_tiles(labels, [(2, c) for c in range(6)], 32, 2)
    labels.data_setitem(tuple(np.mgrid[96:108, 0:32].reshape(2, -1)), 2)  # 3/8 of a tile: not counted
    labels.data_setitem(tuple(np.mgrid[96:116, 32:64].reshape(2, -1)), 1)  # 5/8: counted
    qtbot.waitUntil(lambda: "A01 labelled tiles" in viewer.layers, timeout=5000)
    overlay = viewer.layers["A01 labelled tiles"]
    qtbot.waitUntil(lambda: len(overlay.metadata["cellclf"]["tiles"]["tile"]) == 13, timeout=3000)
    outlines = np.asarray(overlay.data)
    assert outlines[0, 16] == 1 and outlines[16, 16] == 0  # outlines in the class value, not fills
    assert outlines[64, 16] == 2 and outlines[96, 48] == 1 and outlines[96, 16] == 0

    train = widget.train_panel
    train.epochs.setValue(2)
    train.architecture.setCurrentIndex(train.architecture.findData("fast"))
    click_when_enabled(qtbot, train.train_button)
    wait_idle(qtbot, widget, 120)
    ((dataset, config),) = received
    got = {(int(r), int(c), dataset.class_names[k]) for (r, c), k in zip(dataset.positions, dataset.labels)}
    tiles = overlay.metadata["cellclf"]["tiles"]
    shown = {(int(r), int(c), str(k)) for r, c, k in zip(tiles["row"], tiles["col"], tiles["class"])}
    assert shown == got and len(got) == 13
    _, val_idx = data.split_train_val(dataset, config.val_fraction, seed=config.seed)
    held_out = {tuple(int(v) for v in dataset.positions[i]) for i in val_idx}
    assert held_out
    qtbot.waitUntil(lambda: "A01 validation tiles" in viewer.layers, timeout=3000)
    rings = np.asarray(viewer.layers["A01 validation tiles"].data)
    assert {(int(y) // 32, int(x) // 32) for y, x in rings} == held_out
    qtbot.waitUntil(
        lambda: set(overlay.metadata["cellclf"]["tiles"]["split"]) == {"train", "validation"}, timeout=3000
    )

    # classified: the predicted fill is added later, yet the outlines stay above it
    widget.results_panel.classify_all_button.click()
    wait_idle(qtbot, widget, 60)
    qtbot.waitUntil(lambda: "A01 classes" in viewer.layers, timeout=5000)
    layers = viewer.layers
    qtbot.waitUntil(lambda: layers.index(overlay) > layers.index(layers["A01 classes"]), timeout=3000)
    # hover over a Treated tile while the image layer (not ours) is selected
    viewer.layers.selection.active = viewer.layers["A01 [nuclei]"]
    viewer.cursor.position = (2 * 32 + 16, 3 * 32 + 16)
    assert "labelled Treated" in str(viewer.status) and "predicted" in str(viewer.status)
    viewer.cursor.position = (3 * 32 + 16, 16)
    assert "not labelled" in str(viewer.status)


def test_one_brush_click_labels_one_tile(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_field(viewer, "A01", np.zeros((2, 128, 128), np.float32))
    _, widget = open_widget(viewer)
    panel = widget.fields_panel
    panel.tile_size.setValue(32)
    panel.paint_button.click()
    labels = viewer.layers["A01 labels"]
    assert labels.brush_size == 32
    labels.paint((48, 80), 2)  # what a click of the brush does, at the centre of tile (1, 2)
    table = widget.classes_panel.table
    qtbot.waitUntil(lambda: table.item(1, 2).text() == "1", timeout=5000)
    qtbot.waitUntil(lambda: "A01 labelled tiles" in viewer.layers, timeout=5000)
    tiles = viewer.layers["A01 labelled tiles"].metadata["cellclf"]["tiles"]
    assert list(zip(tiles["row"], tiles["col"], tiles["class"])) == [(1, 2, "Treated")]


def test_a_stack_is_listed_with_its_reason_and_one_plane_becomes_a_field(make_napari_viewer, qtbot, tmp_path):
    import tifffile

    stack = np.stack([np.full((64, 64), 10 * (z + 1), np.uint16) for z in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    viewer = make_napari_viewer()
    _, widget = open_widget(viewer)
    viewer.open(str(tmp_path / "stack.tif"), plugin="napari-cellclf")
    panel = widget.fields_panel
    qtbot.waitUntil(lambda: panel.table.rowCount() == 1, timeout=5000)
    assert panel.fields == [] and "3-D stack (Z 3)" in panel.table.item(0, 0).toolTip()
    assert "Z 3" in panel.table.item(0, 1).text()
    viewer.dims.set_current_step(0, 2)
    panel.table.cellWidget(0, 2).click()  # "Use plane"
    qtbot.waitUntil(lambda: len(panel.fields) == 1, timeout=5000)
    (fld,) = panel.fields
    assert fld.name == "stack Z=2" and fld.shape == (64, 64)
    np.testing.assert_array_equal(fld.stack()[0], stack[2])
    # a stack from another reader (no axes known) is listed too, and gives a named plane
    viewer.add_image(np.arange(2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16), name="other")
    qtbot.waitUntil(lambda: panel.table.rowCount() == 3, timeout=5000)
    assert "2 planes along axis 0" in panel.table.item(2, 0).toolTip()
    viewer.dims.set_current_step(0, 1)
    panel.table.cellWidget(2, 2).click()
    qtbot.waitUntil(lambda: "other plane=1" in [f.name for f in panel.fields], timeout=5000)


def test_one_file_per_channel_is_grouped_into_one_field(make_napari_viewer, qtbot, tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    planes = {c: rng.integers(0, 4000, (48, 64), dtype=np.uint16) for c in "DFR"}
    for c, plane in planes.items():
        tifffile.imwrite(tmp_path / f"A01_{c}.tif", plane)
    tifffile.imwrite(tmp_path / "A02_D.tif", planes["D"])  # a lone channel: left alone
    viewer = make_napari_viewer()
    _, widget = open_widget(viewer)
    for name in ("A01_R", "A01_D", "A02_D", "A01_F"):
        viewer.open(str(tmp_path / f"{name}.tif"), plugin="napari-cellclf")
    panel = widget.fields_panel
    qtbot.waitUntil(lambda: len(panel.fields) == 4, timeout=5000)
    assert panel.group_button.isVisibleTo(panel)
    panel.group_button.click()
    qtbot.waitUntil(lambda: len(panel.fields) == 2, timeout=5000)
    merged = next(f for f in panel.fields if f.name == "A01")
    assert merged.channel_names == ["D", "F", "R"]
    np.testing.assert_array_equal(merged.stack(), np.stack([planes[c] for c in "DFR"]).astype(np.float32))
    assert len({tuple(ly.translate) for ly in merged.layers}) == 1
    others = [ly for ly in viewer.layers if ly not in merged.layers]
    for a in merged.layers:
        for b in others:
            assert _disjoint(_world_box(a), _world_box(b))


def test_labelled_tile_outlines_stay_fast_on_a_2048_field(make_napari_viewer, qtbot):
    """napari's Labels contour (grey erosion per refresh) took 4.5 s for this overlay under load;
    the outlines drawn from the grid take 0.3 s."""
    import time

    viewer = make_napari_viewer()
    add_field(viewer, "big", np.zeros((1, 2048, 2048), np.float32), channel_names=("dapi",))
    _, widget = open_widget(viewer)
    panel = widget.fields_panel
    panel.tile_size.setValue(32)
    panel.paint_button.click()
    paint_tiles(
        viewer.layers["big labels"], [(r, c) for r in range(0, 64, 4) for c in range(0, 64, 4)], 32, 1
    )
    qtbot.waitUntil(lambda: "big labelled tiles" in viewer.layers, timeout=10000)
    paint_tiles(viewer.layers["big labels"], [(1, 1)], 32, 2)
    start = time.perf_counter()
    panel.labelled.refresh()
    elapsed = time.perf_counter() - start
    assert viewer.layers["big labelled tiles"].data[32, 40] == 2
    assert elapsed < 1.5, f"labelled-tile overlay took {elapsed:.2f} s"


def test_arrange_moves_only_overlapping_fields_into_free_slots():
    from napari_cellclf._widget._fields import Field
    from napari_cellclf._widget._layout import arrange, field_box, overlaps

    def fld(i, shape=(100, 100), translate=(0.0, 0.0), scale=(1.0, 1.0)):
        return Field(f"f{i}", f"f{i}", [], shape, scale, translate)

    fields = [fld(0), fld(1), fld(2, translate=(500.0, 500.0)), fld(3, shape=(50, 200), scale=(2.0, 0.5))]
    moves = arrange(fields)
    assert set(moves) == {"f1", "f3"}  # the first stays; the one already apart stays
    for f in fields:
        if f.id in moves:
            f.translate = moves[f.id]
    boxes = [field_box(f) for f in fields]
    assert not any(overlaps(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert arrange(fields) == {}  # laid out: nothing moves again
