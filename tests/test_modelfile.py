"""The model file: round trip, refusal of pickles and damaged files, atomic saving."""

from __future__ import annotations

import json
import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import save as serialize

from napari_cellclf import _files, modelfile
from napari_cellclf.model import build_model
from napari_cellclf.modelfile import (
    ModelFileError,
    ModelMeta,
    default_class_colors,
    load_model,
    read_meta,
    save_model,
)


def make_meta(**changes) -> ModelMeta:
    values = dict(
        class_names=["Control", "Aggregates", "Débris"],
        class_colors=default_class_colors(3),
        channel_names=["nuclei", "protein"],
        tile_size=24,
        architecture="fast",
        normalization={
            "low": [100.0, 120.5],
            "high": [4000.0, 3000.0],
            "mode": "dataset",
            "percentiles": [1.0, 99.8],
        },
        channel_indices=[0, 2],
        history={"runs": [{"seed": 3, "val_accuracy": [0.5, 0.75]}], "warnings": []},
        seed=3,
        package_version="0.1.0",
        extra={"note": "test"},
    )
    values.update(changes)
    return ModelMeta(**values)


def make_model(meta: ModelMeta, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(meta.architecture, meta.in_channels, meta.n_classes, meta.tile_size).eval()


def write_raw(path, tensors, meta_dict) -> None:
    """A file built with safetensors directly, as a tamperer (or another program) would."""
    path.write_bytes(serialize(tensors, metadata={"cellclf": json.dumps(meta_dict)}))


def state(model):
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def test_round_trip_same_outputs_and_metadata(tmp_path):
    meta = make_meta()
    model = make_model(meta)
    x = torch.randn(6, 2, 24, 24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
    saved = save_model(tmp_path / "my model", model, meta)
    assert saved == tmp_path / "my model.safetensors"
    assert sorted(os.listdir(tmp_path)) == ["my model.safetensors"]
    loaded, loaded_meta = load_model(saved)
    assert not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-6)
    assert loaded_meta == meta
    assert read_meta(saved) == meta


def test_saving_a_channels_last_model_works(tmp_path):
    meta = make_meta(architecture="original")
    model = make_model(meta).to(memory_format=torch.channels_last)
    loaded, _ = load_model(save_model(tmp_path / "m.safetensors", model, meta))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_save_refuses_weights_that_do_not_match_the_metadata(tmp_path):
    meta = make_meta()
    wrong = build_model("fast", 2, 4, 24)  # 4 classes, metadata says 3
    with pytest.raises(ValueError, match="do not match"):
        save_model(tmp_path / "m", wrong, meta)
    with pytest.raises(ValueError, match="class_colors"):
        save_model(tmp_path / "m", make_model(meta), make_meta(class_colors=["red", "green", "blue"]))
    assert os.listdir(tmp_path) == []


class _Booby:
    """Unpickling this creates the marker file: proof that a loader executed pickled code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickles_are_refused_without_being_executed(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    if writer == "torch.save":
        torch.save({"weights": torch.zeros(3), "payload": _Booby(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"payload": _Booby(marker)}, protocol=4))
    with pytest.raises(ModelFileError, match="pickle") as info:
        load_model(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # Sanity check that the payload is live: a real unpickle does create the marker.
    pickle.loads(pickle.dumps(_Booby(marker)))
    assert marker.exists()


def test_truncated_file_refused(tmp_path):
    meta = make_meta()
    path = save_model(tmp_path / "m", make_model(meta), meta)
    data = path.read_bytes()
    for cut in (len(data) - 100, 200, 7, 0):
        broken = tmp_path / f"cut{cut}.safetensors"
        broken.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="truncated") as info:
            load_model(broken)
        assert str(broken) in str(info.value)


def test_header_tampering_refused(tmp_path):
    meta = make_meta()
    tensors = state(make_model(meta))

    bad_json = tmp_path / "bad_json.safetensors"
    bad_json.write_bytes(serialize(tensors, metadata={"cellclf": '{"class_names": ["a", '}))
    with pytest.raises(ModelFileError, match="not valid JSON") as info:
        load_model(bad_json)
    assert "bad_json.safetensors" in str(info.value)

    other_net = tmp_path / "shape.safetensors"  # weights of a 4-class net under 3-class metadata
    write_raw(other_net, state(build_model("fast", 2, 4, 24)), meta.to_dict())
    with pytest.raises(ModelFileError, match=r"shape \[4, 64\].*\[3, 64\]"):
        load_model(other_net)

    renamed = dict(tensors)
    renamed["evil.weight"] = renamed.pop("classifier.1.weight")
    wrong_names = tmp_path / "names.safetensors"
    write_raw(wrong_names, renamed, meta.to_dict())
    with pytest.raises(
        ModelFileError, match="missing tensors classifier.1.weight.*unexpected tensors evil.weight"
    ):
        load_model(wrong_names)

    d = meta.to_dict()
    del d["class_names"]
    missing_key = tmp_path / "missing.safetensors"
    write_raw(missing_key, tensors, d)
    with pytest.raises(ModelFileError, match="lacks class_names"):
        load_model(missing_key)

    no_meta = tmp_path / "plain.safetensors"
    no_meta.write_bytes(serialize(tensors))
    with pytest.raises(ModelFileError, match="no napari-cellclf metadata"):
        load_model(no_meta)

    for change, word in (
        (dict(tile_size=8), "tile_size"),
        (dict(architecture="vgg"), "architecture"),
        (dict(format_version=99), "newer"),
        (dict(normalization={"low": [0.0], "high": [1.0]}), "normalization low"),
        (dict(channel_indices=[0]), "channel_indices"),
    ):
        path = tmp_path / "changed.safetensors"
        write_raw(path, tensors, {**meta.to_dict(), **change})
        with pytest.raises(ModelFileError, match=word):
            load_model(path)

    nan = dict(tensors)
    nan["features.0.bias"] = torch.full_like(nan["features.0.bias"], float("nan"))
    nan_path = tmp_path / "nan.safetensors"
    write_raw(nan_path, nan, meta.to_dict())
    with pytest.raises(ModelFileError, match="NaN"):
        load_model(nan_path)


def test_byte_level_header_edit_refused(tmp_path):
    """Editing the shape in the raw header (as a hex editor would) breaks the offsets: refused."""
    meta = make_meta()
    path = save_model(tmp_path / "m", make_model(meta), meta)
    data = bytearray(path.read_bytes())
    (header_length,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + header_length].decode()
    entry = json.loads(header)["classifier.3.weight"]
    assert entry["shape"] == [3, 64]
    data[8 : 8 + header_length] = header.replace('"shape":[3,64]', '"shape":[2,64]').encode()
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=str(path.name)):
        load_model(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_model(tmp_path / "absent.safetensors")
    with pytest.raises(ModelFileError, match="not a file"):
        load_model(tmp_path)


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
def test_failed_save_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch, failing):
    meta = make_meta()
    path = save_model(tmp_path / "m", make_model(meta, seed=0), meta)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if failing == "write":
        # Half the bytes reach the temp file, then the disk fills up.
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, handle):
                self.handle = handle

            def write(self, payload):
                self.handle.write(payload[: len(payload) // 2])
                disk_full()

            def __getattr__(self, name):
                return getattr(self.handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

        monkeypatch.setattr(_files.os, "fdopen", lambda *a, **k: HalfWriter(real_fdopen(*a, **k)))
    else:
        monkeypatch.setattr(_files.os, failing, disk_full)
    with pytest.raises(OSError, match="No space"):
        save_model(path, make_model(meta, seed=1), meta)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.safetensors"]
    assert path.read_bytes() == before
    load_model(path)


def test_default_colors_distinct_and_valid():
    for n in (1, 2, 7, 20):
        colors = default_class_colors(n)
        assert len(colors) == n == len(set(colors))
        assert all(len(c) == 7 and c.startswith("#") for c in colors)
        int("".join(c[1:] for c in colors), 16)
    assert default_class_colors(2) == ["#e69f00", "#56b4e9"]  # Okabe-Ito first


def test_default_colors_stay_apart_for_many_classes():
    """From 8 classes on, two classes shared a yellow (#f0e442, #f2d055: CIELAB distance 13.5);
    every pair must differ about as much as the Okabe-Ito colours do among themselves (>= 26)."""
    import numpy as np
    from skimage.color import rgb2lab

    for n in (12, 20):
        rgb = np.array([[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in default_class_colors(n)])
        lab = rgb2lab(rgb[np.newaxis])[0]
        distance = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
        np.fill_diagonal(distance, np.inf)
        assert distance.min() >= 20, (n, distance.min())
        assert lab[:, 0].min() >= 45  # visible on napari's dark canvas


def test_saved_model_is_readable_by_others_like_any_new_file(tmp_path):
    """A model is meant to be shared: not mkstemp's owner-only 0600."""
    old = os.umask(0o022)
    try:
        meta = make_meta()
        path = save_model(tmp_path / "shared", make_model(meta, seed=0), meta)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------------------------
# hostile headers (issue 11)

import hostile  # tests/hostile.py
from napari_cellclf.tiling import MAX_CLASSES, MAX_TILE_SIZE


def _saved(tmp_path):
    meta = make_meta()
    return save_model(tmp_path / "m", make_model(meta), meta)


@pytest.mark.parametrize("tile", [30_000, 1_000_000, MAX_TILE_SIZE + 1])
def test_tile_size_above_the_limit_is_refused(tmp_path, tile):
    path = hostile.edit_model_header(_saved(tmp_path), lambda m: m.update(tile_size=tile))
    with pytest.raises(ModelFileError, match=f"tile_size must be an integer of 16..{MAX_TILE_SIZE} px"):
        read_meta(path)


def test_tile_size_edit_that_keeps_the_weight_shapes_is_caught_by_the_checksum(tmp_path):
    # "fast" at 24 px and at 256 px have identical weight shapes (adaptive pool to 3x3).
    path = hostile.edit_model_header(_saved(tmp_path), lambda m: m.update(tile_size=256))
    assert read_meta(path).tile_size == 256  # the header alone looks fine
    with pytest.raises(ModelFileError, match="do not match the checksum") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_a_flipped_byte_in_the_weights_is_caught(tmp_path):
    path = hostile.flip_weight_byte(_saved(tmp_path))
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(path)


def test_files_without_a_checksum_still_load(tmp_path):
    meta = make_meta()
    model = make_model(meta)
    path = tmp_path / "old.safetensors"
    write_raw(path, state(model), meta.to_dict())  # no checksum key: an older file
    loaded, _ = load_model(path)
    x = torch.randn(2, 2, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize(
    "low, high, word",
    [
        ([4000.0, 120.5], [100.0, 3000.0], "must be below"),  # low > high
        ([100.0, 120.5], [100.0, 3000.0], "must be below"),  # low == high
        ([-1e308, 120.5], [1e308, 3000.0], "beyond"),  # span overflows
        ([1e6, 120.5], [1e6 + 1e-4, 3000.0], "must be below"),  # equal in float32
    ],
)
def test_normalisation_that_maps_every_pixel_to_one_value_is_refused(tmp_path, low, high, word):
    path = hostile.edit_model_header(
        _saved(tmp_path), lambda m: m["normalization"].update(low=low, high=high)
    )
    with pytest.raises(ModelFileError, match=f"channel 0: .*{word}"):
        read_meta(path)


def test_deeply_nested_header_is_an_error_not_a_recursion_error(tmp_path):
    saved = _saved(tmp_path)
    for depth in (100_000, 200):
        path = hostile.deeply_nested_header(saved, depth, out=tmp_path / f"deep{depth}.safetensors")
        with pytest.raises(ModelFileError, match="nested"):
            load_model(path)
    nested_extra = hostile.edit_model_header(
        saved,
        lambda m: m.update(
            extra={"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
        ),
        out=tmp_path / "extra.safetensors",
    )
    with pytest.raises(ModelFileError, match="nested more than"):
        read_meta(nested_extra)


@pytest.mark.parametrize(
    "cli, word",
    [
        ("x", "extra.cli must be a JSON object"),
        ({"mode": 3}, "extra.cli.mode"),
        ({"stride": -4}, "extra.cli.stride"),
    ],
)
def test_extra_cli_record_is_validated(tmp_path, cli, word):
    path = hostile.edit_model_header(_saved(tmp_path), lambda m: m.update(extra={"cli": cli}))
    with pytest.raises(ModelFileError, match=word):
        read_meta(path)


def test_class_count_is_bounded():
    names = [f"c{i}" for i in range(MAX_CLASSES + 1)]
    with pytest.raises(ModelFileError, match=f"at most {MAX_CLASSES}"):
        ModelMeta.from_dict(
            {**make_meta().to_dict(), "class_names": names, "class_colors": default_class_colors(len(names))}
        )


def test_default_colors_return_for_thousands_of_classes():
    # The old golden-angle loop ran out of distinct 8-bit colours near 1,690 and never returned.
    for n in (1_700, 5_000):
        colors = default_class_colors(n)
        assert len(colors) == n == len(set(colors))
        assert all(modelfile.colors._HEX_COLOR.match(c) for c in colors)
