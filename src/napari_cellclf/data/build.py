"""Datasets from label images, whole images and class folders (`from_*`). No Qt."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import io
from ..tiling import (
    MAX_CLASSES,
    check_tile_size,
    extract_tiles,
    foreground_tiles,
    make_grid,
    tile_labels_from_label_image,
)
from .dataset import FOLDER_MODES, TileDataset, _dataset, check_label_values, short_list


def _field_cyx(image, source: str) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3:
        raise ValueError(f"{source}: expected a (C, Y, X) or (Y, X) image, got shape {array.shape}")
    return array


def _names_and_sources(n_images: int, n_channels: int, channel_names, sources):
    if channel_names is None:
        channel_names = [f"ch{c}" for c in range(n_channels)]
    if len(channel_names) != n_channels:
        raise ValueError(f"{len(channel_names)} channel names for {n_channels} channels")
    if sources is None:
        sources = [f"image {i}" for i in range(n_images)]
    if len(sources) != n_images:
        raise ValueError(f"{len(sources)} sources for {n_images} images")
    return [str(c) for c in channel_names], [str(s) for s in sources]


def _grid_for(shape, tile_size, stride, border, source):
    try:
        return make_grid(shape, tile_size, stride, border)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def _prepare_fields(images, channel_names, sources):
    """(C, Y, X) views of the fields, checked for one channel count; names and sources."""
    images = list(images)
    if not images:
        raise ValueError("no images given")
    tmp_sources = list(sources) if sources is not None else [f"image {i}" for i in range(len(images))]
    if len(tmp_sources) != len(images):
        raise ValueError(f"{len(tmp_sources)} sources for {len(images)} images")
    fields = [_field_cyx(image, source) for image, source in zip(images, tmp_sources)]
    for field_cyx, source in zip(fields, tmp_sources):  # NaN would poison every tile's loss
        io.check_finite(field_cyx, source, channel_names, error=ValueError)
    n_channels = fields[0].shape[0]
    for field_cyx, source in zip(fields, tmp_sources):
        if field_cyx.shape[0] != n_channels:
            raise ValueError(
                f"{source} has {field_cyx.shape[0]} channel(s) but "
                f"{tmp_sources[0]} has {n_channels}; all images need the same "
                "channels"
            )
    channel_names, sources = _names_and_sources(len(fields), n_channels, channel_names, tmp_sources)
    return fields, n_channels, channel_names, sources


def from_label_images(
    images: Sequence[np.ndarray],
    label_images: Sequence[np.ndarray],
    class_names: Sequence[str],
    tile_size: int,
    stride: int | None = None,
    min_fraction: float = 0.5,
    channel_names: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    border: str = "drop",
) -> TileDataset:
    """(C, Y, X) images + painted (Y, X) label images (value k = class_names[k-1]); unpainted
    tiles are skipped. Shape mismatch image/labels -> ValueError.

    `border` ("drop" | "pad") is passed to `tiling.make_grid` (an addition to the contract)."""
    fields, n_channels, channel_names, sources = _prepare_fields(images, channel_names, sources)
    label_images = list(label_images)
    if len(label_images) != len(fields):
        raise ValueError(f"{len(label_images)} label images for {len(fields)} images")
    if not class_names:
        raise ValueError("class_names is empty")
    for painted, source in zip(label_images, sources):
        check_label_values(painted, source, len(class_names))
    if len(class_names) > MAX_CLASSES:
        raise ValueError(
            f"{len(class_names):,} classes ({short_list(class_names)}); a model has at most {MAX_CLASSES}"
        )
    tiles, labels, groups, positions = [], [], [], []
    for group, (field_cyx, painted, source) in enumerate(zip(fields, label_images, sources)):
        painted = np.asarray(painted)
        if painted.shape != field_cyx.shape[1:]:
            raise ValueError(
                f"{source}: label image {painted.shape} does not match the image {field_cyx.shape[1:]} (Y, X)"
            )
        grid = _grid_for(field_cyx.shape[1:], tile_size, stride, border, source)
        try:
            tile_label = tile_labels_from_label_image(painted, grid, min_fraction)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        if tile_label.max(initial=0) > len(class_names):
            raise ValueError(
                f"{source}: label value {tile_label.max()} is painted but there are "
                f"only {len(class_names)} classes ({', '.join(class_names)})"
            )
        chosen = np.flatnonzero(tile_label)
        tiles.append(extract_tiles(field_cyx, grid, chosen))
        labels.append(tile_label[chosen] - 1)
        groups.append(np.full(len(chosen), group))
        positions.append(np.stack(grid.row_col(chosen), axis=1))
    return _dataset(
        tiles,
        labels,
        groups,
        positions,
        n_channels,
        tile_size,
        class_names,
        channel_names,
        sources,
        stride=stride,
    )


def from_whole_images(
    images: Sequence[np.ndarray],
    class_indices: Sequence[int],
    class_names: Sequence[str],
    tile_size: int,
    stride: int | None = None,
    foreground_channel: int | None = None,
    min_foreground: float = 0.05,
    channel_names: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    border: str = "drop",
) -> TileDataset:
    """The original method: every tile of images[i] is class class_indices[i] (0-based). With
    `foreground_channel`, background-only tiles are skipped.

    `border` ("drop" | "pad") is passed to `tiling.make_grid` (an addition to the contract)."""
    fields, n_channels, channel_names, sources = _prepare_fields(images, channel_names, sources)
    class_indices = list(class_indices)
    if len(class_indices) != len(fields):
        raise ValueError(f"{len(class_indices)} class indices for {len(fields)} images")
    tiles, labels, groups, positions = [], [], [], []
    for group, (field_cyx, class_index, source) in enumerate(zip(fields, class_indices, sources)):
        if not 0 <= int(class_index) < len(class_names):
            raise ValueError(
                f"{source}: class index {class_index} is out of range for "
                f"{len(class_names)} classes ({', '.join(class_names)})"
            )
        grid = _grid_for(field_cyx.shape[1:], tile_size, stride, border, source)
        if foreground_channel is None:
            chosen = np.arange(grid.n_tiles)
        else:
            try:
                chosen = np.flatnonzero(foreground_tiles(field_cyx, grid, foreground_channel, min_foreground))
            except ValueError as exc:
                raise ValueError(f"{source}: {exc}") from None
        tiles.append(extract_tiles(field_cyx, grid, chosen))
        labels.append(np.full(len(chosen), int(class_index)))
        groups.append(np.full(len(chosen), group))
        positions.append(np.stack(grid.row_col(chosen), axis=1))
    return _dataset(
        tiles,
        labels,
        groups,
        positions,
        n_channels,
        tile_size,
        class_names,
        channel_names,
        sources,
        stride=stride,
    )


class _TiffLog(logging.Handler):
    """Counts what tifffile logs: it warns (and reads what it can) on damaged files."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        self.count += 1


