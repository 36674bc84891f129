"""Widget, before any training: fields from layers, tile grid, classes, and the three ways to label."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tifffile

from napari_cellclf._widget import _dialogs
from widget_support import Notifications, add_field, open_widget, paint_tiles, wait_idle


def _field(seed: int, shape=(2, 128, 160)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(100, 10, shape).astype(np.float32)


def test_fields_regroup_channels_and_derived_layers_sit_on_the_field(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = _field(0)
    image[1] += 1000  # tell the channels apart
    # channels added in reverse order, with a physical scale and an offset
    add_field(viewer, "A01", image, order=[1, 0], scale=(0.5, 0.5), translate=(10.0, 20.0))
    viewer.add_image(_field(1, (1, 96, 96))[0], name="plain")
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="photo", rgb=True)
    viewer.add_image(np.zeros((3, 32, 32), np.float32), name="stack")  # 3-D: not a field
    _, widget = open_widget(viewer)
    panel = widget.fields_panel

    assert [f.name for f in panel.fields] == ["A01", "plain", "photo"]
    a01 = panel.fields[0]
    assert a01.channel_names == ["nuclei", "protein"]
    stacked = a01.stack()
    assert stacked.dtype == np.float32 and stacked.shape == (2, 128, 160)
    np.testing.assert_array_equal(stacked, image)  # channel_index order, not layer order
    assert panel.fields[2].n_channels == 3  # an RGB photo gives three channels
    assert panel.channel_list.count() == 2

    panel.select_field("A01")
    panel.paint_button.click()
    labels = viewer.layers["A01 labels"]
    assert labels.data.shape == (128, 160)
    np.testing.assert_allclose(labels.scale, (0.5, 0.5))
    np.testing.assert_allclose(labels.translate, (10.0, 20.0))
    assert viewer.layers.selection.active is labels and labels.mode == "paint"
    assert labels.selected_label == 1
    panel.paint_class.setCurrentIndex(panel.paint_class.findText("2: Treated"))
    assert labels.selected_label == 2
    qtbot.waitUntil(lambda: "tile grid" in viewer.layers, timeout=3000)
    np.testing.assert_allclose(viewer.layers["tile grid"].translate, (10.0, 20.0))
    # a second click selects the same layer instead of adding another
    panel.paint_button.click()
    assert [ly.name for ly in viewer.layers].count("A01 labels") == 1


def test_painted_tiles_are_counted_per_class_and_warned_about(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_field(viewer, "A01", _field(0))
    _, widget = open_widget(viewer)
    widget.fields_panel.tile_size.setValue(32)
    widget.fields_panel.paint_button.click()
    labels = viewer.layers["A01 labels"]

    paint_tiles(labels, [(0, 0), (0, 1), (1, 0)], 32, 1)
    # a tile only counts when at least half of it is painted
    labels.data_setitem(tuple(np.mgrid[64:72, 64:96].reshape(2, -1)), 2)
    table = widget.classes_panel.table
    qtbot.waitUntil(lambda: table.item(0, 2).text() == "3", timeout=3000)
    assert table.item(1, 2).text() == "0"
    assert "Only one class" in widget.train_panel.warnings.text()

    paint_tiles(labels, [(3, 3), (3, 4)], 32, 2)
    qtbot.waitUntil(lambda: table.item(1, 2).text() == "2", timeout=3000)
    assert "Only one class" not in widget.train_panel.warnings.text()
    assert "Few tiles" in widget.train_panel.warnings.text()
    assert widget.session.counts.per_field[widget.fields_panel.fields[0].id] == [3, 2]
    # undo (Ctrl+Z) takes the last painted tile back out of the count
    labels.undo()
    qtbot.waitUntil(lambda: table.item(1, 2).text() == "1", timeout=3000)


def test_whole_image_labels_and_background_skipping(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = np.full((2, 128, 128), 10.0, np.float32)
    image[0, :64, :] = 500.0  # foreground in the top half of channel 0 only
    add_field(viewer, "A01", image)
    _, widget = open_widget(viewer)
    panel = widget.fields_panel
    panel.tile_size.setValue(32)
    combo = panel.labels_combo("A01")
    combo.setCurrentIndex(combo.findText("whole image: Treated"))
    table = widget.classes_panel.table
    qtbot.waitUntil(lambda: table.item(1, 2).text() == "16", timeout=3000)

    panel.skip_background.setChecked(True)
    qtbot.waitUntil(lambda: table.item(1, 2).text() == "8", timeout=3000)
    grid = viewer.layers["tile grid"]
    qtbot.waitUntil(lambda: (np.asarray(grid.data)[64:, :] == 2).all(), timeout=3000)
    assert (np.asarray(grid.data)[1:31, 1:31] == 0).all()  # inside a used tile: clear
    assert (np.asarray(grid.data)[0, :128] == 1).all()  # a tile border
    panel.show_grid.setChecked(False)
    qtbot.waitUntil(lambda: not grid.visible, timeout=3000)
    panel.show_grid.setChecked(True)
    qtbot.waitUntil(lambda: grid.visible, timeout=3000)
    # hidden with the layer's eye, it stays hidden while the grid follows the settings
    grid.visible = False
    panel.tile_size.setValue(64)
    qtbot.waitUntil(lambda: (np.asarray(grid.data)[1:63, 1:63] == 0).all(), timeout=3000)
    assert not grid.visible


def test_classes_add_rename_recolour_remove(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    add_field(viewer, "A01", _field(0))
    _, widget = open_widget(viewer)
    widget.fields_panel.tile_size.setValue(32)
    widget.fields_panel.paint_button.click()
    labels = viewer.layers["A01 labels"]
    panel = widget.classes_panel

    panel.add_button.click()
    assert widget.session.class_names == ["Control", "Treated", "Class 3"]
    assert panel.table.rowCount() == 3
    panel.table.item(2, 1).setText("Dead")
    assert widget.session.class_names[2] == "Dead"
    panel.table.item(2, 1).setText("Control")  # duplicate: refused, name restored
    assert widget.session.class_names[2] == "Dead" and panel.table.item(2, 1).text() == "Dead"

    monkeypatch.setattr(_dialogs, "ask_color", lambda parent, current: "#123456")
    panel.table.cellWidget(2, 0).click()
    assert widget.session.class_colors[2] == "#123456"
    np.testing.assert_allclose(
        labels.colormap.map(np.array([3]))[0][:3], [0x12 / 255, 0x34 / 255, 0x56 / 255], atol=1e-3
    )

    # selecting a class row makes the labels layer paint that value
    viewer.layers.selection.active = labels
    panel.table.selectRow(2)
    assert labels.selected_label == 3

    paint_tiles(labels, [(0, 0)], 32, 1)
    paint_tiles(labels, [(1, 1)], 32, 2)
    paint_tiles(labels, [(2, 2)], 32, 3)
    panel.table.selectRow(1)
    panel.remove_button.click()
    assert widget.session.class_names == ["Control", "Dead"]
    data = np.asarray(labels.data)
    assert (data[:32, :32] == 1).all() and (data[32:64, 32:64] == 0).all()
    assert (data[64:96, 64:96] == 2).all()  # "Dead" moved from 3 to 2
    assert not panel.remove_button.isEnabled()  # two classes is the minimum


def test_tile_grid_stays_fast_on_a_2048_field(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_field(viewer, "big", np.zeros((1, 2048, 2048), np.float32), channel_names=("dapi",))
    _, widget = open_widget(viewer)
    panel = widget.fields_panel
    panel.tile_size.setValue(32)
    qtbot.waitUntil(lambda: "64×64" in panel.grid_note.text(), timeout=5000)
    start = time.perf_counter()
    panel.update_grid()
    elapsed = time.perf_counter() - start
    overlay = np.asarray(viewer.layers["tile grid"].data)
    assert overlay.shape == (2048, 2048)
    assert (overlay[::32, 5] == 1).all() and (overlay[5:31, 5:31] == 0).all()
    assert elapsed < 1.0, f"grid overlay took {elapsed:.2f} s"


def test_import_class_folders_picks_classes_and_forget_removes_the_empty_ones(
    make_napari_viewer, qtbot, monkeypatch, tmp_path
):
    rng = np.random.default_rng(0)
    for name, n in (("Control", 3), ("Treated", 2), ("Mitotic", 4)):
        (tmp_path / name).mkdir()
        for i in range(n):
            tifffile.imwrite(
                tmp_path / name / f"{i}.tif",
                rng.integers(0, 4000, (2, 40, 40), dtype=np.uint16),
                imagej=True,
                metadata={"axes": "CYX"},
            )
    (tmp_path / ".DS_Store").write_text("litter")
    viewer = make_napari_viewer()
    add_field(viewer, "A01", _field(0))
    _, widget = open_widget(viewer)
    widget.fields_panel.tile_size.setValue(32)
    monkeypatch.setattr(_dialogs, "ask_directory", lambda parent, caption: str(tmp_path))
    offered = []

    def pick(parent, caption, items):  # the user unticks Treated in the class picker
        offered.extend(items)
        return ["Control", "Mitotic"]

    monkeypatch.setattr(_dialogs, "ask_choices", pick)
    widget.classes_panel.import_button.click()
    wait_idle(qtbot, widget, 30)

    assert offered == ["Control", "Mitotic", "Treated"]  # folders with images, not the litter
    assert widget.session.class_names == ["Control", "Treated", "Mitotic"]
    table = widget.classes_panel.table
    qtbot.waitUntil(lambda: [table.item(r, 2).text() for r in range(3)] == ["3", "0", "4"], timeout=3000)
    assert "7 tiles" in widget.classes_panel.import_note.text()
    # Forget import: its tiles go, and so does the class it added that nothing else labels
    widget.classes_panel.forget_button.click()
    assert widget.session.class_names == ["Control", "Treated"]
    qtbot.waitUntil(lambda: [table.item(r, 2).text() for r in range(2)] == ["0", "0"], timeout=3000)


def test_import_of_a_bad_folder_is_an_error_message(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    viewer = make_napari_viewer()
    _, widget = open_widget(viewer)
    (tmp_path / "Control").mkdir()
    (tmp_path / "Control" / "broken.tif").write_bytes(b"not a tiff")
    monkeypatch.setattr(_dialogs, "ask_choices", lambda parent, caption, items: items)
    notes = Notifications()
    try:
        monkeypatch.setattr(_dialogs, "ask_directory", lambda parent, caption: str(tmp_path / "Control"))
        widget.classes_panel.import_button.click()  # a folder without class subfolders: said at once
        assert widget.session.jobs.kind is None
        qtbot.waitUntil(lambda: bool(notes.warnings()), timeout=3000)
        assert "no subfolders with images" in notes.warnings()[0]
        monkeypatch.setattr(_dialogs, "ask_directory", lambda parent, caption: str(tmp_path))
        widget.classes_panel.import_button.click()  # an unreadable image
        wait_idle(qtbot, widget, 30)
        qtbot.waitUntil(lambda: bool(notes.errors()), timeout=3000)
    finally:
        notes.close()
    assert notes.errors()[0].startswith("Importing class folders failed: ")
    assert "broken.tif" in notes.errors()[0]
    assert widget.session.imported is None and widget.classes_panel.import_button.isEnabled()


@pytest.mark.parametrize(
    "names, indices, field_names, expected",
    [
        (["nuclei", "protein"], [0, 1], ["protein", "nuclei"], [1, 0]),  # by name when possible
        (["ch0", "ch1"], [1, 2], ["a", "b", "c"], [1, 2]),  # else by index
        (["x"], None, ["only"], [0]),  # else by count
    ],
)
def test_model_channels_match_by_name_then_index_then_count(names, indices, field_names, expected):
    from napari_cellclf._widget._fields import Channel, Field, model_channels

    fld = Field("f", "f", [Channel(None, n) for n in field_names], (8, 8), (1, 1), (0, 0))
    assert model_channels(fld, names, indices) == expected


def test_model_channels_mismatch_names_both_sides():
    from napari_cellclf._widget._fields import Channel, Field, model_channels

    fld = Field("f", "A01", [Channel(None, "dapi")], (8, 8), (1, 1), (0, 0))
    with pytest.raises(ValueError, match=r"'A01'.*expects 2 channel.*has 1 \(dapi\)"):
        model_channels(fld, ["nuclei", "protein"], [0, 1])


def test_imported_folders_reread_at_a_new_tile_size_keep_only_their_classes(tmp_path):
    """Changing the tile size after an import re-reads the folders; classes of the session that
    have no folder must not appear as empty classes (training would refuse them)."""
    from napari_cellclf import data as cdata
    from napari_cellclf._widget._labelling import import_class_folders, imported_dataset

    rng = np.random.default_rng(0)
    for name in ("Mitotic", "Interphase"):
        (tmp_path / name).mkdir()
        for i in range(3):
            tifffile.imwrite(
                tmp_path / name / f"{i}.tif",
                rng.integers(0, 4000, (2, 40, 40), dtype=np.uint16),
                imagej=True,
                metadata={"axes": "CYX"},
            )
    imported = import_class_folders(str(tmp_path), 40, (0, 1), mode="tile")
    reread = imported_dataset(imported, 20, (0, 1))
    assert reread.class_names == imported.dataset.class_names == ["Interphase", "Mitotic"]
    assert reread.class_counts() == {"Interphase": 12, "Mitotic": 12}  # 4 tiles of 20 px each
    cdata.check_trainable(reread)
