"""Check before a job (issue 12 item 6): Train, Classify and Explain are off, with the reason on the
button and in the dock, when the job would be refused; Classify all classifies what it can and
names what it skipped; a loaded model says what it changed; settings that differ from the model's
are shown."""

from __future__ import annotations

from qtpy.QtCore import Qt

from napari_cellclf._widget import _dialogs
from widget_support import (
    Notifications,
    add_field,
    click_when_enabled,
    open_widget,
    paint_tiles,
    synthetic_field,
    wait_idle,
)

TILE = 32


def _fast(train, epochs=2):
    train.epochs.setValue(epochs)
    train.architecture.setCurrentIndex(train.architecture.findData("fast"))


def _small_model(tmp_path, tile_size=16, channels=("nuclei", "protein"), pixel_size=None):
    from napari_cellclf.model import build_model
    from napari_cellclf.modelfile import ModelMeta, default_class_colors, save_model

    meta = ModelMeta(
        class_names=["a", "b"],
        class_colors=default_class_colors(2),
        channel_names=list(channels),
        tile_size=tile_size,
        architecture="fast",
        normalization={"mode": "dataset", "low": [0.0] * len(channels), "high": [1.0] * len(channels)},
        pixel_size=pixel_size,
    )
    return save_model(tmp_path / "m.safetensors", build_model("fast", len(channels), 2, tile_size), meta)


