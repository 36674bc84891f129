"""io: files -> ImageData -> (C, Y, X). Files are written here with tifffile/imagecodecs; the real
files in ../shared/data are checked against their SOURCE.md tables (values verified with
tifffile before they were written down here)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cellclf import io

RNG = np.random.default_rng(7)


def _ramp(shape, dtype, top):
    """Distinct values per plane so a wrong axis order or plane pick shows up."""
    return (np.arange(np.prod(shape)) % (top + 1)).reshape(shape).astype(dtype)


# --------------------------------------------------------------------------------------------
# TIFF flavours


@pytest.mark.parametrize("dtype, top", [(np.uint8, 255), (np.uint16, 65535), (np.float32, 1.0)])
def test_plain_tiff_keeps_dtype_and_pixels(tmp_path, dtype, top):
    data = (RNG.random((33, 47)) * top).astype(dtype)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, data)
    image = io.read_image(path)
    assert image.axes == "YX" and image.data.dtype == dtype
    np.testing.assert_array_equal(image.data, data)
    assert image.pixel_size is None and not image.rgb and not image.lazy
    assert image.n_channels == 1 and image.channel_axis is None


def test_12bit_in_uint16_is_recognised_and_not_displayed_black(tmp_path):
    data = RNG.integers(100, 4096, (64, 64)).astype(np.uint16)
    path = tmp_path / "camera12.tif"
    tifffile.imwrite(path, data)
    image = io.read_image(path)
    assert image.significant_bits == 12
    lo, hi = io.contrast_limits(image)
    assert 100 <= lo < 200 and 3900 < hi <= 4095  # not 0..65535, which renders black


@pytest.mark.parametrize("axes", ["ZYX", "CYX", "TYX", "ZCYX", "TCYX", "TZYX", "TZCYX"])
def test_imagej_hyperstack_axes(tmp_path, axes):
    sizes = {"T": 2, "Z": 3, "C": 2, "Y": 12, "X": 10}
    shape = tuple(sizes[a] for a in axes)
    data = _ramp(shape, np.uint16, 4000)
    path = tmp_path / f"{axes}.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": axes})
    image = io.read_image(path)
    assert image.axes == axes and image.data.shape == shape
    np.testing.assert_array_equal(image.data, data)
    assert image.metadata["flavour"] == "imagej"
    assert image.n_channels == sizes["C"] if "C" in axes else image.n_channels == 1


def test_imagej_labels_unit_resolution_and_spacing(tmp_path):
    data = _ramp((3, 2, 16, 20), np.uint16, 4095)
    path = tmp_path / "calibrated.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "ZCYX", "unit": "um", "spacing": 0.8, "Labels": ["Hoechst", "GFP"]},
    )
    image = io.read_image(path)
    assert image.axes == "ZCYX"
    assert image.channel_names == ["Hoechst", "GFP"]
    assert image.pixel_size == pytest.approx((0.25, 0.25)) and image.unit == "µm"
    assert image.metadata["z_spacing"] == pytest.approx(0.8)


def test_imagej_uncalibrated_has_no_pixel_size(tmp_path):
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, _ramp((2, 8, 8), np.uint16, 100), imagej=True, metadata={"axes": "CYX"})
    assert io.read_image(path).pixel_size is None


def test_ome_tiff_axes_channel_names_pixel_size(tmp_path):
    data = _ramp((3, 30, 40), np.uint16, 4095)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "CYX",
            "Channel": {"Name": ["DAPI", "GFP", "RFP"]},
            "PhysicalSizeX": 0.2,
            "PhysicalSizeY": 0.3,
        },
    )
    image = io.read_image(path)
    assert image.metadata["flavour"] == "ome"
    assert image.axes == "CYX" and image.channel_names == ["DAPI", "GFP", "RFP"]
    assert image.pixel_size == pytest.approx((0.3, 0.2)) and image.unit == "µm"
    np.testing.assert_array_equal(image.data, data)


def test_multipage_stack_without_metadata_is_z(tmp_path):
    path = tmp_path / "pages.tif"
    planes = _ramp((4, 10, 12), np.uint8, 250)
    for plane in planes:
        tifffile.imwrite(path, plane, append=True, metadata=None)
    image = io.read_image(path)
    assert image.axes == "ZYX" and image.data.shape == (4, 10, 12)
    np.testing.assert_array_equal(image.data, planes)


def test_planar_samples_are_channels(tmp_path):
    data = _ramp((3, 10, 12), np.uint16, 3000)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, data, planarconfig="separate", photometric="minisblack")
    image = io.read_image(path)
    assert image.axes == "SYX" and not image.rgb and image.n_channels == 3
    cyx, names = io.to_cyx(image)
    np.testing.assert_array_equal(cyx, data.astype(np.float32))
    assert names == ["ch0", "ch1", "ch2"]


def test_16bit_rgb_stored_tiff_is_three_channels_not_a_photo(tmp_path):
    data = RNG.integers(0, 4096, (20, 24, 3)).astype(np.uint16)
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, data, photometric="rgb")
    image = io.read_image(path)
    assert image.axes == "YXS" and not image.rgb and image.n_channels == 3
    assert image.metadata["channel_colors"] == ["red", "green", "blue"]
    cyx, _ = io.to_cyx(image)
    np.testing.assert_array_equal(cyx, np.moveaxis(data, -1, 0))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_channels_of_rgb_samples_become_c_times_s_channels(tmp_path, dtype):
    data = _ramp((2, 10, 12, 3), dtype, 250)
    path = tmp_path / "cs.ome.tif"
    tifffile.imwrite(path, data, photometric="rgb", ome=True, metadata={"axes": "CYXS"})
    image = io.read_image(path)
    assert image.axes == "CYX" and image.n_channels == 6 and not image.rgb
    cyx, _ = io.to_cyx(image)
    np.testing.assert_array_equal(cyx, np.moveaxis(data, -1, 1).reshape(6, 10, 12))


def test_8bit_rgb_tiff_is_a_photo(tmp_path):
    data = RNG.integers(0, 256, (20, 24, 3)).astype(np.uint8)
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, data, photometric="rgb")
    image = io.read_image(path)
    assert image.rgb and image.axes == "YXS" and image.n_channels == 3
    assert io.contrast_limits(image) == (0.0, 255.0)


@pytest.mark.parametrize(
    "unit, resolution, expected",
    [
        ("CENTIMETER", 1e4 / 0.65, 0.65),  # 0.65 µm pixels written in pixels per cm
        ("MICROMETER", 1 / 0.5, 0.5),
        ("INCH", 300.0, None),  # print dpi, not a microscope pixel
    ],
)
def test_plain_tiff_resolution_tags(tmp_path, unit, resolution, expected):
    path = tmp_path / "res.tif"
    tifffile.imwrite(
        path, np.zeros((8, 8), np.uint16), resolution=(resolution, resolution), resolutionunit=unit
    )
    image = io.read_image(path)
    if expected is None:
        assert image.pixel_size is None
    else:
        assert image.pixel_size == pytest.approx((expected, expected)) and image.unit == "µm"


# --------------------------------------------------------------------------------------------
# PNG / JPEG


def _write_png(path, data):
    import imagecodecs

    path.write_bytes(imagecodecs.png_encode(data))


@pytest.mark.parametrize(
    "shape, dtype, axes, rgb",
    [
        ((20, 30), np.uint8, "YX", False),
        ((20, 30), np.uint16, "YX", False),
        ((20, 30, 3), np.uint8, "YXS", True),
        ((20, 30, 3), np.uint16, "YXS", True),  # 16-bit RGB PNG stays 16-bit
        ((20, 30, 4), np.uint8, "YXS", True),
    ],
)
def test_png_grey_rgb_rgba_keep_bit_depth(tmp_path, shape, dtype, axes, rgb):
    data = RNG.integers(0, np.iinfo(dtype).max, shape).astype(dtype)
    path = tmp_path / "img.png"
    _write_png(path, data)
    image = io.read_image(path)
    assert image.axes == axes and image.rgb == rgb and image.data.dtype == dtype
    np.testing.assert_array_equal(image.data, data)
    cyx, names = io.to_cyx(image)
    expected_c = 3 if rgb else 1
    assert cyx.shape == (expected_c, 20, 30) and cyx.dtype == np.float32
    if rgb:
        assert names == ["red", "green", "blue"]  # alpha is not a channel
        np.testing.assert_array_equal(cyx, np.moveaxis(data[..., :3], -1, 0))


def test_png_grey_with_alpha_drops_alpha(tmp_path):
    data = RNG.integers(0, 255, (10, 12, 2)).astype(np.uint8)
    path = tmp_path / "la.png"
    _write_png(path, data)
    image = io.read_image(path)
    assert image.axes == "YX"
    np.testing.assert_array_equal(image.data, data[..., 0])


def test_jpeg_rgb_and_grey(tmp_path):
    import imagecodecs

    rgb = np.zeros((32, 40, 3), np.uint8)
    rgb[..., 0] = 200  # flat red: survives JPEG almost exactly
    (tmp_path / "photo.JPG").write_bytes(imagecodecs.jpeg8_encode(rgb, level=95))
    image = io.read_image(tmp_path / "photo.JPG")
    assert image.rgb and image.data.shape == (32, 40, 3)
    assert abs(int(image.data[..., 0].mean()) - 200) <= 2 and image.data[..., 2].max() < 10
    grey = np.full((16, 16), 90, np.uint8)
    (tmp_path / "grey.jpeg").write_bytes(imagecodecs.jpeg8_encode(grey, level=95))
    image = io.read_image(tmp_path / "grey.jpeg")
    assert image.axes == "YX" and abs(int(image.data.mean()) - 90) <= 2


# --------------------------------------------------------------------------------------------
# large files stay on disk


def test_large_uncompressed_tiff_is_memmapped(tmp_path, monkeypatch):
    data = _ramp((2, 3, 64, 80), np.uint16, 4095)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX"})
    monkeypatch.setattr(io.limits, "LAZY_BYTES", 1024)
    image = io.read_image(path)
    assert image.lazy and isinstance(image.data, np.memmap)
    assert image.data.shape == data.shape and image.axes == "ZCYX"
    cyx, _ = io.to_cyx(image, plane={"Z": 1})
    np.testing.assert_array_equal(cyx, data[1].astype(np.float32))


def test_large_compressed_tiff_is_a_zarr_store_and_subsampled(tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    data = RNG.integers(0, 4096, (3, 2, 300, 280)).astype(np.uint16)
    path = tmp_path / "big_zlib.tif"
    tifffile.imwrite(path, data, compression="zlib", metadata={"axes": "TCYX"})
    monkeypatch.setattr(io.limits, "LAZY_BYTES", 1024)
    monkeypatch.setattr(io.limits, "SUBSAMPLE_SIDE", 64)
    image = io.read_image(path)
    assert image.lazy and not isinstance(image.data, np.ndarray)  # nothing read yet
    assert tuple(image.data.shape) == data.shape and image.axes == "TCYX"
    sample = io.subsample(image, channel=1)
    assert sample.size < data[:, 1].size / 10  # 3 planes strided to ~64 px per side
    lo, hi = io.contrast_limits(image, channel=1)
    assert 0 <= lo < 100 and 3900 < hi < 4096
    cyx, _ = io.to_cyx(image, plane={"T": 2})
    np.testing.assert_array_equal(cyx, data[2].astype(np.float32))


def test_small_file_is_read_into_memory(tmp_path):
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, np.ones((8, 8), np.uint8))
    image = io.read_image(path)
    assert not image.lazy and type(image.data) is np.ndarray


# --------------------------------------------------------------------------------------------
# bad input: a clear, one-line ImageReadError (a ValueError) that names the file


def _bad_files(tmp_path):
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, RNG.integers(0, 255, (100, 100)).astype(np.uint8))
    raw = full.read_bytes()
    (tmp_path / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, _ramp((4, 3, 40, 50), np.uint16, 100), imagej=True, metadata={"axes": "ZCYX"})
    (tmp_path / "truncated_stack.tif").write_bytes(stack.read_bytes()[:3000])
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "random.tif").write_bytes(RNG.bytes(2000))
    (tmp_path / "notes.png").write_text("this is not a PNG image\n")
    (tmp_path / "notes.jpg").write_text("nor a JPEG\n")
    with pytest.warns(UserWarning):  # tifffile: "writing zero-size array"
        tifffile.imwrite(tmp_path / "zero.tif", np.zeros((0, 0), np.uint8))
    tifffile.imwrite(tmp_path / "six_d.tif", np.zeros((2, 2, 2, 2, 8, 8), np.uint8))
    (tmp_path / "folder.tif").mkdir()
    (tmp_path / "image.bmp").write_bytes(b"BM")
    return {
        "truncated.tif": "truncated",
        "truncated_stack.tif": "truncated or corrupted",
        "empty.tif": "empty",
        "random.tif": "not a readable TIFF",
        "notes.png": "not a readable PNG",
        "notes.jpg": "not a readable JPEG",
        "zero.tif": "no pixels",
        "six_d.tif": "more dimensions",
        "folder.tif": "not a file",
        "image.bmp": "unsupported file type",
        "missing.tif": "no such file",
    }


def test_bad_files_give_one_line_errors_naming_the_file(tmp_path):
    for name, reason in _bad_files(tmp_path).items():
        with pytest.raises(io.ImageReadError) as info:
            io.read_image(tmp_path / name)
        message = str(info.value)
        assert isinstance(info.value, ValueError)
        assert name in message and reason in message, message
        assert "\n" not in message and "Traceback" not in message


# --------------------------------------------------------------------------------------------
# to_cyx / select_channels


def test_to_cyx_needs_a_plane_for_stacks(tmp_path):
    data = _ramp((2, 3, 2, 8, 9), np.uint16, 1000)
    path = tmp_path / "tzc.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX", "Labels": ["a", "b"] * 6})
    image = io.read_image(path)
    with pytest.raises(ValueError, match=r"3 Z planes.*plane=\{'Z': k\}"):
        io.to_cyx(image, plane={"T": 0})
    with pytest.raises(ValueError, match="2 T planes"):
        io.to_cyx(image, plane={"Z": 0})
    with pytest.raises(ValueError, match=r"Z=3 is out of range.*0\.\.2"):
        io.to_cyx(image, plane={"T": 0, "Z": 3})
    with pytest.raises(ValueError, match="unknown axis C"):
        io.to_cyx(image, plane={"C": 0, "T": 0, "Z": 0})
    cyx, names = io.to_cyx(image, plane={"t": 1, "z": 2})
    np.testing.assert_array_equal(cyx, data[1, 2].astype(np.float32))
    assert cyx.dtype == np.float32 and cyx.flags.c_contiguous
    assert names == ["a", "b"]  # per-plane ImageJ labels repeating once per channel


def test_to_cyx_of_2d_and_channel_selection(tmp_path):
    data = _ramp((3, 8, 9), np.uint16, 500)
    path = tmp_path / "cyx.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "CYX", "Labels": ["DAPI", "GFP", "RFP"]})
    image = io.read_image(path)
    cyx, names = io.to_cyx(image, channels=["RFP", 0])
    assert names == ["RFP", "DAPI"]
    np.testing.assert_array_equal(cyx, data[[2, 0]].astype(np.float32))
    assert io.to_cyx(image, channels=["gfp"])[1] == ["GFP"]  # case-insensitive
    assert io.to_cyx(image, channels=["2"])[1] == ["RFP"]  # index typed on a CLI
    with pytest.raises(ValueError, match=r"no channel named 'CY5' \(0=DAPI, 1=GFP, 2=RFP\)"):
        io.to_cyx(image, channels=["CY5"])
    with pytest.raises(ValueError, match="index 3 is out of range: there are 3"):
        io.to_cyx(image, channels=[3])
    grey = io.ImageData(data=data[0], axes="YX", path="grey")
    cyx, names = io.to_cyx(grey)
    assert cyx.shape == (1, 8, 9) and names == ["ch0"]


def test_select_channels_errors():
    cyx = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="empty selection"):
        io.select_channels(cyx, ["a", "b"], [])
    with pytest.raises(ValueError, match="index -1 is out of range"):
        io.select_channels(cyx, ["a", "b"], [-1])
    with pytest.raises(ValueError, match="3 channel names for 2 channels"):
        io.select_channels(cyx, ["a", "b", "c"], None)
    out, names = io.select_channels(cyx, ["a", "b"], None)
    assert out is cyx and names == ["a", "b"]


# --------------------------------------------------------------------------------------------
# folders


def test_list_images_skips_hidden_system_and_other_files(tmp_path):
    for name in [
        "b.tif",
        "a.PNG",
        "c.ome.tiff",
        "d.jpeg",
        "._a.tif",
        ".hidden.tif",
        ".DS_Store",
        "Thumbs.db",
        "desktop.ini",
        "notes.txt",
        "model.safetensors",
    ]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.tif").mkdir()
    assert [p.name for p in io.list_images(tmp_path)] == ["a.PNG", "b.tif", "c.ome.tiff", "d.jpeg"]
    assert io.is_ignored(tmp_path / "._a.tif") and io.is_ignored("thumbs.db")
    assert not io.is_ignored("cells.tif")
    assert io.is_supported("x.OME.TIF") and not io.is_supported("x.czi")
    with pytest.raises(NotADirectoryError, match="b.tif"):
        io.list_images(tmp_path / "b.tif")


# --------------------------------------------------------------------------------------------
# real files (SOURCE.md tables in ../shared/data)

NEUBIAS = [
    # file, shape, axes, dtype, pixel size (µm) or None
    ("xy_calibrated_16bit__nuclear_protein_control.tif", (1192, 1192), "YX", "uint16", 1 / 8.832826),
    ("xy_8bit__nuclei_PLK1_control.tif", (682, 682), "YX", "uint8", 1 / 6.022167),
    ("xy_16bit__autophagosomes.tif", (182, 148), "YX", "uint16", None),
    ("xyc_16bit__hela-cells.tif", (512, 672, 3), "YXS", "uint16", 1 / 19.420064),
    ("xyc_16bit__cell_dna_mts_actin.tif", (3, 350, 350), "CYX", "uint16", 1 / 7.547649),
    ("xyc_16bit__nup_nuclei.tif", (2, 420, 476), "CYX", "uint16", None),
    ("xyc_8bit__tub_h2b_cecog_battery.tif", (2, 1040, 1392), "CYX", "uint8", None),
    ("xyzc_16bit__dna_conf_wf.tif", (45, 2, 130, 133), "ZCYX", "uint16", 1 / 1.953591),
    ("xyt_calibrated_16bit__golgi_bfa_sum_projection.tif", (30, 137, 147), "TYX", "float32", 1 / 2.845474),
    ("xy_16bit__rat_hippocampal_neuron.tif", (512, 512), "YX", "uint16", 0.16),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, shape, axes, dtype, pixel", NEUBIAS)
def test_neubias_files(shared_data, name, shape, axes, dtype, pixel):
    image = io.read_image(shared_data / "neubias" / "image_data" / name)
    assert image.data.shape == shape and image.axes == axes and image.data.dtype == dtype
    assert image.metadata["flavour"] == "imagej" and not image.rgb
    if pixel is None:
        assert image.pixel_size is None
    else:
        assert image.pixel_size == pytest.approx((pixel, pixel), rel=1e-5)
        assert image.unit == "µm"


@pytest.mark.slow
def test_neubias_hela_is_three_12bit_channels(shared_data):
    image = io.read_image(shared_data / "neubias" / "image_data" / "xyc_16bit__hela-cells.tif")
    assert image.n_channels == 3 and image.significant_bits == 12
    cyx, names = io.to_cyx(image)
    assert cyx.shape == (3, 512, 672) and names == ["ch0", "ch1", "ch2"]
    assert 2000 < cyx.max() < 4096
    for channel in range(3):
        lo, hi = io.contrast_limits(image, channel)
        assert lo < hi < 4096


@pytest.mark.slow
def test_neubias_zstack_and_time_series(shared_data):
    folder = shared_data / "neubias" / "image_data"
    stack = io.read_image(folder / "xyzc_16bit__dna_conf_wf.tif")
    assert stack.metadata["z_spacing"] == pytest.approx(0.4994126, rel=1e-5)
    assert stack.metadata["channel_colors"] == ["magenta", "green"]  # the file's ImageJ LUTs
    with pytest.raises(ValueError, match="45 Z planes"):
        io.to_cyx(stack)
    cyx, _ = io.to_cyx(stack, plane={"Z": 22})
    assert cyx.shape == (2, 130, 133)
    np.testing.assert_array_equal(cyx, np.asarray(stack.data[22], np.float32))
    movie = io.read_image(folder / "xyt_calibrated_16bit__golgi_bfa_sum_projection.tif")
    assert movie.significant_bits is None  # float data
    assert io.to_cyx(movie, plane={"T": 29})[0].shape == (1, 137, 147)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, shape, axes, names, pixel",
    [
        ("neocortex-3Ch.tiff", (3, 1112, 402), "CYX", ["CTIP2", "BRN2", "ROR"], 1.0),
        ("neuron-4Ch.tiff", (4, 623, 502), "CYX", ["AF647", "AF568", "AF488", "DAPI"], 0.1241),
        (
            "scratch-assay-labeled-10T-2Ch.tiff",
            (4, 10, 210, 576),
            "CTYX",
            ["H3342", "oblique", "nuclei", "cyto"],
            0.619,
        ),
    ],
)
def test_ndev_ome_tiffs(shared_data, name, shape, axes, names, pixel):
    image = io.read_image(shared_data / "ndev_ometiff" / "samples" / name)
    assert image.metadata["flavour"] == "ome"
    assert image.data.shape == shape and image.axes == axes and image.data.dtype == np.uint16
    assert image.channel_names == names
    assert image.pixel_size == pytest.approx((pixel, pixel)) and image.unit == "µm"
    plane = {"T": 0} if "T" in axes else None
    cyx, got = io.to_cyx(image, channels=[names[-1]], plane=plane)
    assert got == [names[-1]] and cyx.shape == (1,) + shape[-2:]


@pytest.mark.slow
def test_cellprofiler_fields(shared_data):
    fly = io.read_image(shared_data / "cellprofiler_examples" / "ExampleFly" / "images" / "01_POS002_D.TIF")
    assert fly.data.shape == (1006, 1000) and fly.data.dtype == np.uint8 and fly.axes == "YX"
    assert fly.pixel_size is None  # its 150 dpi tag is not a microscope pixel size
    speckles = io.read_image(
        shared_data / "cellprofiler_examples" / "ExampleSpeckles" / "images" / "1-162hrh2ax2.tif"
    )
    assert speckles.data.shape == (1000, 1200) and speckles.data.dtype == np.uint16
    assert speckles.significant_bits == 12  # "uint16 (12-bit data)"
    lo, hi = io.contrast_limits(speckles)
    assert lo < hi < 4096


@pytest.mark.slow
def test_mlcp_channel_names_from_imagej_labels(shared_data):
    folder = shared_data / "mlcp_cellcycle" / "G1"
    image = io.read_image(io.list_images(folder)[0])
    assert image.axes == "CYX" and image.data.shape == (3, 40, 40)
    assert image.channel_names == ["brightfield", "DNA", "darkfield"]


# --------------------------------------------------------------------------------------------
# bad input (issue 11): bombs, truncation, lying metadata, NaN — refused before allocation

import resource

import hostile  # tests/hostile.py: the hostile file generators


@pytest.fixture
def memory_cap():
    """Cap this process's address space near what it uses now: an allocation of the declared
    image (GiBs) would raise MemoryError, which read_image must never reach."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        used = int(handle.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + 2**30, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize(
    "make, declared",
    [
        (hostile.deflate_bomb_tiff, "100000 x 100000 uint16 (18.6 GiB)"),
        (hostile.tiled_bomb_tiff, "100000 x 100000 uint16 (18.6 GiB)"),
        (hostile.jpeg_bomb, "65500 x 65500 uint8 (4.0 GiB)"),
        (hostile.png_bomb, "100000 x 100000 x 3 uint8 (27.9 GiB)"),
    ],
)
def test_decompression_bombs_are_refused_before_allocation(tmp_path, memory_cap, make, declared):
    path = make(tmp_path)
    assert path.stat().st_size < 1000
    with pytest.raises(io.ImageReadError) as info:
        io.read_image(path)
    message = str(info.value)
    assert str(path) in message and declared in message and "\n" not in message


