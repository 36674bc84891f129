"""Datasets, normalisation and validation splits on real pixels and real files."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tifffile

from napari_cellclf import io
from napari_cellclf.data import (
    Normalization,
    TileDataset,
    check_trainable,
    concat_datasets,
    fit_normalization,
    from_class_folders,
    from_label_images,
    from_whole_images,
    split_train_val,
)


def _field(shape=(40, 56), channels=2, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((channels, *shape)).astype(np.float32) * 1000


def _write_cyx(path, array, names):
    tifffile.imwrite(path, array, imagej=True, metadata={"axes": "CYX", "Labels": names})


# ---------------------------------------------------------------------------------- (a)


def test_label_images_give_the_painted_tiles_with_their_pixels():
    images = [_field(seed=1), _field(seed=2)]
    painted = [np.zeros((40, 56), np.uint8), np.zeros((40, 56), np.uint8)]
    painted[0][0:8, 0:16] = 1  # tiles (0,0), (0,1) -> class 0
    painted[0][16:24, 40:48] = 2  # tile (2,5) -> class 1
    painted[0][30:32, 0:8] = 2  # 25 % of tile (3,0): below min_fraction, skipped
    painted[1][32:40, 48:56] = 1  # last tile of field 2
    ds = from_label_images(
        images,
        painted,
        ["cells", "debris"],
        tile_size=8,
        channel_names=["DNA", "GFP"],
        sources=["a.tif", "b.tif"],
    )
    assert len(ds) == 4 and ds.tiles.shape == (4, 2, 8, 8) and ds.tiles.dtype == np.float32
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 0])
    np.testing.assert_array_equal(ds.groups, [0, 0, 0, 1])
    np.testing.assert_array_equal(ds.positions, [[0, 0], [0, 1], [2, 5], [4, 6]])
    for tile, group, (row, col) in zip(ds.tiles, ds.groups, ds.positions):
        np.testing.assert_array_equal(tile, images[group][:, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8])
    assert ds.class_counts() == {"cells": 3, "debris": 1}
    assert ds.sources == ["a.tif", "b.tif"] and ds.channel_names == ["DNA", "GFP"]
    # a lower minimum fraction picks up the sparsely painted tile too
    assert len(from_label_images(images, painted, ["cells", "debris"], 8, min_fraction=0.25)) == 5
    # overlapping tiles (stride 4): more tiles, same pixels
    overlapping = from_label_images(images, painted, ["cells", "debris"], 8, stride=4)
    assert len(overlapping) > len(ds)
    with pytest.raises(ValueError, match="does not match"):
        from_label_images(images, [painted[0][:, :50], painted[1]], ["c", "d"], 8)
    with pytest.raises(ValueError, match="label value 2.*only 1 class"):
        from_label_images(images, painted, ["cells"], 8)
    with pytest.raises(ValueError, match="image 0.*smaller than one tile"):
        from_label_images(images, painted, ["cells", "debris"], 64)


# ---------------------------------------------------------------------------------- (b)


def test_whole_images_label_every_tile_and_can_skip_background():
    rng = np.random.default_rng(0)
    control = rng.normal(100, 3, (1, 32, 64)).astype(np.float32)
    control[0, :, :32] += 800 * (rng.random((32, 32)) < 0.5)  # cells on the left only
    treated = _field((32, 64), channels=1) + 2000
    ds = from_whole_images([control, treated], [0, 1], ["Control", "Treated"], tile_size=16)
    assert ds.class_counts() == {"Control": 8, "Treated": 8}
    np.testing.assert_array_equal(ds.groups, [0] * 8 + [1] * 8)
    skipped = from_whole_images([control, treated], [0, 1], ["Control", "Treated"], 16, foreground_channel=0)
    control_tiles = skipped.positions[skipped.groups == 0]
    assert sorted(map(tuple, control_tiles)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert (skipped.tiles[skipped.groups == 0, 0].mean(axis=(1, 2)) > 300).all()
    with pytest.raises(ValueError, match="class index 2"):
        from_whole_images([control], [2], ["Control", "Treated"], 16)
    with pytest.raises(ValueError, match="channel"):
        from_whole_images([control, _field((32, 64), channels=2)], [0, 1], ["C", "T"], 16)


# ---------------------------------------------------------------------------------- (c)


@pytest.fixture()
def class_root(tmp_path):
    """root/<class>/ with real ImageJ TIFFs and the usual litter."""
    rng = np.random.default_rng(5)
    names = ["DNA", "GFP", "BF"]
    pixels = {}
    (tmp_path / "mitotic").mkdir()
    (tmp_path / "interphase").mkdir()
    (tmp_path / "empty_class").mkdir()
    (tmp_path / ".hidden_class").mkdir()
    for i in range(3):
        array = rng.integers(0, 4000, (3, 16, 16), dtype=np.uint16)
        _write_cyx(tmp_path / "mitotic" / f"m{i}.tif", array, names)
        pixels[f"mitotic/m{i}.tif"] = array
    big = rng.integers(0, 4000, (3, 32, 32), dtype=np.uint16)  # resized 32 -> 16
    _write_cyx(tmp_path / "interphase" / "big.tif", big, names)
    pixels["interphase/big.tif"] = big
    # same layout but channels stored in another order: names must still pick the right plane
    swapped = rng.integers(0, 4000, (3, 16, 16), dtype=np.uint16)
    _write_cyx(tmp_path / "interphase" / "swapped.tif", swapped, ["BF", "GFP", "DNA"])
    pixels["interphase/swapped.tif"] = swapped
    _write_cyx(tmp_path / ".hidden_class" / "x.tif", big, names)
    _write_cyx(tmp_path / "mitotic" / "._m0.tif", big, names)
    (tmp_path / "mitotic" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "mitotic" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "mitotic" / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("stray file at the root")
    return tmp_path, pixels


def test_class_folders_ignore_litter_and_resize(class_root):
    root, pixels = class_root
    ds = from_class_folders(root, tile_size=16)
    assert ds.class_names == ["interphase", "mitotic"]
    assert ds.class_counts() == {"interphase": 2, "mitotic": 3}
    assert ds.channel_names == ["DNA", "GFP", "BF"] and ds.tiles.shape == (5, 3, 16, 16)
    assert len(set(ds.groups.tolist())) == 5 and not ds.positions.any()
    by_source = {src.replace("\\", "/").split(f"{root.name}/")[-1]: i for i, src in enumerate(ds.sources)}
    assert set(by_source) == set(pixels)
    np.testing.assert_array_equal(ds.tiles[by_source["mitotic/m1.tif"]], pixels["mitotic/m1.tif"])
    resized = ds.tiles[by_source["interphase/big.tif"]]
    big = pixels["interphase/big.tif"].astype(np.float64)
    assert resized.max() > 10  # preserve_range: intensities, not 0..1
    np.testing.assert_allclose(resized.mean(axis=(1, 2)), big.mean(axis=(1, 2)), rtol=0.05)
    # every sample equals what io reads (the fast TIFF path must not change a pixel)
    for source, i in by_source.items():
        if source != "interphase/big.tif":
            expected, _ = io.to_cyx(io.read_image(root / source))
            np.testing.assert_array_equal(ds.tiles[i], expected)


def test_class_folders_channels_by_name_order_and_tiles(class_root):
    root, pixels = class_root
    ds = from_class_folders(
        root, 16, channels=["DNA", "BF"], class_names=["mitotic", "interphase", "apoptotic"]
    )
    assert ds.channel_names == ["DNA", "BF"]
    assert ds.class_counts() == {"mitotic": 3, "interphase": 2, "apoptotic": 0}
    sources = [s.replace("\\", "/") for s in ds.sources]
    swapped = sources.index(next(s for s in sources if s.endswith("swapped.tif")))
    np.testing.assert_array_equal(ds.tiles[swapped][0], pixels["interphase/swapped.tif"][2])
    m0 = sources.index(next(s for s in sources if s.endswith("m0.tif")))
    np.testing.assert_array_equal(ds.tiles[m0][1], pixels["mitotic/m0.tif"][2])
    by_index = from_class_folders(root, 16, channels=[1])
    assert by_index.channel_names == ["GFP"]
    # tile mode: 8 px tiles, 4 from each 16 px crop, 16 from the 32 px one, grid positions kept
    tiled = from_class_folders(root, 8, mode="tile")
    assert tiled.class_counts() == {"interphase": 16 + 4, "mitotic": 12}
    first = tiled.sources.index(next(s for s in tiled.sources if s.endswith("m0.tif")))
    rows = tiled.groups == first
    np.testing.assert_array_equal(tiled.positions[rows], [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(tiled.tiles[rows][3], pixels["mitotic/m0.tif"][:, 8:, 8:])
    with pytest.raises(ValueError, match="interphase"):
        from_class_folders(root, 16, class_names=["mitotic"])
    with pytest.raises(ValueError, match="no channel named 'RFP'"):
        from_class_folders(root, 16, channels=["RFP"])


def test_class_folders_bad_input_names_the_path(tmp_path):
    with pytest.raises(ValueError, match="no class subfolders"):
        from_class_folders(tmp_path, 16)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write_cyx(tmp_path / "a" / "one.tif", np.ones((2, 16, 16), np.uint16), ["x", "y"])
    _write_cyx(tmp_path / "b" / "three.tif", np.ones((3, 16, 16), np.uint16), ["x", "y", "z"])
    with pytest.raises(ValueError, match="three.tif.*3 channel"):
        from_class_folders(tmp_path, 16)
    (tmp_path / "b" / "three.tif").unlink()
    (tmp_path / "b" / "broken.tif").write_bytes(b"II*\0 this is not a tiff")
    with pytest.raises(ValueError, match="broken.tif"):
        from_class_folders(tmp_path, 16)
    with pytest.raises(ValueError, match="not a folder"):
        from_class_folders(tmp_path / "missing", 16)
    with pytest.raises(ValueError, match="mode"):
        from_class_folders(tmp_path, 16, mode="crop")


# ---------------------------------------------------------------------------- datasets


def _tiny_dataset(labels, groups, positions=None, names=("a", "b", "c")) -> TileDataset:
    n = len(labels)
    positions = np.zeros((n, 2), np.int64) if positions is None else np.asarray(positions)
    return TileDataset(
        tiles=np.zeros((n, 1, 4, 4), np.float32),
        labels=np.asarray(labels, np.int64),
        groups=np.asarray(groups, np.int64),
        positions=positions,
        class_names=list(names),
        channel_names=["ch0"],
        sources=[f"f{g}" for g in range(max(groups) + 1)],
    )


def test_concat_matches_classes_by_name_and_renumbers_groups():
    first = _tiny_dataset([0, 1], [0, 1], names=("a", "b"))
    second = _tiny_dataset([0, 1, 1], [0, 0, 1], names=("b", "c"))
    merged = concat_datasets([first, second])
    assert merged.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(merged.labels, [0, 1, 1, 2, 2])
    np.testing.assert_array_equal(merged.groups, [0, 1, 2, 2, 3])
    assert merged.sources == ["f0", "f1", "f0", "f1"]
    assert merged.subset([3, 4]).class_counts() == {"a": 0, "b": 0, "c": 2}
    other = _tiny_dataset([0], [0])
    other.channel_names = ["x", "y"]
    with pytest.raises(ValueError, match="channels"):
        concat_datasets([first, other])


def test_check_trainable_says_what_is_missing():
    with pytest.raises(ValueError, match="No labelled tiles"):
        check_trainable(_tiny_dataset([], [0]))
    with pytest.raises(ValueError, match="at least two classes"):
        check_trainable(_tiny_dataset([0, 0, 0], [0, 1, 2]))
    with pytest.raises(ValueError, match="'c' \\(1\\)"):
        check_trainable(_tiny_dataset([0, 0, 1, 1, 2], [0, 1, 2, 3, 4]))
    check_trainable(_tiny_dataset([0, 0, 1, 1, 2, 2], [0, 1, 2, 3, 4, 5]))


# ------------------------------------------------------------------------- normalisation


def _two_brightness_classes():
    """Same texture, class 1 three times brighter (like DNA content in G1 vs G2)."""
    rng = np.random.default_rng(7)
    texture = rng.gamma(2.0, 50.0, (60, 2, 12, 12)).astype(np.float32)
    tiles = texture.copy()
    tiles[30:] *= 3
    return tiles, np.repeat([0, 1], 30)


def test_dataset_normalisation_keeps_brightness_and_per_tile_removes_it():
    tiles, labels = _two_brightness_classes()
    norm = fit_normalization(tiles)
    out = norm.apply(tiles)
    assert out.dtype == np.float32 and out.shape == tiles.shape
    dim, bright = out[labels == 0].mean(), out[labels == 1].mean()
    assert bright > 2.5 * dim  # ordering and ratio of brightness survive
    for c in range(2):  # training percentiles map to 0 and 1
        assert np.percentile(out[:, c], [1, 99.8]) == pytest.approx([0, 1], abs=1e-3)
    per_tile = fit_normalization(tiles, mode="per_tile").apply(tiles)
    means = per_tile.mean(axis=(1, 2, 3))
    assert abs(means[labels == 1].mean() - means[labels == 0].mean()) < 0.02
    # a field (C, Y, X) normalises with the same numbers as its tiles
    field = tiles[0]
    np.testing.assert_allclose(norm.apply(field), out[0], rtol=1e-6)
    with pytest.raises(ValueError, match="per_tile"):
        fit_normalization(tiles, mode="per_tile").apply(field)


def test_normalisation_round_trips_json_and_guards_flat_channels():
    tiles, _ = _two_brightness_classes()
    tiles[:, 1] = 7.0  # a flat channel
    norm = fit_normalization(tiles, percentiles=(2, 98))
    text = json.dumps(norm.to_dict())
    back = Normalization.from_dict(json.loads(text))
    assert back == norm and back.percentiles == (2.0, 98.0)
    out = back.apply(tiles)
    assert np.isfinite(out).all() and (out[:, 1] == 0).all()
    assert np.isfinite(Normalization([0.0], [0.0], mode="per_tile").apply(np.full((2, 1, 4, 4), 3.0))).all()
    with pytest.raises(ValueError, match="3 channel.*expects 2"):
        norm.apply(np.zeros((1, 3, 12, 12)))
    with pytest.raises(ValueError, match="low"):
        Normalization.from_dict({"high": [1.0]})
    with pytest.raises(ValueError, match="percentiles"):
        fit_normalization(tiles, percentiles=(99, 1))


# -------------------------------------------------------------------------------- splits


def _chebyshev_touching(ds, train, val):
    """Pairs (train, val) of tiles in one field closer than two grid steps."""
    touching = 0
    for v in val:
        same = train[ds.groups[train] == ds.groups[v]]
        distance = np.abs(ds.positions[same] - ds.positions[v]).max(axis=1)
        touching += int((distance <= 1).sum())
    return touching


def test_split_keeps_fields_whole_when_classes_have_several():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 10)  # 12 fields, 10 tiles each
    labels = np.where(groups < 6, 0, 1)
    labels[groups == 11] = 2  # class c: one field, see below
    positions = np.stack([rng.integers(0, 5, 120), rng.integers(0, 20, 120)], axis=1)
    positions[groups == 11] = np.stack(np.divmod(np.arange(10), 5), axis=1)  # 2x5 block
    ds = _tiny_dataset(labels, groups, positions)
    train, val = split_train_val(ds, 0.3, seed=1)
    assert not set(train) & set(val)
    for k in (0, 1):  # multi-field classes: no field on both sides
        assert not set(ds.groups[train][ds.labels[train] == k]) & set(ds.groups[val])
        assert 0 < (ds.labels[val] == k).sum() < (ds.labels == k).sum()
    assert (ds.labels[val] == 2).any() and (ds.labels[train] == 2).any()
    assert _chebyshev_touching(ds, train, val) == 0
    again = split_train_val(ds, 0.3, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), again))
    assert not np.array_equal(split_train_val(ds, 0.3, seed=2)[1], val)
    empty_train, empty_val = split_train_val(ds, 0.0)
    assert len(empty_val) == 0 and len(empty_train) == len(ds)


def test_split_holds_out_a_block_and_drops_its_neighbours_in_one_field():
    # One painted field, two classes side by side (like painting cells and background).
    image = _field((80, 96), channels=1)
    painted = np.zeros((80, 96), np.uint8)
    painted[:, :48] = 1
    painted[:, 48:] = 2
    ds = from_label_images([image], [painted], ["cells", "background"], 8)
    assert len(ds) == 120
    train, val = split_train_val(ds, 0.2, seed=0)
    assert not set(train) & set(val)
    for k in (0, 1):
        in_val = ds.positions[val][ds.labels[val] == k]
        assert len(in_val) >= 0.15 * 60 and (ds.labels[train] == k).sum() >= 30
        # a contiguous block of whole columns (or rows)
        cols = np.unique(in_val[:, 1])
        rows = np.unique(in_val[:, 0])
        contiguous = (np.ptp(cols) + 1 == len(cols) and len(in_val) == len(cols) * 10) or (
            np.ptp(rows) + 1 == len(rows) and len(in_val) == len(rows) * 6
        )
        assert contiguous, in_val
    assert _chebyshev_touching(ds, train, val) == 0
    assert len(train) + len(val) < len(ds)  # neighbours dropped, not reassigned
    for seed in range(5):
        t, v = split_train_val(ds, 0.2, seed=seed)
        assert _chebyshev_touching(ds, t, v) == 0 and set(ds.labels[v]) == {0, 1}


def test_split_never_empties_a_class_through_a_shared_field():
    # field 0: 3 tiles of a and the only 8 tiles of b; field 1: 8 tiles of a. Field 0 would fit
    # a's validation target exactly, but holding it out would leave b without training tiles,
    # so a is validated on field 1 and b on a block inside field 0.
    positions = [(0, c) for c in range(3)] + [(2, c) for c in range(8)] + [(0, c) for c in range(8)]
    labels = [0] * 3 + [1] * 8 + [0] * 8
    groups = [0] * 11 + [1] * 8
    ds = _tiny_dataset(labels, groups, positions, names=("a", "b"))
    for seed in range(6):
        train, val = split_train_val(ds, 0.25, seed=seed)
        assert set(ds.labels[val]) == {0, 1} and set(ds.labels[train]) == {0, 1}
        assert set(ds.groups[val][ds.labels[val] == 0]) == {1}
        assert _chebyshev_touching(ds, train, val) == 0


def test_split_does_not_send_most_of_a_class_out_with_one_big_field():
    # Like the two sample fields: field 0 holds all of b and a few a, field 1 holds most of a.
    # Holding field 1 out whole would take 80 of a's 100 tiles from training (target 20), so a
    # block of field 1 goes out instead and a keeps most of its tiles for training.
    pos0 = [(r, c) for r in range(5) for c in range(10)][:40]
    pos1 = [(r, c) for r in range(8) for c in range(10)]
    labels = [0] * 20 + [1] * 20 + [0] * 80
    groups = [0] * 40 + [1] * 80
    ds = _tiny_dataset(labels, groups, pos0 + pos1, names=("a", "b"))
    for seed in range(4):
        train, val = split_train_val(ds, 0.2, seed=seed)
        assert set(ds.labels[val]) == {0, 1}
        assert (ds.labels[val] == 0).sum() <= 2 * 20
        assert (ds.labels[train] == 0).sum() >= 50
        assert _chebyshev_touching(ds, train, val) == 0


# ------------------------------------------------------------------------------ real data


@pytest.mark.slow
def test_mlcp_cell_cycle_folders_load_quickly(shared_data):
    root = shared_data / "mlcp_cellcycle"
    start = time.perf_counter()
    ds = from_class_folders(root, 40)
    seconds = time.perf_counter() - start
    print(f"\nmlcp_cellcycle: {len(ds)} crops loaded in {seconds:.2f} s")
    # counts from SOURCE.md
    assert ds.class_counts() == {
        "Anaphase": 16,
        "G1": 899,
        "G2": 899,
        "Metaphase": 69,
        "Prophase": 606,
        "S_phase": 899,
        "Telophase": 28,
    }
    assert ds.tiles.shape == (3416, 3, 40, 40)
    assert ds.channel_names == ["brightfield", "DNA", "darkfield"]
    assert len(np.unique(ds.groups)) == 3416
    # the bare-TIFF path gives exactly what io gives
    for i in np.random.default_rng(0).choice(len(ds), 25, replace=False):
        expected, _ = io.to_cyx(io.read_image(ds.sources[i]))
        np.testing.assert_array_equal(ds.tiles[i], expected)
    # G2 cells hold twice the DNA of G1 cells: dataset statistics keep that difference
    norm = fit_normalization(ds.tiles)
    dna = norm.apply(ds.tiles)[:, 1].sum(axis=(1, 2))
    g1, g2 = ds.class_names.index("G1"), ds.class_names.index("G2")
    assert np.median(dna[ds.labels == g2]) > 1.3 * np.median(dna[ds.labels == g1])
    train, val = split_train_val(ds, 0.2, seed=0)
    assert set(ds.labels[val]) == set(range(7)) and not set(train) & set(val)


def test_split_with_overlapping_tiles_shares_no_pixel_across_sides():
    """Stride < tile: tiles several grid steps apart still overlap; none may straddle the split."""
    rng = np.random.default_rng(1)
    field = rng.random((1, 256, 512)).astype(np.float32)
    painted = np.ones((256, 512), np.uint8)
    painted[:, 256:] = 2  # one field, two classes side by side
    ds = from_label_images([field], [painted], ["a", "b"], tile_size=64, stride=16, border="drop")
    assert ds.stride == 16 and ds.overlap_reach == 4
    train, val = split_train_val(ds, val_fraction=0.2, seed=0)
    assert len(val) and len(train)
    origins = ds.positions * ds.stride  # top-left pixel of every tile
    for v in val:
        gap = np.abs(origins[train] - origins[v])
        assert not np.any((gap[:, 0] < 64) & (gap[:, 1] < 64)), "a training tile overlaps validation"
    assert set(ds.labels[val].tolist()) == {0, 1}


def test_class_folder_image_without_the_chosen_channel_is_named(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "x.tif", np.zeros((16, 16), np.uint16))
    with pytest.raises(ValueError, match=r"a[/\\]x\.tif: channel index 1 is out of range"):
        from_class_folders(tmp_path, 16, channels=[1])


def test_a_flat_training_channel_gives_a_normalisation_the_model_file_accepts():
    from napari_cellclf.modelfile.meta import _check_normalization

    tiles, _ = _two_brightness_classes()
    tiles[:, 1] = 7.0
    norm = fit_normalization(tiles)
    assert norm.low[1] == 7.0 and norm.high[1] > norm.low[1]
    _check_normalization(norm.to_dict(), 2)  # the loader refuses low >= high
    assert (norm.apply(tiles)[:, 1] == 0).all()  # still only shifted


def test_an_instance_mask_is_refused_up_front_with_a_short_message():
    from napari_cellclf.data import from_label_images
    from napari_cellclf.tiling import MAX_CLASSES

    image = np.random.default_rng(0).random((1, 96, 96)).astype(np.float32)
    cells = (np.arange(96 * 96).reshape(96, 96) // 9 + 1).astype(np.int32)  # 1,024 cell ids
    names = [f"class {k}" for k in range(1, int(cells.max()) + 1)]
    with pytest.raises(ValueError, match="instance mask") as info:
        from_label_images([image], [cells], names, 16, sources=["cells_labels.tif"])
    message = str(info.value)
    assert message.startswith("cells_labels.tif: 1,024 distinct label values") and len(message) < 400
    assert f"at most {MAX_CLASSES}" in message


def test_one_stray_label_value_gives_a_short_message():
    from napari_cellclf.data import from_label_images

    image = np.zeros((1, 64, 64), np.float32)
    labels = np.zeros((64, 64), np.int32)
    labels[:32], labels[32:] = 1, 2
    labels[5, 5] = 60_000
    for names in (["a", "b"], [f"class {k}" for k in range(1, 60_001)]):
        with pytest.raises(ValueError, match="label value 60000 has no class") as info:
            from_label_images([image], [labels], names, 16, sources=["f_labels.tif"])
        assert len(str(info.value)) < 300 and "values present: 1, 2, 60000" in str(info.value)


def test_check_trainable_refuses_too_many_classes_and_lists_a_few_not_all():
    from napari_cellclf.data import TileDataset, check_trainable
    from napari_cellclf.tiling import MAX_CLASSES

    for n in (MAX_CLASSES + 1, 5000):
        names = [f"class {k}" for k in range(1, n + 1)]
        dataset = TileDataset(
            np.zeros((4, 1, 16, 16), np.float32),
            np.array([0, 0, 1, 1]),
            np.zeros(4, np.int64),
            np.zeros((4, 2), np.int64),
            names,
            ["ch0"],
        )
        with pytest.raises(ValueError, match=f"at most {MAX_CLASSES}") as info:
            check_trainable(dataset)
        assert len(str(info.value)) < 300
