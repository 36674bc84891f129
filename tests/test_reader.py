"""The npe2 reader: which paths it takes, the layers it makes, and napari opening real files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cellclf import _reader, io

RNG = np.random.default_rng(3)


def _imagej(path, data, axes, **metadata):
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.5),
        metadata={"axes": axes, "unit": "um", **metadata},
    )
    return path


# --------------------------------------------------------------------------------------------
# get_reader: None for what it does not take, so napari asks other plugins


@pytest.mark.parametrize("name", ["a.tif", "a.TIFF", "a.ome.tif", "a.ome.tiff", "a.png", "a.jpg", "a.JPEG"])
def test_get_reader_takes_supported_files(tmp_path, name):
    assert _reader.get_reader(str(tmp_path / name)) is _reader.read_layers
    assert _reader.get_reader([str(tmp_path / name)]) is _reader.read_layers


def test_get_reader_declines_other_paths(tmp_path):
    (tmp_path / "folder.tif").mkdir()
    assert _reader.get_reader(str(tmp_path / "table.csv")) is None
    assert _reader.get_reader(str(tmp_path / "image.czi")) is None
    assert _reader.get_reader(str(tmp_path / "folder.tif")) is None
    assert _reader.get_reader(str(tmp_path)) is None
    assert _reader.get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]) is None
    assert _reader.get_reader(42) is None


# --------------------------------------------------------------------------------------------
# layer data tuples


def test_multichannel_file_gives_one_layer_per_channel(tmp_path):
    data = RNG.integers(0, 4096, (3, 40, 50)).astype(np.uint16)
    path = _imagej(tmp_path / "cells.tif", data, "CYX", Labels=["GFP", "DAPI", "RFP"])
    layers = _reader.read_layers(str(path))
    assert len(layers) == 3 and all(kind == "image" for _, _, kind in layers)
    names = [kw["name"] for _, kw, _ in layers]
    assert names == ["cells [GFP]", "cells [DAPI]", "cells [RFP]"]
    assert [kw["colormap"] for _, kw, _ in layers] == ["green", "blue", "magenta"]
    for i, (layer_data, kw, _) in enumerate(layers):
        np.testing.assert_array_equal(layer_data, data[i])
        assert kw["scale"] == pytest.approx((0.5, 0.5))
        assert kw["blending"] == "additive"
        lo, hi = kw["contrast_limits"]
        assert 0 <= lo < 100 and 3900 < hi < 4096  # from the data, not 0..65535
        meta = kw["metadata"]["cellclf"]
        assert meta["source"] == meta["field"] == str(path.resolve())
        assert meta["channel_index"] == i and meta["n_channels"] == 3
        assert meta["channel_name"] == ["GFP", "DAPI", "RFP"][i]
        assert meta["axes"] == "CYX" and meta["layer_axes"] == "YX"
        assert meta["pixel_size"] == pytest.approx([0.5, 0.5]) and meta["unit"] == "µm"
        assert kw["metadata"]["source_path"] == str(path.resolve())


def test_single_channel_is_gray_and_named_after_the_file(tmp_path):
    path = tmp_path / "nuclei.tif"
    tifffile.imwrite(path, RNG.integers(0, 200, (20, 30)).astype(np.uint8))
    [(data, kw, kind)] = _reader.read_layers(str(path))
    assert kind == "image" and kw["name"] == "nuclei" and kw["colormap"] == "gray"
    assert kw["scale"] == (1.0, 1.0)
    assert kw["metadata"]["cellclf"]["n_channels"] == 1
    assert kw["metadata"]["cellclf"]["channel_name"] == "ch0"


def test_rgb_photo_is_one_rgb_layer(tmp_path):
    import imagecodecs

    photo = RNG.integers(0, 256, (24, 32, 4)).astype(np.uint8)
    path = tmp_path / "photo.png"
    path.write_bytes(imagecodecs.png_encode(photo))
    [(data, kw, _)] = _reader.read_layers(str(path))
    assert kw["rgb"] is True and data.shape == (24, 32, 4)
    assert kw["contrast_limits"] == (0.0, 255.0) and kw["scale"] == (1.0, 1.0)
    assert kw["metadata"]["cellclf"]["rgb"] is True


def test_stacks_keep_leading_dims_with_one_scale_per_dim(tmp_path):
    data = RNG.integers(0, 1000, (2, 4, 2, 16, 18)).astype(np.uint16)
    path = _imagej(tmp_path / "movie.tif", data, "TZCYX", spacing=1.5)
    layers = _reader.read_layers(str(path))
    assert len(layers) == 2
    for i, (layer_data, kw, _) in enumerate(layers):
        assert layer_data.shape == (2, 4, 16, 18)
        np.testing.assert_array_equal(layer_data, data[:, :, i])
        assert kw["scale"] == pytest.approx((1.0, 1.5, 0.5, 0.5))  # T, Z (spacing), Y, X
        assert kw["metadata"]["cellclf"]["layer_axes"] == "TZYX"


def test_channel_colormaps():
    assert _reader.channel_colormaps(["x"]) == ["gray"]
    assert _reader.channel_colormaps(["a", "b"]) == ["green", "magenta"]
    assert _reader.channel_colormaps(["Hoechst 33342", "Cy5", "GFP"]) == ["blue", "green", "magenta"]
    assert _reader.channel_colormaps(["a", "b"], ["cyan", "yellow"]) == ["cyan", "yellow"]


def test_large_file_layers_stay_lazy(tmp_path, monkeypatch):
    data = RNG.integers(0, 4096, (2, 64, 64)).astype(np.uint16)
    plain = tmp_path / "big.tif"
    tifffile.imwrite(plain, data, imagej=True, metadata={"axes": "CYX"})
    monkeypatch.setattr(io.limits, "LAZY_BYTES", 1024)
    layers = _reader.read_layers(str(plain))
    assert all(isinstance(d, np.memmap) for d, _, _ in layers)
    assert all(kw["metadata"]["cellclf"]["lazy"] for _, kw, _ in layers)
    np.testing.assert_array_equal(layers[1][0], data[1])

    pytest.importorskip("zarr")
    dask_array = pytest.importorskip("dask.array")
    packed = tmp_path / "big_zlib.tif"
    tifffile.imwrite(packed, data, compression="zlib", metadata={"axes": "CYX"})
    layers = _reader.read_layers(str(packed))
    assert all(isinstance(d, dask_array.Array) for d, _, _ in layers)
    np.testing.assert_array_equal(np.asarray(layers[0][0]), data[0])


def test_bad_file_raises_a_value_error_naming_it(tmp_path):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"II*\x00" + bytes(40))
    with pytest.raises(ValueError, match="broken.tif"):
        _reader.read_layers(str(path))


# --------------------------------------------------------------------------------------------
# napari


def test_plugin_manifest_offers_the_reader():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    assert "napari-cellclf" in {m.name for m in pm.iter_manifests()}
    readers = [r.command for r in pm.iter_compatible_readers(["x.ome.tiff"])]
    assert "napari-cellclf.get_reader" in readers


@pytest.mark.slow
def test_viewer_opens_hela_as_three_visible_channels(make_napari_viewer, shared_data):
    path = shared_data / "neubias" / "image_data" / "xyc_16bit__hela-cells.tif"
    viewer = make_napari_viewer(show=True)  # shown: the screenshot needs a real canvas
    layers = viewer.open(path, plugin="napari-cellclf")
    assert [layer.name for layer in layers] == [f"xyc_16bit__hela-cells [ch{i}]" for i in range(3)]
    assert [layer.colormap.name for layer in layers] == ["red", "green", "blue"]
    for i, layer in enumerate(layers):
        assert layer.data.shape == (512, 672)
        np.testing.assert_allclose(layer.scale, [1 / 19.420064] * 2, rtol=1e-5)
        meta = layer.metadata["cellclf"]
        assert meta["field"] == str(path.resolve()) and meta["channel_index"] == i
        assert meta["axes"] == "YXS" and meta["n_channels"] == 3
        assert layer.contrast_limits[1] < 4096  # 12-bit data: not black on 0..65535
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    lit = (shot.max(axis=-1) > 64).mean()
    assert lit > 0.2, f"only {lit:.0%} of the canvas is visibly lit"
    assert all(shot[..., c].max() > 200 for c in range(3))  # red, green and blue all show


@pytest.mark.slow
def test_viewer_opens_ome_tiff_with_channel_names(make_napari_viewer, shared_data):
    path = shared_data / "ndev_ometiff" / "samples" / "neuron-4Ch.tiff"
    viewer = make_napari_viewer()
    layers = viewer.open(path, plugin="napari-cellclf")
    assert [layer.metadata["cellclf"]["channel_name"] for layer in layers] == [
        "AF647",
        "AF568",
        "AF488",
        "DAPI",
    ]
    assert layers[3].colormap.name == "blue"
    for layer in layers:
        np.testing.assert_allclose(layer.scale, [0.1241, 0.1241])
        assert layer.contrast_limits[0] < layer.contrast_limits[1] < 10000


@pytest.mark.slow
def test_viewer_opens_z_stack_with_slider(make_napari_viewer, shared_data):
    path = shared_data / "neubias" / "image_data" / "xyzc_16bit__dna_conf_wf.tif"
    viewer = make_napari_viewer()
    layers = viewer.open(path, plugin="napari-cellclf")
    assert len(layers) == 2 and layers[0].data.shape == (45, 130, 133)
    assert viewer.dims.ndim == 3 and viewer.dims.nsteps[0] == 45


def test_viewer_reports_corrupt_file_by_name(make_napari_viewer, tmp_path):
    path = tmp_path / "corrupt.tif"
    path.write_bytes(RNG.bytes(500))
    viewer = make_napari_viewer()
    with pytest.raises(ValueError, match="corrupt.tif.*not a readable TIFF"):
        viewer.open(path, plugin="napari-cellclf")
    assert len(viewer.layers) == 0


def test_the_napari_reader_refuses_bombs_and_truncations_without_a_layer(tmp_path):
    import hostile  # tests/hostile.py
    from napari_cellclf import _reader, io

    for make in (
        hostile.jpeg_bomb,
        hostile.png_bomb,
        hostile.tiled_bomb_tiff,
        hostile.truncated_jpeg,
        hostile.ome_more_planes_than_stored,
    ):
        path = make(tmp_path)
        assert _reader.get_reader(str(path)) is _reader.read_layers
        with pytest.raises(io.ImageReadError, match=path.name):
            _reader.read_layers(str(path))


def test_instance_masks_beside_an_image_open_as_labels_over_their_field(make_napari_viewer, tmp_path):
    """`<stem>_objects.tif` (the CLI's layout) opens as a Labels layer, not a grey image, so it
    can be chosen as a field's objects; chosen, it moves onto its field wherever the dock laid
    that field (here beside the first one)."""
    from napari_cellclf import synthetic
    from widget_support import open_widget

    fields = {}
    for phenotype, seed in (("puncta", 3), ("diffuse", 4)):
        fields[phenotype] = synthetic.make_field(phenotype, shape=(96, 96), seed=seed, cell_radius=8)
        tifffile.imwrite(tmp_path / f"{phenotype}.tif", fields[phenotype].image, metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "diffuse_objects.tif", fields["diffuse"].cells.astype(np.int32))
    tifffile.imwrite(tmp_path / "grey_objects.tif", np.zeros((8, 8), np.float32))  # not a mask

    ((data, kwargs, kind),) = _reader.read_layers(tmp_path / "diffuse_objects.tif")
    assert kind == "labels" and kwargs["name"] == "diffuse_objects"
    np.testing.assert_array_equal(data, fields["diffuse"].cells)
    assert [kind for *_, kind in _reader.read_layers(tmp_path / "grey_objects.tif")] == ["image"]

    viewer = make_napari_viewer()
    _, widget = open_widget(viewer)
    for phenotype in fields:
        viewer.open(str(tmp_path / f"{phenotype}.tif"), plugin="napari-cellclf")
    viewer.open(str(tmp_path / "diffuse_objects.tif"), plugin="napari-cellclf")
    panel = widget.fields_panel
    panel.refresh_fields()
    diffuse = next(f for f in panel.fields if f.name == "diffuse")
    assert tuple(diffuse.translate) != (0.0, 0.0)  # laid beside the first field
    combo = panel.objects_combo("diffuse")
    combo.setCurrentIndex(combo.findText("diffuse_objects"))
    masks = viewer.layers["diffuse_objects"]
    np.testing.assert_allclose(masks.translate, diffuse.translate)
    np.testing.assert_allclose(masks.scale, diffuse.scale)