class _FolderReader:
    """Reads the images of one class folder as (C, Y, X) float32 with their channel names.

    `io.read_image` parses every tag and metadata flavour, about 1 ms per file; a folder of
    thousands of small crops would spend seconds on that. So io reads the first file of each
    layout (tifffile's series axes, shape, dtype and ImageJ channel labels) and, once a bare
    tifffile read of that file is checked to give the very same array, other plain/ImageJ TIFFs
    of that layout are read bare and converted with the first one's ImageData. Anything else —
    PNG/JPEG, OME, a new layout, anything tifffile warns about, any error — goes through io."""

    def __init__(self, channels, plane: dict[str, int] | None = None):
        self.channels = channels
        self.plane = plane  # io.to_cyx's choice of one Z/T plane
        self._layouts: dict[tuple, io.ImageData] = {}
        self._log = _TiffLog()

    def __enter__(self):
        logging.getLogger("tifffile").addHandler(self._log)
        return self

    def __exit__(self, *exc):
        logging.getLogger("tifffile").removeHandler(self._log)

    def _bare_tiff(self, path: Path):
        """(layout key, array) from a plain tifffile read, or None when io should read it."""
        import tifffile

        if path.suffix.lower() not in (".tif", ".tiff"):
            return None
        warnings_before = self._log.count
        try:
            with tifffile.TiffFile(path) as tif:
                if tif.is_ome or len(tif.series) != 1:
                    return None
                series = tif.series[0]
                if series.size * series.dtype.itemsize > io.LAZY_BYTES:
                    return None
                array = series.asarray()
                labels = (tif.imagej_metadata or {}).get("Labels") if tif.is_imagej else None
                key = (
                    series.axes,
                    array.shape,
                    array.dtype.str,
                    tif.is_imagej,
                    tuple(labels) if isinstance(labels, (list, tuple)) else labels,
                )
        except Exception:
            return None
        if self._log.count != warnings_before:
            return None
        return key, array

    def read(self, path: Path) -> tuple[np.ndarray, list[str]]:
        try:
            return self._read(path)
        except io.ImageReadError:
            raise  # already names the file
        except ValueError as error:  # e.g. a channel this image does not have
            raise ValueError(f"{path}: {error}") from None

    def _read(self, path: Path) -> tuple[np.ndarray, list[str]]:
        bare = self._bare_tiff(path)
        if bare is not None and bare[0] in self._layouts:
            image = dataclasses.replace(self._layouts[bare[0]], data=bare[1], path=str(path))
            return io.to_cyx(image, self.channels, plane=self.plane)
        image = io.read_image(path)
        if (
            bare is not None
            and isinstance(image.data, np.ndarray)
            and not image.lazy
            and image.data.shape == bare[1].shape
            and np.array_equal(image.data, bare[1])
        ):
            self._layouts[bare[0]] = dataclasses.replace(image, data=None)
        return io.to_cyx(image, self.channels, plane=self.plane)