def test_jpeg_bomb_under_the_pixel_limit_is_refused_by_its_compression_ratio(tmp_path, memory_cap):
    path = hostile.jpeg_bomb(tmp_path, height=16000, width=16000)  # under MAX_PHOTO_PIXELS
    with pytest.raises(io.ImageReadError, match="decompression bomb"):
        io.read_image(path)


def test_truncated_jpeg_is_refused_like_a_truncated_tiff(tmp_path):
    good = io.read_image(hostile.good_jpeg(tmp_path))
    assert good.data.shape == (96, 96)
    with pytest.raises(io.ImageReadError, match="truncated.jpg: the JPEG is truncated"):
        io.read_image(hostile.truncated_jpeg(tmp_path))


def test_ome_declaring_more_planes_than_stored_is_refused_not_zero_filled(tmp_path):
    path = hostile.ome_more_planes_than_stored(tmp_path)
    with pytest.raises(io.ImageReadError, match="declares 5 planes .* stores only 2"):
        io.read_image(path)


def test_large_compressed_tiff_goes_lazy_by_its_decoded_size(tmp_path, monkeypatch):
    data = RNG.integers(0, 4000, (256, 512), dtype=np.uint16)  # 256 KiB decoded, real pixels
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, compression="zlib", tile=(64, 64))
    monkeypatch.setattr(io.limits, "LAZY_BYTES", 100_000)  # file < limit < decoded size
    assert path.stat().st_size > 100_000 / io.MAX_COMPRESSION_RATIO
    image = io.read_image(path)
    assert image.lazy and not isinstance(image.data, np.ndarray)
    np.testing.assert_array_equal(np.asarray(image.data[:64, :64]), data[:64, :64])
    cyx, _ = io.to_cyx(image)
    np.testing.assert_array_equal(cyx[0], data)


