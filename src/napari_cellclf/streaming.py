"""Predict images larger than memory: read, classify and write them in bands. No Qt.

`predict_file_streaming(classifier, path, out_csv)` opens the image lazily (tifffile's zarr view
of a tiled or striped TIFF: only the chunks a band needs are read and decoded), cuts it into
bands of tile rows that span the whole width, classifies each band with the same engine as the
in-memory path, and appends its CSV rows to the output as it goes (one temporary file,
renamed over the target at the end: atomic). Peak memory is the band (bounded by
`BAND_BUDGET_BYTES` of normalised float32 pixels, at least one row of tiles) plus the model,
whatever the image height; the results of the tiles are written and dropped band by band.

Equal to the in-memory path: bands start on tile rows; each band reads the rows its tiles
cover plus, for dense evaluation (stride < tile), a halo of whole strides that covers the
network's receptive field, so every tile sees exactly the pixels it sees when the whole field is
in memory (reflect padding at the image border included). Dataset-mode normalisation is per
pixel, per-tile mode per tile: both are the same band by band. Not supported here:
foreground_only (its Otsu threshold is taken over the whole field).

`open_lazy(image)` says when a file read by io.read_image takes this path: io left it unread
(larger than io.limits.LAZY_BYTES) and it is a plain 2-D image with channels. `cellclf predict` and
`cellclf explain` then stream it (predict_image, explain_file_streaming) instead of converting
the whole field to float32 first, which is 2x the uint16 file in memory before any work.
"""

from __future__ import annotations

import csv
import io as io_module
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np

from .inference import InferenceProgress, PreparedField
from .tables import _csv_column
from .tiling import make_grid

BAND_BUDGET_BYTES = 64 * 2**20  # normalised float32 pixels of one band (plus its halo)


class LazyImage:
    """(C, Y, X) view of a TIFF's first series that reads only the rows asked for."""

    def __init__(self, path: str | Path):
        import tifffile
        import zarr

        self.path = Path(path)
        with tifffile.TiffFile(self.path) as tif:
            series = tif.series[0]
            self.axes = series.axes.upper()
            self.dtype = series.dtype
            shape = series.shape
        self._store = tifffile.imread(self.path, aszarr=True, series=0)
        # Any: zarr types a Group's keys as str, a tifffile pyramid's levels are indexed 0, 1, ...
        array: Any = zarr.open(self._store, mode="r")
        if hasattr(array, "shape") is False or isinstance(array, zarr.Group):
            array = array[0]  # pyramid: full resolution level
        self._array = array
        axes = self.axes
        if axes == "YX":
            self.shape = (1, *shape)
        elif axes in ("CYX", "SYX", "IYX", "QYX"):
            self.shape = tuple(shape)
        elif axes == "YXS":
            self.shape = (shape[2], shape[0], shape[1])
        else:
            raise ValueError(
                f"{self.path}: streaming reads 2-D images with channels (axes YX, "
                f"CYX or YXS), this one has axes {axes}"
            )
        self.channel_names = [f"ch{i}" for i in range(self.shape[0])]

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """(C, y1 - y0, X) array of image rows y0..y1."""
        if self.axes == "YX":
            return np.asarray(self._array[y0:y1])[np.newaxis]
        if self.axes == "YXS":
            return np.moveaxis(np.asarray(self._array[y0:y1]), -1, 0)
        return np.asarray(self._array[:, y0:y1])

    def close(self) -> None:
        self._store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_lazy(image) -> LazyImage | None:
    """A LazyImage of an io.ImageData that io left unread (io.limits.LAZY_BYTES) when streaming
    applies to it (a TIFF with axes YX, CYX or YXS, not an RGB photo); else None (the caller
    reads it whole: planes to choose, other layouts)."""
    if not getattr(image, "lazy", False) or getattr(image, "rgb", False) or not image.path:
        return None
    if Path(image.path).suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        lazy = LazyImage(image.path)
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    names = list(image.channel_names or [])[: lazy.shape[0]]
    if len(names) == lazy.shape[0]:
        lazy.channel_names = [str(name) for name in names]
    return lazy


