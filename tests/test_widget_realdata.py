"""The dock on real files opened by our reader (slow: real fields of 1192² and 512x672 pixels)."""

from __future__ import annotations

import numpy as np
import pytest

from widget_support import click_when_enabled, open_widget, wait_idle

NEUBIAS = "neubias/image_data"


@pytest.mark.slow
def test_real_control_and_treated_fields_train_and_classify(make_napari_viewer, qtbot, shared_data):
    viewer = make_napari_viewer()
    folder = shared_data / NEUBIAS
    for condition in ("control", "treated"):
        viewer.open(folder / f"xy_calibrated_16bit__nuclear_protein_{condition}.tif", plugin="napari-cellclf")
    viewer.open(folder / "xyc_16bit__hela-cells.tif", plugin="napari-cellclf")
    _, widget = open_widget(viewer)
    panel = widget.fields_panel
    panel.refresh_fields()
    by_name = {f.name: f for f in panel.fields}
    control = by_name["xy_calibrated_16bit__nuclear_protein_control"]
    hela = by_name["xyc_16bit__hela-cells"]
    assert control.n_channels == 1 and control.shape == (1192, 1192)
    assert hela.n_channels == 3 and hela.shape == (512, 672)
    assert hela.stack().shape == (3, 512, 672)
    pixel = control.scale[0]
    assert pixel == pytest.approx(0.11321, rel=1e-3)  # µm per pixel, from the file

    panel.tile_size.setValue(64)
    panel.skip_background.setChecked(True)
    for name, choice in (("control", "whole image: Control"), ("treated", "whole image: Treated")):
        combo = panel.labels_combo(f"xy_calibrated_16bit__nuclear_protein_{name}")
        combo.setCurrentIndex(combo.findText(choice))
    panel.labels_combo("xyc_16bit__hela-cells").setCurrentIndex(
        panel.labels_combo("xyc_16bit__hela-cells").findText("not used")
    )
    qtbot.waitUntil(
        lambda: widget.session.counts is not None and all(n > 10 for n in widget.session.counts.per_class),
        timeout=10000,
    )
    train = widget.train_panel
    train.epochs.setValue(15)
    train.learning_rate.setValue(3e-3)
    train.architecture.setCurrentIndex(train.architecture.findData("fast"))
    click_when_enabled(qtbot, train.train_button)
    wait_idle(qtbot, widget, 300)
    assert widget.session.trained is not None
    assert widget.session.trained.meta.channel_names == control.channel_names

    # the hela field has 3 channels (ch0..ch2), the model one (ch0): it is fed the same-named one
    panel.select_field("xyc_16bit__hela-cells")
    widget.results_panel.classify_button.click()
    wait_idle(qtbot, widget, 120)
    hela_classes = viewer.layers["xyc_16bit__hela-cells classes"]
    assert hela_classes.data.shape == (512, 672)
    np.testing.assert_allclose(hela_classes.scale, hela.scale)

    widget.results_panel.classify_all_button.click()
    wait_idle(qtbot, widget, 180)
    for condition, expected in (("control", "Control"), ("treated", "Treated")):
        classes = viewer.layers[f"xy_calibrated_16bit__nuclear_protein_{condition} classes"]
        np.testing.assert_allclose(classes.scale, (pixel, pixel))
        features = classes.features
        # inference pads the border tiles (19 x 19 grid) and skips background ones
        assert 0 < len(features) < 19 * 19
        ids = np.unique(np.asarray(classes.data))
        assert set(ids[ids > 0]) == set(features["index"])
        # the fields it was trained on (whole-image labels): most tiles get their field's class
        # (measured 0.72-0.85 after 15 epochs; swapped classes would give ~0.25)
        assert (features["class"] == expected).mean() >= 0.6
