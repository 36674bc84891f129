"""Square tile grids over 2-D fields of view (numpy + scikit-image only).

- Tiles are indexed row-major: tile n sits at grid row n // cols, column n % cols, its top-left
  pixel at (row * stride, col * stride).
- border="drop": only tiles that fit whole; border="pad": partial tiles at the bottom/right are
  kept and padded (reflect) so every pixel is covered.
- Label images use napari's convention: 0 = unlabelled, k = class k (1-based). Tile labels
  returned here keep that convention (0 = unlabelled).

Two ideas keep this fast on big fields without a Python loop per pixel:
- Whole tiles are read through a strided `sliding_window_view`; only the few border tiles of a
  padded grid are padded one by one (never a padded copy of the whole field).
- Along each axis the set of tiles covering a pixel only changes at tile edges, so a field splits
  into a few blocks. Per-tile pixel counts (foreground, painted classes) are one bincount over
  those blocks; per-pixel averages of tile values are prefix sums over the grid, broadcast back
  to the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BORDERS = ("drop", "pad")

# The limits every face (CLI options, widget, model-file validator) reads from here
# (issue 11: without an upper bound, --tile-size 100000 ended in a 37 GiB MemoryError).
# Smallest tile the CNN takes: three 2x2 pools must leave at least 2x2 (model.py and training check it).
MIN_TILE_SIZE = 16
# Largest tile: a cell is tens of pixels across, and the original net's activations grow with
# the tile's area (512 px: ~0.4 GB per tile while training, 4,096 px would need 10 GB+).
MAX_TILE_SIZE = 512
# Most classes a model (and a label image) may have. A label image with more distinct values
# is nearly always an instance mask (one id per cell) given where class labels were meant.
MAX_CLASSES = 256


@dataclass(frozen=True)
class TileGrid:
    image_shape: tuple[int, int]  # (H, W) of the field
    tile_size: int
    stride: int
    border: str  # "drop" | "pad"
    rows: int
    cols: int

    @property
    def n_tiles(self) -> int:
        return self.rows * self.cols

    def origins(self) -> np.ndarray:
        """(n_tiles, 2) int array of (y0, x0), row-major."""
        rows, cols = self.row_col(np.arange(self.n_tiles))
        return np.stack([rows * self.stride, cols * self.stride], axis=1).astype(np.int64)

    def row_col(self, index) -> tuple[np.ndarray, np.ndarray]:
        """Grid row and column of tile index/indices."""
        index = np.asarray(index, dtype=np.int64)
        return np.divmod(index, self.cols)

    def tile_at(self, y: float, x: float) -> int | None:
        """Index of the tile whose non-overlapped cell contains pixel (y, x), None outside.

        (y, x) are pixel coordinates with integers at pixel centres (napari's data coordinates).
        A tile's cell is the set of pixels whose nearest tile centre is that tile's, so the cells
        of an overlapping grid tile the field without overlap; `tile_values_to_map` paints the
        same cells."""
        iy, ix = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
        height, width = self.image_shape
        if not (0 <= iy < height and 0 <= ix < width):
            return None
        row = _nearest_tile(np.array([iy]), self.rows, self.stride, self.tile_size)[0]
        col = _nearest_tile(np.array([ix]), self.cols, self.stride, self.tile_size)[0]
        if row < 0 or col < 0:
            return None
        return int(row * self.cols + col)

    def _padded_shape(self) -> tuple[int, int]:
        """Extent of the image and its tiles together (tiles stick out of a padded grid)."""
        return (
            max(self.image_shape[0], (self.rows - 1) * self.stride + self.tile_size),
            max(self.image_shape[1], (self.cols - 1) * self.stride + self.tile_size),
        )


def _count_along(length: int, tile_size: int, stride: int, border: str) -> int:
    if length <= tile_size:
        return 1 if (border == "pad" or length == tile_size) else 0
    if border == "drop":
        return (length - tile_size) // stride + 1
    # pad: enough tiles to reach the far edge, but never a tile starting outside the image
    # (with stride > tile_size the gaps between tiles stay uncovered anyway).
    return min(-(-(length - tile_size) // stride) + 1, -(-length // stride))


def check_tile_size(tile_size, minimum: int = 1, maximum: int | None = None) -> int:
    """The one tile-size rule: a whole number within minimum..maximum. The faces apply it with
    MIN_TILE_SIZE..MAX_TILE_SIZE (options.check_tile_size). ValueError otherwise."""
    if (
        isinstance(tile_size, (bool, np.bool_))
        or not isinstance(tile_size, (int, float, np.number))
        or int(tile_size) != tile_size
        or tile_size < minimum
        or (maximum is not None and tile_size > maximum)
    ):
        if maximum is not None:
            rule = f"an integer of {minimum}..{maximum} px"
        else:
            rule = "a positive integer" if minimum <= 1 else f"an integer of at least {minimum} px"
        raise ValueError(f"tile_size must be {rule}, got {tile_size!r}")
    return int(tile_size)


def check_stride(stride) -> int:
    """A whole number >= 1 (None, "same as the tile size", is the caller's to resolve)."""
    if (
        isinstance(stride, (bool, np.bool_))
        or not isinstance(stride, (int, float, np.number))
        or int(stride) != stride
        or stride < 1
    ):
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    return int(stride)


def make_grid(
    image_shape: tuple[int, int], tile_size: int, stride: int | None = None, border: str = "drop"
) -> TileGrid:
    """stride defaults to tile_size (no overlap). ValueError for tile_size < 1, stride < 1,
    unknown border, or an image smaller than one tile with border='drop'."""
    if len(image_shape) != 2:
        raise ValueError(f"image_shape must be (height, width), got {tuple(image_shape)}")
    height, width = (int(s) for s in image_shape)
    tile_size = check_tile_size(tile_size)
    stride = tile_size if stride is None else check_stride(stride)
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    if height < 1 or width < 1:
        raise ValueError(f"image_shape must be positive, got {(height, width)}")
    rows = _count_along(height, tile_size, stride, border)
    cols = _count_along(width, tile_size, stride, border)
    if rows == 0 or cols == 0:
        raise ValueError(
            f"the image ({height}x{width} px) is smaller than one tile "
            f"({tile_size} px) and border='drop'; use a smaller tile_size or "
            f"border='pad'"
        )
    return TileGrid((height, width), tile_size, stride, border, rows, cols)


def _as_cyx(image: np.ndarray, grid: TileGrid, name: str = "image_cyx") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:  # a single-channel field given as (Y, X)
        image = image[np.newaxis]
    if image.ndim != 3:
        raise ValueError(f"{name} must be (C, Y, X) or (Y, X), got shape {image.shape}")
    if tuple(image.shape[1:]) != tuple(grid.image_shape):
        raise ValueError(
            f"{name} is {image.shape[1]}x{image.shape[2]} px but the grid was made "
            f"for {grid.image_shape[0]}x{grid.image_shape[1]}"
        )
    return image


def _check_indices(indices, grid: TileGrid, n_values: int | None = None) -> np.ndarray:
    if indices is None:
        indices = np.arange(grid.n_tiles, dtype=np.int64)
    else:
        indices = np.asarray(indices)
        if indices.dtype == bool:
            if indices.shape != (grid.n_tiles,):
                raise ValueError(f"a boolean tile mask needs {grid.n_tiles} entries, got {indices.shape}")
            indices = np.flatnonzero(indices)
        indices = indices.astype(np.int64, copy=False).ravel()
        if indices.size and (indices.min() < 0 or indices.max() >= grid.n_tiles):
            raise ValueError(f"tile indices must be in 0..{grid.n_tiles - 1}")
    if n_values is not None and n_values != indices.size:
        raise ValueError(f"got values for {n_values} tiles but {indices.size} tile indices")
    return indices


def _tile_with_reflect(image: np.ndarray, y0: int, x0: int, size: int) -> np.ndarray:
    """One border tile, reflect-padded exactly as if the whole field had been np.pad-ded:
    the crop includes enough pixels before the tile for the reflection to see the same data."""
    height, width = image.shape[1:]
    pad_y, pad_x = max(0, y0 + size - height), max(0, x0 + size - width)
    before_y, before_x = min(y0, pad_y), min(x0, pad_x)
    crop = image[:, y0 - before_y : min(height, y0 + size), x0 - before_x : min(width, x0 + size)]
    padded = np.pad(crop, ((0, 0), (0, pad_y), (0, pad_x)), mode="reflect")
    return padded[:, before_y : before_y + size, before_x : before_x + size]


def extract_tiles(image_cyx: np.ndarray, grid: TileGrid, indices: np.ndarray | None = None) -> np.ndarray:
    """(N, C, T, T) array (same dtype) of the chosen tiles (all when indices is None)."""
    image = _as_cyx(image_cyx, grid)
    indices = _check_indices(indices, grid)
    size = grid.tile_size
    rows, cols = grid.row_col(indices)
    y0, x0 = rows * grid.stride, cols * grid.stride
    height, width = grid.image_shape
    whole = (y0 + size <= height) & (x0 + size <= width)
    if whole.any():
        # (Y', X', C, T, T) view of every window; fancy indexing copies just the chosen ones.
        windows = sliding_window_view(image, (size, size), axis=(1, 2)).transpose(1, 2, 0, 3, 4)
        if whole.all():
            return windows[y0, x0]
    out = np.empty((indices.size, image.shape[0], size, size), dtype=image.dtype)
    if whole.any():
        out[whole] = windows[y0[whole], x0[whole]]
    for n in np.flatnonzero(~whole):  # only the bottom/right border of a padded grid
        out[n] = _tile_with_reflect(image, int(y0[n]), int(x0[n]), size)
    return out


def _tile_value_counts(values: np.ndarray, n_values: int, grid: TileGrid) -> np.ndarray:
    """(n_tiles, n_values) int64: how many pixels of each tile (inside the image) hold each value
    of `values`, an (H, W) integer image in 0..n_values-1.

    One bincount over the field: pixels are counted per block of the band partition (blocks
    where the covering tiles do not change), then every tile is a rectangle of blocks, summed
    with four lookups in a prefix-sum table of the blocks."""
    height, width = grid.image_shape
    y_band, y_first, _ = _axis_bands(height, grid.rows, grid.stride, grid.tile_size)
    x_band, x_first, _ = _axis_bands(width, grid.cols, grid.stride, grid.tile_size)
    n_y, n_x = len(y_first), len(x_first)
    key = (y_band[:, None] * n_x + x_band[None, :]) * n_values + values
    blocks = np.bincount(key.ravel(), minlength=n_y * n_x * n_values)
    prefix = np.zeros((n_y + 1, n_x + 1, n_values), dtype=np.int64)
    prefix[1:, 1:] = blocks.reshape(n_y, n_x, n_values).cumsum(axis=0).cumsum(axis=1)
    y0, y1, x0, x1, _ = _tile_boxes(grid)
    y_lo, y_hi = y_band[y0], y_band[y1 - 1] + 1
    x_lo, x_hi = x_band[x0], x_band[x1 - 1] + 1
    return prefix[y_hi, x_hi] - prefix[y_lo, x_hi] - prefix[y_hi, x_lo] + prefix[y_lo, x_lo]


def _tile_boxes(grid: TileGrid) -> tuple[np.ndarray, ...]:
    """Every tile's box clipped to the image: y0, y1, x0, x1 and its in-image area."""
    origins = grid.origins()
    y0, x0 = origins[:, 0], origins[:, 1]
    y1 = np.minimum(y0 + grid.tile_size, grid.image_shape[0])
    x1 = np.minimum(x0 + grid.tile_size, grid.image_shape[1])
    return y0, y1, x0, x1, (y1 - y0) * (x1 - x0)


def foreground_tiles(
    image_cyx: np.ndarray,
    grid: TileGrid,
    channel: int = 0,
    min_fraction: float = 0.05,
    threshold: float | None = None,
) -> np.ndarray:
    """Bool (n_tiles,): tiles where at least `min_fraction` of pixels of `channel` are above
    `threshold` (default: Otsu on that channel). Lets training/inference skip empty background.

    The fraction is taken over the tile's pixels inside the image (padding is not counted).
    A flat channel has no foreground."""
    image = _as_cyx(image_cyx, grid)
    if not -image.shape[0] <= channel < image.shape[0]:
        raise ValueError(
            f"foreground channel {channel} does not exist; the image has {image.shape[0]} channel(s)"
        )
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be within 0..1, got {min_fraction}")
    plane = np.asarray(image[channel])
    if threshold is None:
        threshold = _otsu(plane)
        if threshold is None:  # flat channel: nothing stands out from the background
            return np.zeros(grid.n_tiles, dtype=bool)
    above = _tile_value_counts(plane > threshold, 2, grid)[:, 1]
    area = _tile_boxes(grid)[-1]
    return (above > 0) & (above >= min_fraction * area)


def _otsu(plane: np.ndarray) -> float | None:
    from skimage.filters import threshold_otsu

    finite = plane[np.isfinite(plane)] if plane.dtype.kind == "f" else plane
    # float64: a float32 field spanning +-3e38 overflows the histogram's bin width in float32.
    finite = finite.astype(np.float64, copy=False)
    # Otsu only needs the histogram; a regular subsample of a big field gives the same threshold.
    if finite.size > 2**20:
        finite = finite.ravel()[:: finite.size // 2**20]
    if finite.size == 0 or finite.min() == finite.max():
        return None
    return float(threshold_otsu(finite))


def tile_labels_from_label_image(labels: np.ndarray, grid: TileGrid, min_fraction: float = 0.5) -> np.ndarray:
    """int (n_tiles,) label per tile: the majority non-zero value among painted pixels if painted
    pixels cover at least `min_fraction` of the tile, else 0 (unlabelled).

    The fraction is taken over the tile's pixels inside the image; ties between classes go to the
    smaller label value; a tile with no painted pixel is always 0."""
    labels = np.asarray(labels)
    if labels.shape != tuple(grid.image_shape):
        raise ValueError(f"label image is {labels.shape} but the grid was made for {grid.image_shape}")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError("label image must hold whole numbers (0 = unlabelled, k = class k)")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iub":
        raise ValueError(f"label image must be integer, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("label image has negative values; use 0 = unlabelled, k = class k")
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be within 0..1, got {min_fraction}")
    labels = labels.astype(np.intp, copy=False)
    # Renumber the values present to 0 (unpainted), 1..m so sparse label values (e.g. 1 and
    # 60000) cost no more than 1 and 2.
    present = np.flatnonzero(np.bincount(labels.ravel()))
    present = present[present > 0]
    renumber = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.intp)
    renumber[present] = np.arange(1, len(present) + 1)
    counts = _tile_value_counts(renumber[labels], len(present) + 1, grid)[:, 1:]
    area = _tile_boxes(grid)[-1]
    painted = counts.sum(axis=1)
    winner = present[counts.argmax(axis=1)] if len(present) else np.zeros(grid.n_tiles, dtype=np.int64)
    keep = (painted > 0) & (painted >= min_fraction * area)
    return np.where(keep, winner, 0).astype(np.int64)


def _nearest_tile(pos: np.ndarray, n: int, stride: int, size: int) -> np.ndarray:
    """Along one axis: the tile whose centre is nearest each pixel, -1 where that tile (hence
    every tile) misses the pixel (beyond a dropped border, or a gap when stride > size)."""
    centre_offset = (size - 1) / 2.0
    nearest = np.clip(np.floor((pos - centre_offset) / stride + 0.5), 0, n - 1).astype(np.int64)
    start = nearest * stride
    return np.where((pos >= start) & (pos < start + size), nearest, -1)


def _cell_index_map(grid: TileGrid) -> np.ndarray:
    """(H, W) index of the tile whose cell holds each pixel, n_tiles where none does."""
    height, width = grid.image_shape
    rows = _nearest_tile(np.arange(height), grid.rows, grid.stride, grid.tile_size)
    cols = _nearest_tile(np.arange(width), grid.cols, grid.stride, grid.tile_size)
    index = rows[:, None] * grid.cols + cols[None, :]
    index[(rows < 0)[:, None] | (cols < 0)[None, :]] = grid.n_tiles
    return index


def tile_values_to_map(
    values: np.ndarray, grid: TileGrid, indices: np.ndarray | None = None, fill=0
) -> np.ndarray:
    """(H, W) map: each tile's value painted over its pixels (overlaps: later/centre tile wins —
    use `stitch_probabilities` for averaging). `indices` says which tiles `values` belong to.

    Each pixel takes the value of the tile with the nearest centre (its cell, see
    `TileGrid.tile_at`); pixels whose cell tile is not among `indices` get `fill`. Values of
    shape (N, ...) give (H, W, ...)."""
    values = np.asarray(values)
    indices = _check_indices(indices, grid, n_values=len(values))
    lookup = np.full((grid.n_tiles + 1,) + values.shape[1:], fill, dtype=np.result_type(values, fill))
    lookup[indices] = values
    return lookup[_cell_index_map(grid)]


def _axis_bands(length: int, n: int, stride: int, size: int):
    """Along one axis, split pixels into bands covered by the same range of tiles.
    Returns (band of each pixel, first tile of each band, last tile + 1 of each band)."""
    pos = np.arange(length)
    first = np.maximum(0, -((size - 1 - pos) // stride))  # ceil((pos - size + 1) / stride)
    stop = np.minimum(n, pos // stride + 1)
    stop = np.maximum(stop, first)  # uncovered: empty range
    key = first * (n + 1) + stop
    _, start_of_band, band = np.unique(key, return_index=True, return_inverse=True)
    return band.ravel(), first[start_of_band], stop[start_of_band]


def stitch_probabilities(
    probabilities: np.ndarray, grid: TileGrid, indices: np.ndarray | None = None
) -> np.ndarray:
    """(K, H, W) float32: per-pixel mean of the probabilities of every tile covering it; pixels
    covered by no chosen tile are NaN."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (N, K), got shape {probabilities.shape}")
    indices = _check_indices(indices, grid, n_values=len(probabilities))
    n_classes = probabilities.shape[1]
    rows, cols = grid.row_col(indices)
    # Sum and count of chosen tiles on the grid, then 2-D prefix sums over the grid: the sum over
    # any rectangle of tiles is four lookups.
    sums = np.zeros((grid.rows + 1, grid.cols + 1, n_classes + 1))
    np.add.at(sums, (rows + 1, cols + 1), np.concatenate([probabilities, np.ones((len(indices), 1))], axis=1))
    sums = sums.cumsum(axis=0).cumsum(axis=1)
    y_band, y_first, y_stop = _axis_bands(grid.image_shape[0], grid.rows, grid.stride, grid.tile_size)
    x_band, x_first, x_stop = _axis_bands(grid.image_shape[1], grid.cols, grid.stride, grid.tile_size)
    band_sums = (
        sums[y_stop][:, x_stop]
        - sums[y_first][:, x_stop]
        - sums[y_stop][:, x_first]
        + sums[y_first][:, x_first]
    )  # (bands_y, bands_x, K+1)
    count = band_sums[..., -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        band_means = np.where(count > 0, band_sums[..., :-1] / count, np.nan).astype(np.float32)
    band_means = np.ascontiguousarray(band_means.transpose(2, 0, 1))
    return band_means[:, y_band][:, :, x_band]


def stitch_tile_maps(maps: np.ndarray, grid: TileGrid, indices: np.ndarray | None = None) -> np.ndarray:
    """(N, T, T) or (N, C, T, T) per-tile maps -> (H, W) or (C, H, W) float32, overlaps averaged,
    uncovered pixels 0. Used for attribution maps."""
    maps = np.asarray(maps)
    squeeze = maps.ndim == 3
    if squeeze:
        maps = maps[:, np.newaxis]
    size = grid.tile_size
    if maps.ndim != 4 or maps.shape[2:] != (size, size):
        raise ValueError(
            f"maps must be (N, {size}, {size}) or (N, C, {size}, {size}), "
            f"got shape {maps.shape if not squeeze else maps.shape[::2]}"
        )
    indices = _check_indices(indices, grid, n_values=len(maps))
    padded_h, padded_w = grid._padded_shape()
    total = np.zeros((maps.shape[1], padded_h, padded_w), dtype=np.float32)
    count = np.zeros((padded_h, padded_w), dtype=np.float32)
    rows, cols = grid.row_col(indices)
    # One slice-add per tile: each is a contiguous block of T*T pixels, which numpy does far
    # faster than a scatter (np.add.at) of the same pixels.
    for n, y0, x0 in zip(range(len(indices)), rows * grid.stride, cols * grid.stride):
        total[:, y0 : y0 + size, x0 : x0 + size] += maps[n]
        count[y0 : y0 + size, x0 : x0 + size] += 1
    height, width = grid.image_shape
    total, count = total[:, :height, :width], count[:height, :width]
    np.divide(total, count, out=total, where=count > 0)
    return total[0] if squeeze else total
