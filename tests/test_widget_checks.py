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


def _small_model(tmp_path, tile_size=16, channels=("nuclei", "protein")):
    from napari_cellclf.model import build_model
    from napari_cellclf.modelfile import ModelMeta, default_class_colors, save_model

    meta = ModelMeta(
        class_names=["a", "b"],
        class_colors=default_class_colors(2),
        channel_names=list(channels),
        tile_size=tile_size,
        architecture="fast",
        normalization={"mode": "dataset", "low": [0.0] * len(channels), "high": [1.0] * len(channels)},
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