def test_field_larger_than_the_engine_limit_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "field.tif"
    tifffile.imwrite(path, np.zeros((2, 64, 64), np.uint16), imagej=True, metadata={"axes": "CYX"})
    image = io.read_image(path)
    monkeypatch.setattr(io.limits, "MAX_FIELD_VALUES", 2 * 64 * 64 - 1)
    with pytest.raises(io.ImageReadError, match=r"field.tif: one plane .* 8,192 values"):
        io.to_cyx(image)


def test_nan_pixels_are_refused_with_their_place(tmp_path):
    path = hostile.nan_tiff(tmp_path)
    image = io.read_image(path)  # napari may show it: NaN is drawn transparent
    with pytest.raises(io.ImageReadError, match=r"nan.tif: 8 pixel\(s\) are NaN .* y 5, x 10"):
        io.to_cyx(image)


def test_float64_beyond_float32_is_refused_without_a_numpy_warning(tmp_path):
    import warnings

    path = tmp_path / "f64.tif"
    tifffile.imwrite(path, np.full((16, 16), 1e300))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old cast warned "overflow"
        with pytest.raises(io.ImageReadError, match="f64.tif: pixel values up to 1e.300 are beyond"):
            io.to_cyx(io.read_image(path))


def test_z_stack_error_names_the_cli_option(tmp_path):
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint16), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(ValueError, match=r"--plane Z=k with k in 0..2"):
        io.to_cyx(io.read_image(path))


def test_ome_tiff_with_a_non_numeric_z_spacing_opens_with_the_spacing_unknown(tmp_path):
    """A malformed PhysicalSizeZ is unknown metadata, not a reason to refuse the pixels (it made
    read_image raise 'not a readable TIFF'); the XY pixel size is still read."""
    path = tmp_path / "stack.ome.tif"
    pixels = np.arange(3 * 32 * 32, dtype=np.uint16).reshape(3, 32, 32)
    metadata = {"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0}
    tifffile.imwrite(path, pixels, ome=True, metadata=metadata)
    raw = path.read_bytes()
    assert b'PhysicalSizeZ="2.0"' in raw
    path.write_bytes(raw.replace(b'PhysicalSizeZ="2.0"', b'PhysicalSizeZ="abc"'))
    image = io.read_image(path)
    assert image.axes == "ZYX" and image.pixel_size == (0.5, 0.5)
    assert "z_spacing" not in image.metadata
    assert np.array_equal(np.asarray(image.data), pixels)
