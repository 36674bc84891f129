"""Object mode in the dock: cell masks chosen per field, cells labelled by strokes, one tile per
cell trained and classified, the results layer's features are the CSV's rows (issue 12 item 1)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy.ndimage import find_objects

from napari_cellclf import synthetic
from napari_cellclf._sample_data import SEEDS
from napari_cellclf._widget import _dialogs
from napari_cellclf.objects import measure_objects, object_classes
from widget_support import PLUGIN, add_field, click_when_enabled, open_widget, wait_idle

LABEL_EVERY = 2  # the user labels every other cell; the rest are held out
TILE = 32


def _click_inside(layer, cells: np.ndarray, box, label: int, value: int, radius: int = 3) -> None:
    """A brush click (a small disc, kept inside the cell as a careful user's would be) at the
    cell's pixel nearest its centroid, through Labels.data_setitem, where napari's brush ends."""
    ys, xs = np.nonzero(cells[box] == label)
    ys, xs = ys + box[0].start, xs + box[1].start
    nearest = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    inside = (ys - ys[nearest]) ** 2 + (xs - xs[nearest]) ** 2 <= radius**2
    layer.data_setitem((ys[inside], xs[inside]), value)


@pytest.mark.slow
def test_object_mode_on_the_sample_fields_with_their_cell_masks(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    viewer = make_napari_viewer()
    for phenotype in SEEDS:
        viewer.open_sample(PLUGIN, phenotype)
    _, widget = open_widget(viewer)
    panel = widget.fields_panel
    panel.refresh_fields()
    assert sorted(f.name for f in panel.fields) == sorted(SEEDS)
    panel.tile_size.setValue(TILE)

    truth, labelled = {}, {}
    for fld in panel.fields:
        # Open Sample brings each field's cell masks (hidden): the user picks them per field;
        # the ground truth of classes is not offered as objects.
        cells = np.asarray(viewer.layers[f"{fld.name} cell masks"].data)
        classes = np.asarray(viewer.layers[f"{fld.name} ground truth"].data)
        assert np.array_equal(synthetic.make_field(fld.name, fld.shape, seed=SEEDS[fld.name]).cells, cells)
        combo = panel.objects_combo(fld.name)
        offered = [combo.itemText(i) for i in range(combo.count())]
        assert f"{fld.name} cell masks" in offered and f"{fld.name} ground truth" not in offered
        combo.setCurrentIndex(combo.findText(f"{fld.name} cell masks"))
        table, cell_class = object_classes(cells, classes, 2)
        truth[fld.name] = dict(zip(table.labels.tolist(), cell_class.tolist()))

        # Label every other cell with a click inside it; a click counts for the whole cell.
        panel.select_field(fld.name)
        panel.paint_button.click()
        painted = viewer.layers[f"{fld.name} labels"]
        chosen = table.labels[::LABEL_EVERY]
        boxes = find_objects(cells)
        for label in chosen.tolist():
            _click_inside(painted, cells, boxes[label - 1], label, truth[fld.name][label])
        labelled[fld.name] = set(chosen.tolist())

    by_name = {f.name: f for f in panel.fields}
    qtbot.waitUntil(
        lambda: all(
            sum(widget.session.counts.per_field.get(by_name[n].id, [])) == len(labelled[n]) for n in labelled
        ),
        timeout=10000,
    )

    train = widget.train_panel
    train.epochs.setValue(20)
    train.learning_rate.setValue(3e-3)
    train.architecture.setCurrentIndex(train.architecture.findData("fast"))
    train.device.setCurrentIndex(train.device.findData("cpu"))
    click_when_enabled(qtbot, train.train_button)
    wait_idle(qtbot, widget, 300)
    trained = widget.session.trained
    assert trained is not None and trained.meta.tile_size == TILE
    assert trained.meta.extra["objects"] == {"blank_background": False, "mask_channel": False}

    progress_texts: list[str] = []  # what the job bar said at each classify step
    widget.session.jobs.progress.connect(lambda *_: progress_texts.append(widget.job_bar.status.text()))
    widget.results_panel.classify_all_button.click()
    wait_idle(qtbot, widget, 120)
    # the counts say cells, never tiles: in the progress text, the readout and the Report tab
    assert progress_texts and all("cells" in t and "tiles" not in t for t in progress_texts)
    readout = widget.results_panel.readout
    assert readout.horizontalHeaderItem(1).text() == "cells"
    fractions = widget.report_tab.fractions
    assert all(fractions.item(r, 2).text().endswith(" cells") for r in range(fractions.rowCount()))

    right = total = 0
    features_by_field = {}
    colors = trained.meta.class_colors
    for name in SEEDS:
        layer = viewer.layers[f"{name} cell classes"]
        features = layer.features
        features_by_field[name] = features
        assert features["label"].tolist() == sorted(truth[name])  # one row per cell
        assert np.array_equal(np.asarray(layer.data), np.asarray(viewer.layers[f"{name} cell masks"].data))
        # each cell is drawn in its predicted class's colour
        for label, k in zip(features["label"][:20], features["class"][:20]):
            expected = np.array([int(colors[k - 1][i : i + 2], 16) / 255 for i in (1, 3, 5)])
            np.testing.assert_allclose(layer.colormap.map(np.array([label]))[0][:3], expected, atol=1e-3)
        for label, k in zip(features["label"], features["class"]):
            if int(label) not in labelled[name]:
                total += 1
                right += int(k == truth[name][int(label)])
    accuracy = right / total
    print(f"held-out cells right: {accuracy:.3f} of {total}")
    assert total > 500
    assert accuracy >= 0.90

    out = tmp_path / "cells.csv"
    monkeypatch.setattr(_dialogs, "ask_save_path", lambda *a, **k: str(out))
    widget.results_panel.export_button.click()
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for name, features in features_by_field.items():
        mine = [r for r in rows if r["source"] == name]
        assert len(mine) == len(features)
        for column in features.columns:
            if column == "index":
                continue
            values = [r[column] for r in mine]
            if features[column].dtype.kind in "iuf":
                np.testing.assert_allclose(
                    np.asarray(values, float), features[column].to_numpy(float), rtol=1e-5
                )
            else:
                assert values == [str(v) for v in features[column]]
        assert set(mine[0]) == {"source", *features.columns} - {"index"}
    with open(tmp_path / "cells-fractions.csv", newline="") as handle:
        fractions_rows = list(csv.DictReader(handle))
    assert {r["unit"] for r in fractions_rows} == {"cells"}
    for name, features in features_by_field.items():
        counted = sum(int(r["count"]) for r in fractions_rows if r["source"] == name)
        assert counted == len(features)
        shown = [readout.item(r, 0).text() for r in range(readout.rowCount())]
        assert readout.item(shown.index(name), 1).text() == str(len(features))
    centroids = measure_objects(np.asarray(viewer.layers["puncta cell masks"].data)).centroids
    np.testing.assert_allclose(
        features_by_field["puncta"][["centroid_y", "centroid_x"]].to_numpy(), centroids
    )


def test_a_cell_takes_its_majority_stroke_and_a_deleted_mask_layer_returns_to_tiles(
    make_napari_viewer, qtbot
):
    viewer = make_napari_viewer()
    fields = {}
    for i, (phenotype, seed) in enumerate((("puncta", 3), ("diffuse", 4))):
        field = synthetic.make_field(phenotype, shape=(128, 128), seed=seed, cell_radius=8)
        add_field(viewer, phenotype, field.image, translate=(0.0, i * 150.0))
        fields[phenotype] = field
    _, widget = open_widget(viewer)
    panel = widget.fields_panel
    panel.refresh_fields()
    panel.tile_size.setValue(16)
    by_name = {f.name: f for f in panel.fields}
    for name, field in fields.items():
        viewer.add_labels(field.cells, name=f"{name} masks", **by_name[name].layer_kwargs())
    panel.refresh_fields()
    combo = panel.objects_combo("puncta")
    # only Labels layers of the field's size that the widget did not make are offered
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "none (tiles)",
        "puncta masks",
        "diffuse masks",
    ]
    panel.select_field("puncta")
    qtbot.waitUntil(lambda: "tile grid" in viewer.layers and viewer.layers["tile grid"].visible, timeout=5000)
    combo = panel.objects_combo("puncta")  # the table was refilled meanwhile
    combo.setCurrentIndex(combo.findText("puncta masks"))
    # object mode: the tile grid is not what training cuts, so it goes, and the note says why
    qtbot.waitUntil(lambda: not viewer.layers["tile grid"].visible, timeout=5000)
    n_cells = len(measure_objects(fields["puncta"].cells))
    assert f"object mode, {n_cells} cells in 'puncta masks'" in panel.grid_note.text()
    panel.paint_button.click()
    painted = viewer.layers["puncta labels"]
    assert painted.brush_size == 16 // 4  # a dab inside one cell, not a tile-wide brush
    cells = fields["puncta"].cells
    first, second, third = measure_objects(cells).labels[:3]
    ys, xs = np.nonzero(cells == first)
    painted.data_setitem((ys[:5], xs[:5]), 1)  # a stroke mostly of class 2 across one cell
    painted.data_setitem((ys[5:15], xs[5:15]), 2)
    ys, xs = np.nonzero(cells == second)
    painted.data_setitem((ys[:1], xs[:1]), 1)  # a one-pixel click labels the whole cell
    ys, xs = np.nonzero(cells == third)
    painted.data_setitem((ys[:3], xs[:3]), 2)
    fid = by_name["puncta"].id
    qtbot.waitUntil(lambda: widget.session.counts.per_field.get(fid) == [1, 2], timeout=5000)
    # what counted is outlined per cell, in its class colour (value = class), not per tile
    qtbot.waitUntil(lambda: "puncta labelled cells" in viewer.layers, timeout=5000)
    outlines = np.asarray(viewer.layers["puncta labelled cells"].data)
    on = outlines > 0
    assert dict(zip(cells[on].tolist(), outlines[on].tolist())) == {first: 2, second: 1, third: 2}
    assert "puncta labelled tiles" not in viewer.layers

    panel.objects_box.blank_background.setChecked(True)
    combo = panel.objects_combo("diffuse")
    combo.setCurrentIndex(combo.findText("diffuse masks"))
    whole = panel.labels_combo("diffuse")
    whole.setCurrentIndex(whole.findText("whole image: Control"))  # every cell of it is Control
    n_diffuse = len(measure_objects(fields["diffuse"].cells))
    diffuse_id = by_name["diffuse"].id
    qtbot.waitUntil(lambda: widget.session.counts.per_field.get(diffuse_id) == [n_diffuse, 0], timeout=5000)
    train = widget.train_panel
    train.epochs.setValue(1)
    train.architecture.setCurrentIndex(train.architecture.findData("fast"))
    train.device.setCurrentIndex(train.device.findData("cpu"))
    click_when_enabled(qtbot, train.train_button)
    wait_idle(qtbot, widget, 120)
    assert widget.session.trained.meta.extra["objects"] == {"blank_background": True, "mask_channel": False}
    widget.results_panel.classify_button.click()
    wait_idle(qtbot, widget, 60)
    result = viewer.layers["puncta cell classes"]
    assert result.features["label"].tolist() == measure_objects(cells).labels.tolist()
    assert not result.editable

    viewer.layers.remove("puncta masks")
    panel.refresh_fields()
    assert panel.objects_combo("puncta").currentText() == "none (tiles)"
    # back to tiles: the two small strokes cover no half tile
    qtbot.waitUntil(lambda: widget.session.counts.per_field.get(fid) == [0, 0], timeout=5000)
    qtbot.waitUntil(lambda: "puncta labelled cells" not in viewer.layers, timeout=5000)
    qtbot.waitUntil(lambda: viewer.layers["tile grid"].visible, timeout=5000)  # the grid is back
    # classified per tile now: the cell results of before are hidden, not mixed with the tiles
    widget.results_panel.classify_button.click()
    wait_idle(qtbot, widget, 60)
    assert viewer.layers["puncta classes"].visible and not result.visible


def test_painting_reuses_the_mask_index_until_the_mask_changes(make_napari_viewer, qtbot, monkeypatch):
    """Each paint recounts and redraws the outlines from the mask's index, built once per mask
    version (the np.unique sort is most of a count): three paints build it once; the counts and
    outlines equal a fresh build's after each paint, after a new mask and after a mask edit."""
    from napari_cellclf import objects
    from napari_cellclf._widget import _objects

    builds = []

    def spy(masks):
        builds.append(1)
        return objects.index_objects(masks)

    monkeypatch.setattr(_objects, "index_objects", spy)
    viewer = make_napari_viewer()
    field = synthetic.make_field("puncta", shape=(128, 128), seed=3, cell_radius=8)
    add_field(viewer, "puncta", field.image)
    _, widget = open_widget(viewer)
    panel = widget.fields_panel
    panel.refresh_fields()
    panel.tile_size.setValue(16)
    fld = panel.fields[0]
    masks_layer = viewer.add_labels(field.cells.copy(), name="puncta masks", **fld.layer_kwargs())
    panel.refresh_fields()
    combo = panel.objects_combo("puncta")
    combo.setCurrentIndex(combo.findText("puncta masks"))
    panel.select_field("puncta")
    panel.paint_button.click()
    painted = viewer.layers["puncta labels"]

    def fresh():
        index = objects.index_objects(np.asarray(masks_layer.data))
        labels = np.asarray(painted.data)
        return index.counts(labels, 2), _objects.outline_classes(index, labels, 2)

    def shown_equal_fresh() -> bool:
        counts, outlines = fresh()
        layer = viewer.layers["puncta labelled cells"] if "puncta labelled cells" in viewer.layers else None
        return (
            widget.session.counts.per_field.get(fld.id) == counts
            and layer is not None
            and np.array_equal(np.asarray(layer.data), outlines)
        )

    def paint(label: int, value: int) -> None:
        ys, xs = np.nonzero(np.asarray(masks_layer.data) == label)
        painted.data_setitem((ys[:4], xs[:4]), value)
        qtbot.waitUntil(shown_equal_fresh, timeout=5000)

    ids = objects.measure_objects(field.cells).labels
    builds.clear()
    for n, label in enumerate(ids[:3].tolist()):
        paint(label, 1 + n % 2)
    assert len(builds) == 1
    assert sum(widget.session.counts.per_field[fld.id]) == 3

    # a new mask array (cells 1 and 2 merged into one): rebuilt once, counts follow
    merged = np.asarray(masks_layer.data).copy()
    merged[merged == ids[1]] = ids[0]
    masks_layer.data = merged
    paint(ids[3], 2)
    assert len(builds) == 2
    assert sum(widget.session.counts.per_field[fld.id]) == 3  # ids 0+1 are one cell now, plus 2, 3

    # a mask edited in place (napari's brush on the mask layer): the edit drops the index
    ys, xs = np.nonzero(merged == ids[2])
    masks_layer.data_setitem((ys, xs), 0)  # cell 2 erased
    paint(ids[4], 1)
    assert len(builds) == 3
    assert sum(widget.session.counts.per_field[fld.id]) == 3  # cell 2 is gone, 4 is new
