"""The trust views in the dock, driven through its own controls on small synthetic fields: the
Report tab shows the kept model's validation metrics (evaluation.validation_metrics), the
classical-features comparison sits in the Train panel, a model trained on noise labels carries
its 'not better than chance' verdict beside Classify and says so each time it classifies, class
fractions per field match the exported CSV, and closing the dock leaves no traceback."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_cellclf._widget import _controller, _dialogs
from napari_cellclf.evaluation import validation_metrics
from napari_cellclf.gallery import GalleryTile, gallery_tiles
from widget_support import (
    Notifications,
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
FIELDS = {"puncta": ("puncta", 1, 2), "diffuse": ("diffuse", 2, 1)}


def _capture_training(monkeypatch) -> dict:
    """Keep what the training worker hands the engine, to recompute its numbers here."""
    seen: dict = {}
    real = _controller.training_extras

    def spy(result, dataset):
        seen["result"], seen["dataset"] = result, dataset
        return real(result, dataset)

    monkeypatch.setattr(_controller, "training_extras", spy)
    return seen


def _train(qtbot, widget, epochs: int) -> None:
    train = widget.train_panel
    train.epochs.setValue(epochs)
    train.learning_rate.setValue(3e-3)
    train.architecture.setCurrentIndex(train.architecture.findData("fast"))
    click_when_enabled(qtbot, train.train_button)
    wait_idle(qtbot, widget, 120)
    assert widget.session.trained is not None


def _two_painted_fields(make_napari_viewer, qtbot):
    """Both FIELDS side by side in a fresh viewer, every tile of each painted with its class
    through the Fields panel's Paint button; returns (viewer, widget, truths)."""
    viewer = make_napari_viewer()
    truths = {}
    for i, (name, (phenotype, seed, _)) in enumerate(FIELDS.items()):
        truths[name] = synthetic_field(phenotype, SIZE, seed)
        add_field(viewer, name, truths[name].image, translate=(0.0, i * (SIZE + 16)))
    dock, widget = open_widget(viewer)
    panel = widget.fields_panel
    qtbot.waitUntil(lambda: len(panel.fields) == 2, timeout=3000)
    panel.tile_size.setValue(TILE)
    for name, (_, _, value) in FIELDS.items():
        truth = tile_truth(truths[name].labels, TILE)
        panel.select_field(name)
        panel.paint_button.click()
        paint_tiles(viewer.layers[f"{name} labels"], list(zip(*np.nonzero(truth == value))), TILE, value)
    return viewer, widget, truths


