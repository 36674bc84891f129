"""Object mode's "Mask as an extra channel" checkbox in the dock (issue 12 item 1): the option
travels from the checkbox to training, the model and classification; a cells-only model cannot
classify a field in tile mode."""

from __future__ import annotations

import numpy as np

from napari_cellclf import synthetic
from napari_cellclf.objects import MASK_CHANNEL_NAME, measure_objects
from widget_support import add_field, click_when_enabled, open_widget, wait_idle


def test_mask_channel_checkbox_trains_a_cells_only_model(make_napari_viewer, qtbot):
    """ "Mask as an extra channel": object fields train with one more channel (the cell's mask),
    a tile field beside them is refused for it, the model stores it and classifies cells, and
    Classify is off with the reason on a field in tile mode."""
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
    box = panel.objects_box.mask_channel
    assert box.text() == "Mask as an extra channel" and not box.isChecked()
    box.setChecked(True)

    combo = panel.objects_combo("puncta")
    combo.setCurrentIndex(combo.findText("puncta masks"))
    panel.select_field("puncta")
    panel.paint_button.click()
    painted = viewer.layers["puncta labels"]
    cells = fields["puncta"].cells
    for label, value in zip(measure_objects(cells).labels[:4], (1, 2, 2, 2)):
        ys, xs = np.nonzero(cells == label)
        painted.data_setitem((ys[:3], xs[:3]), value)
    whole = panel.labels_combo("diffuse")
    whole.setCurrentIndex(whole.findText("whole image: Control"))  # in tile mode for now
    train = widget.train_panel
    # object tiles have 3 channels, the diffuse field's grid tiles 2: refused, with the reason
    qtbot.waitUntil(lambda: MASK_CHANNEL_NAME in train.train_button.toolTip(), timeout=5000)
    assert not train.train_button.isEnabled()

    combo = panel.objects_combo("diffuse")
    combo.setCurrentIndex(combo.findText("diffuse masks"))
    train.epochs.setValue(1)
    train.architecture.setCurrentIndex(train.architecture.findData("fast"))
    train.device.setCurrentIndex(train.device.findData("cpu"))
    click_when_enabled(qtbot, train.train_button)
    wait_idle(qtbot, widget, 120)
    meta = widget.session.trained.meta
    assert meta.extra["objects"] == {"blank_background": False, "mask_channel": True}
    assert meta.channel_names == ["nuclei", "protein", MASK_CHANNEL_NAME] and meta.in_channels == 3

    results = widget.results_panel
    panel.select_field("puncta")
    click_when_enabled(qtbot, results.classify_button)
    wait_idle(qtbot, widget, 60)
    assert (
        viewer.layers["puncta cell classes"].features["label"].tolist()
        == measure_objects(cells).labels.tolist()
    )

    panel.objects_combo("puncta").setCurrentIndex(0)  # none (tiles)
    qtbot.waitUntil(lambda: not results.classify_button.isEnabled(), timeout=5000)
    assert MASK_CHANNEL_NAME in results.classify_button.toolTip()
    assert "Objects column" in results.classify_button.toolTip()
    assert not results.explain_button.isEnabled()