def _resize_cyx(cyx: np.ndarray, tile_size: int) -> np.ndarray:
    if cyx.shape[1:] == (tile_size, tile_size):
        return cyx
    from skimage.transform import resize

    yxc = np.moveaxis(cyx, 0, -1)  # resize keeps trailing axes missing from output_shape
    resized = resize(yxc, (tile_size, tile_size), order=1, preserve_range=True, anti_aliasing=True)
    return np.moveaxis(resized, -1, 0).astype(np.float32)


def from_class_folders(
    root: str | Path,
    tile_size: int,
    mode: str = "resize",
    channels: Sequence[int | str] | None = None,
    stride: int | None = None,
    class_names: Sequence[str] | None = None,
    plane: dict[str, int] | None = None,
    only: Sequence[str] | None = None,
) -> TileDataset:
    """root/<class>/<image>: mode="resize" resizes each image to tile_size (like Keras
    flow_from_directory), mode="tile" slices it into tiles. Hidden files and stray entries are
    ignored (io.is_ignored / io.list_images); classes are the non-empty subfolders, sorted, unless
    `class_names` fixes the order (then folders not in it -> ValueError naming them; classes of
    `class_names` without a folder simply have no samples, for evaluating on part of the classes).
    Empty root / unreadable file / channel-count mismatch -> ValueError naming the path.

    `only`: read just these class folders (the user's pick); the others are left out.

    Each file is its own group (source). In "tile" mode partial tiles are dropped, and a file
    smaller than one tile is a ValueError naming it."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder (expected one subfolder per class)")
    if mode not in FOLDER_MODES:
        raise ValueError(f"mode must be one of {FOLDER_MODES}, got {mode!r}")
    tile_size = check_tile_size(tile_size)
    files_of = {}
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if folder.is_dir() and not io.is_ignored(folder):
            files = io.list_images(folder)
            if files:
                files_of[folder.name] = files
    if only is not None:
        files_of = {name: files for name, files in files_of.items() if name in set(only)}
    if not files_of:
        raise ValueError(
            f"{root}: no class subfolders with images in them (expected {root}/<class name>/<image files>)"
        )
    if class_names is None:
        class_names = sorted(files_of)
    else:
        class_names = [str(name) for name in class_names]
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names has duplicates: {class_names}")
        unknown = [name for name in files_of if name not in class_names]
        if unknown:
            raise ValueError(
                f"{root}: class folder(s) {', '.join(unknown)} are not among the "
                f"classes {', '.join(class_names)}"
            )

    tiles: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    sources: list[str] = []
    channel_names: list[str] = []
    with _FolderReader(channels, plane) as reader:
        for class_index, name in enumerate(class_names):
            for path in files_of.get(name, []):
                cyx, names = reader.read(path)
                if not sources:
                    channel_names, first_path = names, path
                elif len(names) != len(channel_names):
                    raise ValueError(
                        f"{path}: {len(names)} channel(s) but {first_path} has "
                        f"{len(channel_names)}; all images need the same channels"
                    )
                if mode == "resize":
                    found = _resize_cyx(cyx, tile_size)[np.newaxis]
                    where = np.zeros((1, 2), dtype=np.int64)
                else:
                    grid = _grid_for(cyx.shape[1:], tile_size, stride, "drop", path)
                    found = extract_tiles(cyx, grid)
                    where = np.stack(grid.row_col(np.arange(grid.n_tiles)), axis=1)
                tiles.append(found)
                labels.append(np.full(len(found), class_index))
                groups.append(np.full(len(found), len(sources)))
                positions.append(where)
                sources.append(str(path))
    return _dataset(
        tiles,
        labels,
        groups,
        positions,
        len(channel_names),
        tile_size,
        class_names,
        channel_names,
        sources,
        stride=stride if mode == "tile" else None,
    )
