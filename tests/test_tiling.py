"""Tiling on real pixel arrays: grids, extraction, label images -> tile labels, stitching."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellclf.tiling import (
    extract_tiles,
    foreground_tiles,
    make_grid,
    stitch_probabilities,
    stitch_tile_maps,
    tile_labels_from_label_image,
    tile_values_to_map,
)


def _field(shape=(37, 53), channels=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((channels, *shape)).astype(np.float32)


def _brute_cover(grid, indices=None):
    """Per-pixel list of covering tiles, by looping over tiles (the reference)."""
    height, width = grid.image_shape
    indices = np.arange(grid.n_tiles) if indices is None else indices
    count = np.zeros(grid._padded_shape())
    for n in indices:
        y0, x0 = grid.origins()[n]
        count[y0 : y0 + grid.tile_size, x0 : x0 + grid.tile_size] += 1
    return count[:height, :width]


@pytest.mark.parametrize("border", ["drop", "pad"])
@pytest.mark.parametrize("stride", [None, 5, 8])
def test_tiles_stitch_back_to_the_image_on_odd_sizes(border, stride):
    image = _field()
    grid = make_grid(image.shape[1:], 8, stride, border)
    tiles = extract_tiles(image, grid)
    assert tiles.shape == (grid.n_tiles, 3, 8, 8) and tiles.dtype == image.dtype
    # Tile n is the crop at its row-major grid origin.
    for n in (0, grid.cols - 1, grid.n_tiles // 2):
        y0, x0 = grid.origins()[n]
        row, col = grid.row_col(n)
        assert (y0, x0) == (row * grid.stride, col * grid.stride)
        crop = image[:, y0 : y0 + 8, x0 : x0 + 8]
        np.testing.assert_array_equal(tiles[n][:, : crop.shape[1], : crop.shape[2]], crop)
    stitched = stitch_tile_maps(tiles, grid)
    covered = _brute_cover(grid) > 0
    np.testing.assert_allclose(stitched[:, covered], image[:, covered], rtol=1e-6)
    assert np.all(stitched[:, ~covered] == 0)
    if border == "pad":
        assert covered.all()
    else:  # drop: exactly the whole tiles, nothing past the last one
        reach = ((grid.rows - 1) * grid.stride + 8, (grid.cols - 1) * grid.stride + 8)
        assert covered[: reach[0], : reach[1]].all() and not covered[reach[0] :].any()
        assert reach[0] > 37 - grid.stride and reach[1] > 53 - grid.stride


@pytest.mark.parametrize("shape", [(37, 53), (5, 3), (1, 9)])
def test_pad_border_tiles_reflect_like_np_pad(shape):
    image = _field(shape, channels=2)
    grid = make_grid(shape, 8, 6, "pad")
    padded_h, padded_w = grid._padded_shape()
    reference = np.pad(image, ((0, 0), (0, padded_h - shape[0]), (0, padded_w - shape[1])), mode="reflect")
    expected = np.stack([reference[:, y : y + 8, x : x + 8] for y, x in grid.origins()])
    np.testing.assert_array_equal(extract_tiles(image, grid), expected)
    # a chosen subset, in the order given
    np.testing.assert_array_equal(
        extract_tiles(image, grid, [grid.n_tiles - 1, 0]), expected[[grid.n_tiles - 1, 0]]
    )


def test_grid_counts_and_errors():
    grid = make_grid((37, 53), 8)
    assert (grid.rows, grid.cols, grid.stride) == (4, 6, 8)
    grid = make_grid((37, 53), 8, border="pad")
    assert (grid.rows, grid.cols) == (5, 7)
    grid = make_grid((37, 53), 8, 4, "drop")
    assert (grid.rows, grid.cols) == (8, 12)
    with pytest.raises(ValueError, match="smaller than one tile"):
        make_grid((5, 50), 8)
    for bad in (dict(tile_size=0), dict(tile_size=8, stride=0), dict(tile_size=8, border="wrap")):
        with pytest.raises(ValueError):
            make_grid((37, 53), **bad)
    with pytest.raises(ValueError, match="grid was made for"):
        extract_tiles(_field((30, 30)), grid)
    # a single-channel (Y, X) field is one channel
    assert extract_tiles(_field(channels=1)[0], make_grid((37, 53), 8)).shape[1] == 1


def test_overlapping_maps_and_probabilities_are_averaged():
    grid = make_grid((37, 53), 8, 3, "pad")
    rng = np.random.default_rng(1)
    chosen = np.flatnonzero(rng.random(grid.n_tiles) < 0.6)
    probabilities = rng.random((len(chosen), 4))
    maps = rng.random((len(chosen), 2, 8, 8)).astype(np.float32)
    total_p = np.zeros((4, *grid._padded_shape()))
    total_m = np.zeros((2, *grid._padded_shape()))
    for p, m, n in zip(probabilities, maps, chosen):
        y0, x0 = grid.origins()[n]
        total_p[:, y0 : y0 + 8, x0 : x0 + 8] += p[:, None, None]
        total_m[:, y0 : y0 + 8, x0 : x0 + 8] += m
    count = _brute_cover(grid, chosen)
    assert count.max() >= 4  # real overlap: up to ceil(8/3)**2 tiles per pixel
    with np.errstate(invalid="ignore"):
        mean_p = total_p[:, :37, :53] / count
        mean_m = total_m[:, :37, :53] / count
    stitched = stitch_probabilities(probabilities, grid, chosen)
    assert stitched.shape == (4, 37, 53) and stitched.dtype == np.float32
    np.testing.assert_allclose(stitched, mean_p, rtol=1e-5, equal_nan=True)
    assert np.isnan(stitched[:, count == 0]).all() and (count == 0).any()
    stitched_maps = stitch_tile_maps(maps, grid, chosen)
    np.testing.assert_allclose(stitched_maps, np.nan_to_num(mean_m), rtol=1e-5, atol=1e-6)
    # (N, T, T) maps give a (H, W) map
    assert stitch_tile_maps(maps[:, 0], grid, chosen).shape == (37, 53)
    # probabilities of a full grid are a partition of unity again after averaging
    full = rng.dirichlet(np.ones(3), grid.n_tiles)
    np.testing.assert_allclose(stitch_probabilities(full, grid).sum(axis=0), 1.0, rtol=1e-5)


def test_label_image_to_tile_labels_majority_and_minimum_fraction():
    labels = np.zeros((20, 40), dtype=np.uint8)
    labels[0:10, 0:6] = 1  # tile 0: 60 % class 1 ...
    labels[0:10, 6:8] = 2  # ... 20 % class 2 -> class 1
    labels[0:3, 10:20] = 3  # tile 1: 30 % painted -> 0 unless min_fraction <= 0.3
    labels[0:10, 21:22] = 2  # tile 2: 10 % class 2, 10 % class 1 -> tie goes to 1
    labels[0:10, 22:23] = 1
    labels[10:20, 0:10] = 2  # tile 4: fully class 2; tile 3, 5.. unpainted
    grid = make_grid(labels.shape, 10)
    np.testing.assert_array_equal(tile_labels_from_label_image(labels, grid, 0.5), [1, 0, 0, 0, 2, 0, 0, 0])
    np.testing.assert_array_equal(tile_labels_from_label_image(labels, grid, 0.3), [1, 3, 0, 0, 2, 0, 0, 0])
    np.testing.assert_array_equal(tile_labels_from_label_image(labels, grid, 0.0), [1, 3, 1, 0, 2, 0, 0, 0])
    # Sparse label values cost nothing special and come back unchanged.
    sparse = np.where(labels == 3, 60000, labels.astype(np.int32))
    assert tile_labels_from_label_image(sparse, grid, 0.3)[1] == 60000
    with pytest.raises(ValueError, match="grid was made for"):
        tile_labels_from_label_image(labels[:, :30], grid)
    with pytest.raises(ValueError, match="negative"):
        tile_labels_from_label_image(labels.astype(int) - 1, grid)


def test_label_image_matches_a_per_tile_reference_with_overlap_and_padding():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, (37, 53)) * (rng.random((37, 53)) < 0.7)
    grid = make_grid(labels.shape, 9, 4, "pad")
    expected = []
    for y0, x0 in grid.origins():
        tile = labels[y0 : y0 + 9, x0 : x0 + 9]  # the in-image part of the tile
        painted = tile[tile > 0]
        if painted.size == 0 or painted.size < 0.4 * tile.size:
            expected.append(0)
        else:
            expected.append(np.bincount(painted).argmax())
    np.testing.assert_array_equal(tile_labels_from_label_image(labels, grid, 0.4), expected)


def test_foreground_skips_the_empty_half():
    rng = np.random.default_rng(2)
    image = rng.normal(100, 3, (2, 64, 128)).astype(np.float32)  # camera background everywhere
    yy, xx = np.mgrid[:64, :64]
    for cy in (8, 24, 40, 56):  # one cell per 16 px tile of the left half
        for cx in (8, 24, 40, 56):
            image[1, :, :64] += 900 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0)
    grid = make_grid(image.shape[1:], 16)
    foreground = foreground_tiles(image, grid, channel=1).reshape(grid.rows, grid.cols)
    assert foreground[:, :4].all() and not foreground[:, 4:].any()
    # flat channel: nothing stands out
    assert not foreground_tiles(np.ones((1, 64, 128)), grid).any()
    # explicit threshold and fraction, against a per-tile count
    above = np.array([(image[1, y : y + 16, x : x + 16] > 500).mean() for y, x in grid.origins()])
    assert 0.3 < above.max() < 0.6
    for fraction in (0.1, 0.45, 0.6):
        np.testing.assert_array_equal(
            foreground_tiles(image, grid, 1, fraction, threshold=500), above >= fraction
        )
    assert not foreground_tiles(image, grid, 1, 0.6, threshold=500).any()
    with pytest.raises(ValueError, match="channel 5"):
        foreground_tiles(image, grid, channel=5)


def test_values_map_paints_nearest_tile_cells():
    grid = make_grid((37, 53), 8)
    values = np.arange(grid.n_tiles) + 1
    painted = tile_values_to_map(values, grid)
    expected = np.kron(values.reshape(grid.rows, grid.cols), np.ones((8, 8), int))
    np.testing.assert_array_equal(painted[:32, :48], expected)
    assert not painted[32:].any() and not painted[:, 48:].any()  # beyond the dropped border
    # subset + fill, float values
    part = tile_values_to_map(np.array([0.5]), grid, [7], fill=np.nan)
    assert np.isnan(part).sum() == 37 * 53 - 64 and (part[8:16, 8:16] == 0.5).all()
    # overlap: every pixel gets the covering tile with the nearest centre (its cell), and
    # tile_at agrees with the map
    grid = make_grid((37, 53), 8, 3, "pad")
    index_map = tile_values_to_map(np.arange(grid.n_tiles), grid, fill=-1)
    assert (index_map >= 0).all()
    row_centres = np.arange(grid.rows) * 3 + 3.5
    col_centres = np.arange(grid.cols) * 3 + 3.5
    for y, x in [(0, 0), (5, 17), (36, 52), (20, 30), (11, 1), (2, 50)]:
        n = index_map[y, x]
        row, col = grid.row_col(n)
        y0, x0 = grid.origins()[n]
        assert y0 <= y < y0 + 8 and x0 <= x < x0 + 8
        assert abs(y + 0.5 - row_centres[row]) == np.abs(y + 0.5 - row_centres).min()
        assert abs(x + 0.5 - col_centres[col]) == np.abs(x + 0.5 - col_centres).min()
        assert grid.tile_at(y, x) == n
    assert grid.tile_at(-1, 0) is None and grid.tile_at(0, 53) is None
    assert grid.tile_at(0.4, 0.4) == 0


def test_limits_agree_with_the_model():
    from napari_cellclf import model, tiling

    assert tiling.MIN_TILE_SIZE == model.MIN_TILE_SIZE
    assert tiling.MIN_TILE_SIZE < tiling.MAX_TILE_SIZE and tiling.MAX_CLASSES >= 2


def test_foreground_of_a_field_spanning_the_float32_range_has_no_warning():
    import warnings

    from napari_cellclf.tiling import foreground_tiles, make_grid

    field = np.full((1, 32, 32), -3e38, np.float32)
    field[0, :16] = 3e38
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = foreground_tiles(field, make_grid((32, 32), 16))
    assert mask.tolist() == [True, True, False, False]