def test_report_tab_fractions_and_baseline_after_training(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    viewer, widget, _ = _two_painted_fields(make_napari_viewer, qtbot)
    seen = _capture_training(monkeypatch)
    _train(qtbot, widget, 6)

    # the Report tab shows exactly the engine's metrics of the kept model on its validation split
    expected = validation_metrics(seen["result"], seen["dataset"]).metrics.to_dict()
    report = widget.report_tab.panel
    assert report.metrics is not None
    assert report.metrics["confusion"] == expected["confusion"]
    for key in ("accuracy", "balanced_accuracy", "chance", "n"):
        assert report.metrics[key] == pytest.approx(expected[key])
    assert f"balanced accuracy {expected['balanced_accuracy']:.1%}" in report.summary.text()
    assert report.verdict.isVisibleTo(widget.report_tab) and report.verdict.text()
    assert widget.session.trained.meta.extra["evaluation"]["confusion"] == expected["confusion"]
    # CNN vs classical features on the same split, in the Train panel
    baseline = widget.train_panel.baseline.text()
    assert widget.session.trained.meta.extra.get("baseline")
    assert "classical" in baseline or "No comparison" in baseline
    # ... once: the training log does not repeat the panel's comparison line
    sentence = widget.session.trained.meta.extra["baseline"].get("sentence")
    if sentence:
        assert sentence in baseline and sentence not in widget.train_panel.log.text()

    # classify both fields: per-field class fractions in the Report tab equal the exported CSV's
    widget.results_panel.classify_all_button.click()
    wait_idle(qtbot, widget, 60)
    csv_path = tmp_path / "tiles.csv"
    monkeypatch.setattr(_dialogs, "ask_save_path", lambda *a, **k: str(csv_path))
    widget.results_panel.export_button.click()
    with open(csv_path, newline="") as handle:
        tiles = list(csv.DictReader(handle))
    with open(tmp_path / "tiles-fractions.csv", newline="") as handle:
        exported = list(csv.DictReader(handle))
    table = widget.report_tab.fractions
    shown = [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(table.rowCount())]
    assert len(shown) == len(exported) == 2 * 2
    for cells, row in zip(shown, exported):
        of_field = [t for t in tiles if t["source"] == row["source"]]
        mine = [t for t in of_field if t["class_name"] == row["class_name"]]
        share = len(mine) / len(of_field)
        assert int(row["count"]) == len(mine) and float(row["share"]) == pytest.approx(share)
        assert row["unit"] == "tiles"
        assert cells[:4] == [row["source"], row["class_name"], f"{len(mine)} tiles", f"{share:.1%}"]
        if mine:
            confidence = np.mean([float(t["confidence"]) for t in mine])
            assert float(row["mean_confidence"]) == pytest.approx(confidence, abs=1e-5)


def test_noise_labels_warn_beside_classify_and_close_cleanly(make_napari_viewer, qtbot, capfd):
    viewer = make_napari_viewer()
    field = synthetic_field("puncta", SIZE, 3)
    add_field(viewer, "noise", field.image)
    dock, widget = open_widget(viewer)
    panel = widget.fields_panel
    qtbot.waitUntil(lambda: len(panel.fields) == 1, timeout=3000)
    panel.tile_size.setValue(TILE)
    panel.select_field("noise")
    panel.paint_button.click()
    # every tile of one field, labelled by coin flips: nothing to learn
    rng = np.random.default_rng(0)
    n = SIZE // TILE
    for r in range(n):
        for c in range(n):
            paint_tiles(viewer.layers["noise labels"], [(r, c)], TILE, int(rng.integers(1, 3)))
    _train(qtbot, widget, 4)

    results = widget.results_panel
    verdict = widget.session.trained.meta.extra["evaluation"]["verdict"]
    assert verdict and "chance" in verdict
    assert results.verdict.isVisibleTo(results) and verdict in results.verdict.text()
    assert widget.report_tab.panel.verdict.text() == verdict

    notes = Notifications()
    try:
        for _ in range(2):
            results.classify_button.click()
            wait_idle(qtbot, widget, 60)
        qtbot.waitUntil(lambda: sum(verdict in m for _, m in notes.messages) == 2, timeout=3000)
    finally:
        notes.close()

    # closing the dock: the session lives on, no view of the closed dock listens to it
    session = widget.session
    assert len(session.model_changed) > 0
    viewer.window.remove_dock_widget(dock)
    assert (len(session.model_changed), len(session.predictions_changed)) == (0, 0)
    session.set_model(session.trained)
    session.predictions_changed.emit("noise")
    qtbot.wait(50)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "has been deleted" not in captured.err


def test_gallery_goes_to_and_relabels_tiles_and_shows_attribution_checks(
    make_napari_viewer, qtbot, monkeypatch
):
    viewer, widget, _ = _two_painted_fields(make_napari_viewer, qtbot)
    seen = _capture_training(monkeypatch)
    _train(qtbot, widget, 4)
    meta = widget.session.trained.meta

    # attribution checks of the kept model on its validation tiles, with their warnings
    checks = meta.extra["evaluation"]["attribution"]
    assert checks["n_tiles"] == meta.extra["evaluation"]["n"] > 0
    text = widget.report_tab.panel.attribution.text()
    assert "not computed" not in text
    assert f"{checks['randomisation_similarity']:.2f} (gradient x input)" in text
    shown = widget.report_tab.panel.attribution_warnings
    assert shown.isVisibleTo(widget.report_tab) == bool(checks["warnings"])
    assert all(w in shown.text() for w in checks["warnings"])

    # the gallery is the engine's (the same function draws cellclf report's gallery.png)
    evaluation = validation_metrics(seen["result"], seen["dataset"])
    expected = gallery_tiles(
        evaluation.dataset, evaluation.truth, evaluation.probabilities, evaluation.metrics.class_names
    )
    gallery = widget.report_tab.gallery
    stored = [GalleryTile.from_dict(d) for d in meta.extra["gallery"]]
    assert stored == gallery.tiles

    def where(tiles):  # the recomputed probabilities may differ in the last float32 digit
        return [(t.index, t.source, t.origin, t.true, t.predicted, t.correct) for t in tiles]

    assert where(stored) == where(expected)
    assert [t.confidence for t in stored] == pytest.approx([t.confidence for t in expected], abs=1e-5)
    assert gallery.list.count() == len(expected) > 0
    for k, tile in enumerate(expected):
        item = gallery.list.item(k)
        assert item.text().startswith(f"true {tile.true}\npred {tile.predicted}")
        assert gallery.thumbnails[k].shape == (TILE, TILE, 3)  # cut from its open field
        # each tile is a painted one: its label at its centre is its true class
        y, x = (int(round(v)) for v in tile.centre)
        painted = viewer.layers[f"{tile.source} labels"].data[y, x]
        assert widget.session.class_names[painted - 1] == tile.true

    # clicking a tile (of the shifted field when it has one) centres the camera on it
    k = next((i for i, t in enumerate(expected) if t.source == "diffuse"), 0)
    tile = expected[k]
    gallery.list.setCurrentRow(k)  # what a click on the tile (or the arrow keys) does
    image = viewer.layers[f"{tile.source} [nuclei]"]
    centre = image.data_to_world(tile.centre)
    assert np.allclose(viewer.camera.center[-2:], centre[-2:])
    across = min(viewer.canvas.size) / viewer.camera.zoom  # world pixels across the view
    assert TILE < across < SIZE

    # relabelling paints that tile on the labels layer and moves one tile between the classes
    layer = viewer.layers[f"{tile.source} labels"]
    old = widget.session.class_names.index(tile.true)
    new = 1 - old
    qtbot.waitUntil(lambda: widget.session.counts is not None, timeout=3000)
    before = list(widget.session.counts.per_class)
    gallery.relabel_class.setCurrentIndex(new)
    gallery.relabel_button.click()
    y0, x0 = tile.origin
    assert (layer.data[y0 : y0 + TILE, x0 : x0 + TILE] == new + 1).all()
    after = list(before)
    after[old] -= 1
    after[new] += 1
    qtbot.waitUntil(lambda: list(widget.session.counts.per_class) == after, timeout=3000)
    assert f"now {widget.session.class_names[new]}" in gallery.list.item(k).text()
