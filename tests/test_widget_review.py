"""Reviewing a classification in the dock, driven through its own controls on a small synthetic
field: the uncertainty layer, "Next uncertain" centring the camera on the most uncertain
unlabelled tile and a key press labelling it, the per-field readout equal to the exported CSV,
and the CSV's tile index equal to the classes layer's label value."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from qtpy.QtCore import Qt

from napari_cellclf._widget import _dialogs
from napari_cellclf._widget._grid import camera_of
from napari_cellclf.tiling import tile_labels_from_label_image
from widget_support import (
    add_field,
    click_when_enabled,
    open_widget,
    paint_tiles,
    synthetic_field,
    tile_truth,
    wait_idle,
)

TILE = 32
SIZE = 192


def _classify(make_napari_viewer, qtbot, runs: int = 1, moved: bool = False):
    """`moved`: a same-size field opened first, so the layout moves "puncta" beside it."""
    viewer = make_napari_viewer(show=True)
    truth = synthetic_field("puncta", SIZE, 1)
    if moved:
        add_field(viewer, "decoy", synthetic_field("puncta", SIZE, 2).image)
    add_field(viewer, "puncta", truth.image)
    dock, widget = open_widget(viewer)
    panel = widget.fields_panel
    qtbot.waitUntil(lambda: len(panel.fields) == 1 + moved, timeout=3000)
    panel.tile_size.setValue(TILE)
    panel.select_field("puncta")
    panel.paint_button.click()
    tiles = tile_truth(truth.labels, TILE)
    labels = viewer.layers["puncta labels"]
    for value in (1, 2):  # a few tiles of each class: most of the field stays unlabelled
        paint_tiles(labels, list(zip(*np.nonzero(tiles == value)))[:4], TILE, value)
    train = widget.train_panel
    train.epochs.setValue(4)
    train.runs.setValue(runs)
    train.architecture.setCurrentIndex(train.architecture.findData("fast"))
    click_when_enabled(qtbot, train.train_button)
    wait_idle(qtbot, widget, 120)
    widget.results_panel.classify_button.click()
    wait_idle(qtbot, widget, 60)
    return viewer, widget, dock


@pytest.fixture
def classified(make_napari_viewer, qtbot):
    return _classify(make_napari_viewer, qtbot)[:2]


def test_an_ensemble_shows_its_members_disagreement(make_napari_viewer, qtbot):
    viewer, widget, _ = _classify(make_napari_viewer, qtbot, runs=2)
    assert widget.session.trained.meta.n_members == 2
    layer = viewer.layers["puncta uncertainty"]
    assert layer.metadata["cellclf"]["method"] == "disagreement"
    scores = np.asarray(viewer.layers["puncta classes"].features["uncertainty"], float)
    assert 0 <= scores.min() and scores.max() <= 1 and scores.max() > 0


def _tile_centre(viewer, tile: int) -> tuple[float, float]:
    row, col = divmod(tile, SIZE // TILE)
    return row * TILE + (TILE - 1) / 2, col * TILE + (TILE - 1) / 2


def test_next_uncertain_centres_on_the_most_uncertain_unlabelled_tile_and_keys_label_it(classified, qtbot):
    viewer, widget = classified
    results = widget.results_panel
    classes = viewer.layers["puncta classes"]
    shown = viewer.layers["puncta uncertainty"]
    features = classes.features
    scores = np.asarray(features["uncertainty"], float)
    tiles = np.asarray(features["index"]) - 1
    # the uncertainty layer paints each tile's score over its pixels
    centres = np.asarray(shown.data)[TILE // 2 :: TILE, TILE // 2 :: TILE].ravel()
    np.testing.assert_allclose(centres[tiles], scores, atol=1e-3)
    assert 0 <= scores.min() and scores.max() <= 1

    def expected_next(visited):
        labelled = tile_labels_from_label_image(
            np.asarray(viewer.layers["puncta labels"].data),
            widget.session.predictions["/data/puncta.tif"][1].grid,
            0.5,
        )
        free = [(s, t) for s, t in zip(scores, tiles) if labelled[t] == 0 and t not in visited]
        best = max(s for s, _ in free)
        return min(t for s, t in free if s == best)

    first = expected_next(set())
    results.next_button.click()
    assert tuple(camera_of(viewer).center[-2:]) == pytest.approx(_tile_centre(viewer, first))
    assert viewer.layers.selection.active is classes
    assert f"tile {first + 1}" in results.review_note.text()

    # one key press (2 = the second class) labels that tile and asks the next one
    viewer.window._qt_viewer.canvas.native.setFocus()
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_2)
    labels = np.asarray(viewer.layers["puncta labels"].data)
    y, x = (int(v) for v in _tile_centre(viewer, first))
    assert labels[y - TILE // 2 + 1 : y + TILE // 2, x - TILE // 2 + 1 : x + TILE // 2].min() == 2
    second = expected_next({first})
    assert second != first
    assert tuple(camera_of(viewer).center[-2:]) == pytest.approx(_tile_centre(viewer, second))
    # N skips to the next one, also while the labels layer is selected for painting
    viewer.layers.selection.active = viewer.layers["puncta labels"]
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_N)
    third = expected_next({first, second})
    assert tuple(camera_of(viewer).center[-2:]) == pytest.approx(_tile_centre(viewer, third))


def _marker_extent(viewer):
    """(y0, x0, y1, x1) in world units of the "asked" rectangle (its corners, not pixel centres)."""
    layer = viewer.layers["asked"]
    assert len(layer.data) == 1 and layer.shape_type == ["rectangle"]
    corners = np.asarray(layer.data[0], float) * layer.scale + layer.translate
    return (*corners.min(0), *corners.max(0))


def test_the_asked_tile_is_marked_on_a_moved_field_and_the_mark_goes_with_the_dock(make_napari_viewer, qtbot):
    viewer, widget, dock = _classify(make_napari_viewer, qtbot, moved=True)
    classes = viewer.layers["puncta classes"]
    ty, tx = (float(v) for v in classes.translate)
    assert (ty, tx) != (0.0, 0.0)  # the layout moved puncta beside the decoy
    results = widget.results_panel
    results.next_button.click()
    asked = results.review.asked
    assert asked.kind == "tile"

    def tile_extent(tile):
        # the tile's pixels [y0, y0 + TILE) span world [y0 - 0.5, y0 + TILE - 0.5) (centres on integers)
        row, col = divmod(tile, SIZE // TILE)
        return (
            ty + row * TILE - 0.5,
            tx + col * TILE - 0.5,
            ty + (row + 1) * TILE - 0.5,
            tx + (col + 1) * TILE - 0.5,
        )

    assert _marker_extent(viewer) == pytest.approx(tile_extent(asked.item))
    marker = viewer.layers["asked"]
    assert viewer.layers[-1] is marker and not marker.editable
    assert viewer.layers.selection.active is classes  # the keys stay on the classes layer
    colours = {tuple(np.round(c, 3)) for c in marker.edge_color[:, :3]}
    assert colours.isdisjoint(tuple(np.round(to_rgb(c), 3)) for c in widget.session.class_colors)
    assert float(marker.face_color[0, 3]) == 0

    # a key answer moves the mark to the next tile
    first = asked.item
    viewer.window._qt_viewer.canvas.native.setFocus()
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_1)
    second = results.review.asked.item
    assert second != first and _marker_extent(viewer) == pytest.approx(tile_extent(second))
    # the marker selected by the user answers with the same keys
    viewer.layers.selection.active = marker
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_2)
    third = results.review.asked.item
    assert (
        (
            np.asarray(viewer.layers["puncta labels"].data).reshape(SIZE, SIZE)[
                (second // (SIZE // TILE)) * TILE + TILE // 2, (second % (SIZE // TILE)) * TILE + TILE // 2
            ]
        )
        == 2
    )
    assert _marker_extent(viewer) == pytest.approx(tile_extent(third))
    # a layer added later does not cover it
    viewer.add_image(np.zeros((8, 8)), name="later")
    assert viewer.layers[-1] is marker

    viewer.window.remove_dock_widget(dock)
    assert "asked" not in [ly.name for ly in viewer.layers]
    viewer.add_image(np.zeros((8, 8)), name="after close")  # no listener left to move anything
    assert viewer.layers[-1].name == "after close"


def test_readout_equals_csv_and_csv_index_is_the_layer_value(classified, monkeypatch, tmp_path):
    viewer, widget = classified
    results = widget.results_panel
    csv_path = tmp_path / "tiles.csv"
    monkeypatch.setattr(_dialogs, "ask_save_path", lambda *a, **k: str(csv_path))
    results.export_button.click()
    with open(csv_path, newline="") as handle:
        tiles = list(csv.DictReader(handle))
    with open(tmp_path / "tiles-fractions.csv", newline="") as handle:
        fractions = list(csv.DictReader(handle))
    table = results.readout
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert table.rowCount() == 1 and headers[:2] == ["field", "tiles"]
    assert table.item(0, 0).text() == "puncta" and int(table.item(0, 1).text()) == len(tiles)
    for row in fractions:
        cell = table.item(0, headers.index(row["class_name"])).text()
        mine = [t for t in tiles if t["class_name"] == row["class_name"]]
        share = len(mine) / len(tiles)
        assert float(row["share"]) == pytest.approx(share)
        expected = f"{share:.1%}"
        if mine:
            expected += f" ({float(row['mean_confidence']):.2f})"
            assert float(row["mean_confidence"]) == pytest.approx(
                np.mean([float(t["confidence"]) for t in mine]), abs=1e-5
            )
        assert cell == expected
    # the CSV's tile index is the value napari shows for that tile in the classes layer
    classes = np.asarray(viewer.layers["puncta classes"].data)
    for t in tiles[:: max(1, len(tiles) // 7)]:
        y, x = int(t["y"]) + TILE // 2, int(t["x"]) + TILE // 2
        assert int(classes[y, x]) == int(t["index"])


def test_attribution_is_named_outlines_the_classes_and_can_show_one_value_per_tile(classified, qtbot):
    viewer, widget = classified
    results = widget.results_panel
    classes, labels = viewer.layers["puncta classes"], viewer.layers["puncta labels"]
    assert classes.contour == 0 and labels.contour == 0
    results.target.setCurrentIndex(results.target.findData(1))  # the second class everywhere
    results.explain_button.click()
    wait_idle(qtbot, widget, 60)
    name = widget.session.class_names[1]
    layer = viewer.layers[f"puncta: {name} attribution"]
    assert layer.blending == "translucent" and layer.metadata["cellclf"]["target"] == name
    # zero evidence is transparent, both signs strongly coloured: readable over any image
    low, high = layer.contrast_limits
    assert low == -high and high > 0
    rgba = layer.colormap.map(np.array([0.0, 0.5, 1.0]))
    assert rgba[1][3] == pytest.approx(0.0, abs=1e-6) and min(rgba[0][3], rgba[2][3]) > 0.8
    assert rgba[0][2] > rgba[0][0] and rgba[2][0] > rgba[2][2]  # blue against, red for
    # while shown, the class fill and the painted labels are outlines only
    assert classes.contour > 0 and labels.contour > 0
    raw = np.asarray(layer.data).copy()

    results.display.setCurrentIndex(results.display.findData("tile mean"))
    per_tile = np.asarray(layer.data)
    block = per_tile[TILE : 2 * TILE, TILE : 2 * TILE]
    assert np.ptp(block) == 0
    assert block[0, 0] == pytest.approx(raw[TILE : 2 * TILE, TILE : 2 * TILE].mean(), rel=1e-4, abs=1e-7)
    results.display.setCurrentIndex(results.display.findData("smoothed"))
    assert np.abs(np.diff(np.asarray(layer.data), axis=1)).mean() < np.abs(np.diff(raw, axis=1)).mean()

    layer.visible = False  # hiding the explanation fills the classes again
    assert classes.contour == 0 and labels.contour == 0


def test_display_steps_stop_waiting_when_nobody_applies_them(monkeypatch):
    """A dock closed during Classify applies no step: the worker waits once, then sends none."""
    from napari_cellclf._widget import _result_layers
    from napari_cellclf.inference import FieldPrediction
    from napari_cellclf.tiling import make_grid

    monkeypatch.setattr(_result_layers, "ACK_TIMEOUT_S", 0.05)
    grid = make_grid((64, 64), 32, None, border="pad")
    prediction = FieldPrediction(grid, np.arange(4), np.full((4, 2), 0.5, np.float32), ["a", "b"])
    results = _result_layers.build_results("f", "f", prediction, ["#000000", "#ffffff"], {})
    unanswered: list = []
    assert len(list(_result_layers.display_steps(results, None, unanswered))) == 1
    assert len(list(_result_layers.display_steps(results, None, unanswered))) == 0  # next field
    assert results.method == "entropy" and np.allclose(results.scores, 1.0)


def test_next_uncertain_asks_about_cells_in_object_mode(make_napari_viewer, qtbot):
    """Object mode's "<field> cell classes" (instance ids; features: the per-object table, as
    _objects makes it): Next goes to the most uncertain unlabelled cell's centroid, a key paints
    the whole cell."""
    from napari_cellclf._widget._fields import derived_metadata
    from napari_cellclf._widget._review import ROLE_CELLS

    viewer = make_napari_viewer(show=True)
    truth = synthetic_field("puncta", SIZE, 1)
    add_field(viewer, "puncta", truth.image)
    dock, widget = open_widget(viewer)
    qtbot.waitUntil(lambda: len(widget.fields_panel.fields) == 1, timeout=3000)
    masks = np.zeros((SIZE, SIZE), np.uint16)
    masks[10:30, 10:30], masks[60:90, 100:130], masks[150:170, 20:40] = 3, 5, 9
    p_a = np.array([0.9, 0.55, 0.6])  # cell 5 is the least sure
    features = {
        "index": np.array([3, 5, 9]),
        "label": np.array([3, 5, 9]),
        "centroid_y": np.array([19.5, 74.5, 159.5]),
        "centroid_x": np.array([19.5, 114.5, 29.5]),
        "area": np.array([400, 900, 400]),
        "class_name": np.array(["Control", "Control", "Control"], dtype=object),
        "confidence": p_a,
        "p_Control": p_a,
        "p_Treated": 1 - p_a,
    }
    viewer.add_labels(
        masks,
        name="puncta cell classes",
        features=features,
        metadata=derived_metadata("/data/puncta.tif", ROLE_CELLS),
    )

    class CellPrediction:  # what object mode stores: a table per cell, no tile grid
        class_names = ["Control", "Treated"]
        unit = "cells"

        def table(self):
            return features

    widget.session.set_prediction("/data/puncta.tif", "puncta", CellPrediction())
    results = widget.results_panel
    results.next_button.click()
    assert tuple(camera_of(viewer).center[-2:]) == pytest.approx((74.5, 114.5))
    assert "cell 5" in results.review_note.text()
    # the mark encloses cell 5's pixels, rows 60..89 and columns 100..129
    assert _marker_extent(viewer) == pytest.approx((59.5, 99.5, 89.5, 129.5))
    results.review.answer(2)
    painted = np.asarray(viewer.layers["puncta labels"].data)
    assert (painted[masks == 5] == 2).all() and (painted[masks != 5] == 0).all()
    assert tuple(camera_of(viewer).center[-2:]) == pytest.approx((159.5, 29.5))  # then cell 9
    assert _marker_extent(viewer) == pytest.approx((149.5, 19.5, 169.5, 39.5))
    results.review.answer(1)  # cell 3 is the last one
    results.review.answer(1)
    assert results.review.asked is None and "asked" not in [ly.name for ly in viewer.layers]