def band_rows(classifier, width: int, stride: int, budget: int | None = None) -> int:
    """Tile rows per band so that a band's normalised float32 pixels fit the budget."""
    budget = BAND_BUDGET_BYTES if budget is None else budget
    per_row = classifier.in_channels * width * 4 * stride
    fixed = classifier.in_channels * width * 4 * classifier.tile_size
    return max(1, int((budget - fixed) // max(per_row, 1)) + 1)


def predict_streaming(
    classifier, image, stride: int | None = None, budget: int | None = None, channels: list[int] | None = None
) -> Generator[InferenceProgress | dict, None, int]:
    """Yields, band by band, the band's table (dict of columns, global tile indices) and
    InferenceProgress; returns the number of tiles. `image` has .shape (C, Y, X) and
    .rows(y0, y1); `channels` picks the model's channels from it."""
    from . import dense as dense_module

    _, height, width = image.shape
    size = classifier.tile_size
    grid = make_grid((height, width), size, stride, border="pad")
    stride = grid.stride
    halo_rows = 0
    if stride < size and dense_module.applies(classifier, stride):
        halo = classifier.dense_plan.halo
        halo_rows = -(-halo // stride)
    per_band = band_rows(classifier, width, stride, budget)
    total, done = grid.n_tiles, 0
    yield InferenceProgress(0, total)
    for r0 in range(0, grid.rows, per_band):
        r1 = min(grid.rows, r0 + per_band)
        first = max(0, r0 - halo_rows)  # tile row the band's pixels start at
        y0 = first * stride
        y1 = min(height, (r1 - 1 + halo_rows) * stride + size)
        pixels = image.rows(y0, y1)
        if channels is not None:
            pixels = pixels[channels]
        pixels = classifier.check_field(pixels)
        band_grid = make_grid(pixels.shape[1:], size, stride, border="pad")
        # Tiles of this band in the band grid's numbering (same columns as the global grid).
        local_rows = np.arange(r0 - first, r1 - first)
        if band_grid.cols != grid.cols or local_rows[-1] >= band_grid.rows:
            raise RuntimeError("band grid does not line up with the field grid")  # a bug
        local = (local_rows[:, None] * grid.cols + np.arange(grid.cols)[None, :]).ravel()
        field = (
            pixels if classifier.normalization.mode == "per_tile" else classifier.normalization.apply(pixels)
        )
        prepared = PreparedField(band_grid, local.astype(np.int64), field, classifier.normalization)
        prediction = _run(classifier, prepared)
        table = prediction.table()
        global_index = np.repeat(np.arange(r0, r1), grid.cols) * grid.cols + np.tile(
            np.arange(grid.cols), r1 - r0
        )
        rows, cols = grid.row_col(global_index)
        table.update(
            index=global_index + 1,  # 1-based, as FieldPrediction.table()
            row=rows.astype(np.int64),
            col=cols.astype(np.int64),
            y=(rows * stride).astype(np.int64),
            x=(cols * stride).astype(np.int64),
        )
        done += len(global_index)
        yield table
        yield InferenceProgress(done, total)
    return total


def predict_image(
    classifier, image, stride: int | None = None, channels: list[int] | None = None
) -> Generator[InferenceProgress, None, dict]:
    """predict_streaming collected into one table (the columns of FieldPrediction.table(), one
    row per tile: small next to the pixels); yields its InferenceProgress events."""
    parts: list[dict] = []
    run = predict_streaming(classifier, image, stride, channels=channels)
    while True:
        try:
            event = next(run)
        except StopIteration:
            break
        if isinstance(event, dict):
            parts.append(event)
        else:
            yield event
    return {key: np.concatenate([np.asarray(part[key]) for part in parts]) for key in parts[0]}


def _run(classifier, prepared):
    from ._generators import drive

    return drive(classifier.predict_prepared(prepared))


def predict_file_streaming(
    classifier,
    path: str | Path,
    out_csv: str | Path,
    stride: int | None = None,
    budget: int | None = None,
    channels: list[int] | None = None,
) -> int:
    """Stream one TIFF into a predictions CSV (same columns as write_predictions_csv with a
    source column); returns the number of tiles."""
    from ._files import atomic_write

    path = Path(path)
    count = 0

    def write(binary) -> None:
        nonlocal count
        text = io_module.TextIOWrapper(binary, newline="", encoding="utf-8")
        writer = csv.writer(text)
        header_written = False
        with LazyImage(path) as image:
            run = predict_streaming(classifier, image, stride, budget, channels)
            while True:
                try:
                    event = next(run)
                except StopIteration as finished:
                    count = finished.value
                    break
                if not isinstance(event, dict):
                    continue
                columns = {
                    "source": np.full(len(event["index"]), path.name, dtype=object),
                    **{k: np.asarray(v) for k, v in event.items()},
                }
                if not header_written:
                    writer.writerow(list(columns))
                    header_written = True
                writer.writerows(zip(*(_csv_column(v) for v in columns.values())))
                text.flush()
        text.detach()

    atomic_write(Path(out_csv), write)
    return count


# ------------------------------------------------------------------------------ explain

TIFF_TILE = 256  # side of the output BigTIFF's tiles (px)


def explain_streaming(
    classifier,
    image,
    target: int | None = None,
    stride: int | None = None,
    budget: int | None = None,
    channels: list[int] | None = None,
    method: str = "gradient_x_input",
    on_progress: Callable[[InferenceProgress], None] | None = None,
) -> Generator[np.ndarray, None, None]:
    """Yields the (H, W) float32 gradient x input map (or `method`, see attribution.attribute)
    in bands of whole TIFF_TILE rows, each
    equal to those rows of `attribution.explain_field` on the whole field: a band is explained
    from every tile that overlaps it (tiles straddling two bands are explained for both), so
    the overlap averages of `tiling.stitch_tile_maps` see the same tiles."""
    from ._generators import drive
    from .attribution import explain_field

    _, height, width = image.shape
    size = classifier.tile_size
    grid = make_grid((height, width), size, stride, border="pad")
    stride = grid.stride
    rows_per_band = max(1, band_rows(classifier, width, stride, budget) * stride // TIFF_TILE)
    band = rows_per_band * TIFF_TILE
    done = 0  # tiles explained (a tile straddling two bands counts twice)
    total = grid.n_tiles
    for y0 in range(0, height, band):
        y1 = min(height, y0 + band)
        first = max(0, -(-(y0 - size + 1) // stride))  # first tile row reaching y0
        last = min(grid.rows - 1, (y1 - 1) // stride)  # last tile row starting before y1
        region_y0 = first * stride
        region_y1 = min(height, last * stride + size)
        pixels = image.rows(region_y0, region_y1)
        if channels is not None:
            pixels = pixels[channels]
        stitched = drive(
            explain_field(classifier, pixels, target=target, stride=stride, method=method),
            None if on_progress is None else _shifted(on_progress, done, total),
        )
        done += (last - first + 1) * grid.cols
        yield stitched[y0 - region_y0 : y1 - region_y0]


def _shifted(on_progress: Callable[[InferenceProgress], None], offset: int, total: int):
    """A band's progress events as progress over the whole image."""

    def forward(event: InferenceProgress) -> None:
        on_progress(InferenceProgress(offset + event.done, max(total, offset + event.total), "explain"))

    return forward


def explain_file_streaming(
    classifier,
    path: str | Path,
    out_tiff: str | Path,
    target: int | None = None,
    stride: int | None = None,
    budget: int | None = None,
    channels: list[int] | None = None,
    method: str = "gradient_x_input",
    on_progress: Callable[[InferenceProgress], None] | None = None,
    pixel_size: tuple[float, float] | None = None,
) -> dict:
    """Gradient x input of a TIFF of any size into a tiled, zlib-compressed float32 BigTIFF,
    band by band (atomic: written beside the target, then renamed); `pixel_size` (y, x) in µm
    goes into the resolution tags. Returns {"shape", "min", "max"} of the map."""
    import tifffile

    from ._files import atomic_write

    path = Path(path)
    stats: dict[str, Any] = {"shape": (0, 0), "min": np.inf, "max": -np.inf}  # shape tuple, floats
    extra: dict = {}
    if pixel_size:
        extra = {
            "resolution": (1.0 / pixel_size[1], 1.0 / pixel_size[0]),
            "resolutionunit": tifffile.RESUNIT.MICROMETER,
        }

    def write(binary) -> None:
        with LazyImage(path) as image:
            _, height, width = image.shape
            stats["shape"] = (height, width)

            def tiles():
                bands = explain_streaming(
                    classifier, image, target, stride, budget, channels, method, on_progress
                )
                for band in bands:
                    if band.size:
                        stats["min"] = min(stats["min"], float(band.min()))
                        stats["max"] = max(stats["max"], float(band.max()))
                    for ty in range(0, band.shape[0], TIFF_TILE):
                        for tx in range(0, width, TIFF_TILE):
                            tile = np.zeros((TIFF_TILE, TIFF_TILE), dtype=np.float32)
                            part = band[ty : ty + TIFF_TILE, tx : tx + TIFF_TILE]
                            tile[: part.shape[0], : part.shape[1]] = part
                            yield tile

            with tifffile.TiffWriter(_Named(binary, path.name), bigtiff=True) as writer:
                writer.write(
                    tiles(),
                    shape=(height, width),
                    dtype=np.float32,
                    tile=(TIFF_TILE, TIFF_TILE),
                    compression="zlib",
                    photometric="minisblack",
                    **extra,
                )

    atomic_write(Path(out_tiff), write)
    return stats


class _Named:
    """The atomic writer's temporary file handle (named by a descriptor number) with a file
    name, which tifffile wants for its messages."""

    def __init__(self, handle, name: str):
        self._handle, self.name = handle, name

    def __getattr__(self, attribute):
        return getattr(self._handle, attribute)