def test_mixed_channel_counts_turn_train_off_with_a_clear_reason(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_field(viewer, "two", synthetic_field("puncta", 128, 1).image)
    add_field(viewer, "gray", synthetic_field("diffuse", 128, 2).image[:1], ("gray",), translate=(0, 150))
    _, widget = open_widget(viewer)
    fields, train = widget.fields_panel, widget.train_panel
    fields.refresh_fields()
    fields.tile_size.setValue(TILE)
    fields.select_field("two")
    fields.paint_button.click()
    paint_tiles(viewer.layers["two labels"], [(r, c) for r in range(2) for c in range(4)], TILE, 1)
    combo = fields.labels_combo("gray")
    combo.setCurrentIndex(combo.findText("whole image: Treated"))

    # was: Train enabled, then "Training failed: 2 channel names for 1 channels"
    qtbot.waitUntil(lambda: "channel" in train.warnings.text(), timeout=3000)
    assert not train.train_button.isEnabled()
    reason = train.train_button.toolTip()
    assert "'gray' has 1 channel (gray)" in reason and "'two' has 2 channels" in reason
    assert "channel names for" not in reason and reason.split(": ", 1)[1] in train.warnings.text()

    # one channel both fields have: Train comes on and trains
    fields.channel_list.item(1).setCheckState(Qt.CheckState.Unchecked)
    qtbot.waitUntil(train.train_button.isEnabled, timeout=3000)
    _fast(train)
    click_when_enabled(qtbot, train.train_button)
    wait_idle(qtbot, widget, 60)
    assert widget.session.trained is not None and widget.session.trained.meta.channel_names == ["nuclei"]


def test_classify_all_skips_fields_the_model_cannot_read(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    viewer = make_napari_viewer()
    add_field(viewer, "two", synthetic_field("puncta", 64, 1).image)
    add_field(viewer, "gray", synthetic_field("diffuse", 64, 2).image[:1], ("gray",), translate=(0, 80))
    _, widget = open_widget(viewer)
    widget.fields_panel.refresh_fields()
    results = widget.results_panel
    for button in (results.classify_button, results.classify_all_button, results.explain_button):
        assert not button.isEnabled() and "No model yet" in button.toolTip()
    assert "No model yet" in results.check_note.text()

    monkeypatch.setattr(_dialogs, "ask_open_path", lambda *a, **k: str(_small_model(tmp_path)))
    results.load_button.click()
    widget.fields_panel.select_field("gray")
    qtbot.waitUntil(lambda: not results.classify_button.isEnabled(), timeout=3000)
    assert "'gray'" in results.classify_button.toolTip()
    assert "'gray'" in results.explain_button.toolTip()
    assert results.classify_all_button.isEnabled()
    assert "Skipped when classifying all fields: field 'gray'" in results.check_note.text()

    notes = Notifications()
    try:
        results.classify_all_button.click()
        wait_idle(qtbot, widget, 60)
    finally:
        notes.close()
    names = [layer.name for layer in viewer.layers]
    assert "two classes" in names and "gray classes" not in names
    assert any("skipped 1" in m and "'gray'" in m for m in notes.warnings())


def test_loading_a_model_says_what_it_changed_and_differences_stay_shown(
    make_napari_viewer, qtbot, monkeypatch, tmp_path
):
    viewer = make_napari_viewer()
    add_field(viewer, "two", synthetic_field("puncta", 64, 1).image)
    _, widget = open_widget(viewer)
    widget.fields_panel.refresh_fields()
    widget.fields_panel.tile_size.setValue(TILE)
    monkeypatch.setattr(_dialogs, "ask_open_path", lambda *a, **k: str(_small_model(tmp_path, 16)))
    notes = Notifications()
    try:
        widget.results_panel.load_button.click()
    finally:
        notes.close()
    said = " ".join(m for _, m in notes.messages)
    assert "tile size 32 -> 16 px" in said and "classes Control, Treated -> a, b" in said
    assert "Changed by the model: tile size 32 -> 16 px" in widget.train_panel.log.text()
    assert widget.fields_panel.tile_size.value() == 16

    # a tile size set after loading is shown as not the model's, never silently ignored
    widget.fields_panel.tile_size.setValue(24)
    note = widget.results_panel.check_note
    qtbot.waitUntil(lambda: "The model cuts 16 px tiles" in note.text(), timeout=3000)
    assert "24 px" in note.text() and not note.isHidden()


def test_a_field_at_another_pixel_size_than_the_models_is_warned_about(
    make_napari_viewer, qtbot, monkeypatch, tmp_path
):
    """The CLI's rule (pixelsize.pixel_size_warning, more than 1.25x apart) under Classify."""
    viewer = make_napari_viewer()
    image = synthetic_field("puncta", 64, 1).image
    add_field(viewer, "same", image, scale=(0.325, 0.325))
    for layer in add_field(viewer, "fine", image, scale=(0.1, 0.1), translate=(0, 40)):
        layer.metadata["cellclf"].update(pixel_size=[0.1, 0.1], unit="µm")
    _, widget = open_widget(viewer)
    widget.fields_panel.refresh_fields()
    model = _small_model(tmp_path, pixel_size={"y": 0.325, "x": 0.325, "unit": "µm"})
    monkeypatch.setattr(_dialogs, "ask_open_path", lambda *a, **k: str(model))
    results = widget.results_panel
    results.load_button.click()
    qtbot.waitUntil(lambda: "'fine'" in results.check_note.text(), timeout=3000)
    note = results.check_note.text()
    assert "0.1 µm pixels but the model was trained on 0.325 µm" in note and "3.2x larger" in note
    assert "'same'" not in note  # its scale without a unit: not compared, not guessed
    assert results.classify_all_button.isEnabled()  # a warning, not a refusal


def test_a_model_trained_here_keeps_the_labelled_fields_pixel_size(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = synthetic_field("puncta", 128, 1).image
    for name, size, translate in (("coarse", 0.65, (0, 0)), ("fine", 0.2, (0, 100))):
        for layer in add_field(viewer, name, image, scale=(size, size), translate=translate):
            layer.metadata["cellclf"].update(pixel_size=[size, size], unit="µm")
    _, widget = open_widget(viewer)
    fields, results = widget.fields_panel, widget.results_panel
    fields.refresh_fields()
    fields.tile_size.setValue(TILE)
    fields.select_field("coarse")
    fields.paint_button.click()
    labels = viewer.layers["coarse labels"]
    paint_tiles(labels, [(0, c) for c in range(4)], TILE, 1)
    paint_tiles(labels, [(2, c) for c in range(4)], TILE, 2)
    _fast(widget.train_panel, epochs=1)
    click_when_enabled(qtbot, widget.train_panel.train_button)
    wait_idle(qtbot, widget, 60)
    assert widget.session.trained.meta.pixel_size == {"y": 0.65, "x": 0.65, "unit": "µm"}
    qtbot.waitUntil(lambda: "'fine'" in results.check_note.text(), timeout=3000)
    assert "cells look 3.2x larger than in training" in results.check_note.text()
    assert "'coarse'" not in results.check_note.text()
