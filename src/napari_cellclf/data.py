"""Labelled tiles for training and evaluation, plus normalisation. No Qt.

- Class indices inside the engine are 0..K-1; label-image values are 1..K (0 = unlabelled).
- Every dataset carries `groups` (which field of view / file a tile came from) and the tile's
  grid position, so validation splits never share a field (or neighbouring tiles) across sides.
- Normalisation statistics come from training data and travel with the model; per-tile
  normalisation only when asked for (it destroys absolute-brightness signal).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence, get_args

import numpy as np

from . import io
from .tiling import (
    MAX_CLASSES,
    check_tile_size,
    extract_tiles,
    foreground_tiles,
    make_grid,
    tile_labels_from_label_image,
)

# The modes the engine itself needs are defined here, once; options.py and the faces refer to them.
FolderMode = Literal["resize", "tile"]  # class folders: one tile per image, or tiles of it
NormalizationMode = Literal["dataset", "per_tile"]
FOLDER_MODES: tuple[str, ...] = get_args(FolderMode)
NORMALIZATION_MODES: tuple[str, ...] = get_args(NormalizationMode)
# "Is this trainable": the one rule (check_trainable raises on it, the widget lists it).
MIN_TILES_PER_CLASS = 2  # the split needs one training and one validation tile per class
FEW_TILES_PER_CLASS = 20  # below this a class is learnt from too little: runs differ seed to seed
# Enough pixels for stable percentiles; more only costs time.
_PERCENTILE_SAMPLE = 2**20
# A whole field bigger than its class's validation target goes out only up to this many times
# the target; a bigger one (two sample fields: the diffuse one held 151 of 181 Control tiles)
# would take most of the class from training, so a block inside it is held out instead.
MAX_GROUP_OVERSHOOT = 2.0


@dataclass
class TileDataset:
    tiles: np.ndarray  # (N, C, T, T) float32, raw intensities (not normalised)
    labels: np.ndarray  # (N,) int64 in 0..K-1
    groups: np.ndarray  # (N,) int64: index into `sources`
    positions: (
        np.ndarray
    )  # (N, 2) int64 grid (row, col) of the tile in its source; (0, 0) for whole-image samples
    class_names: list[str]
    channel_names: list[str]
    sources: list[str] = field(default_factory=list)  # file path or layer name per group
    # Grid step in px between neighbouring positions; 0 = the tile size (no overlap). With overlap
    # a tile shares pixels with tiles up to ceil(tile / stride) steps away, which the split needs.
    stride: int = 0

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def tile_size(self) -> int:
        return int(self.tiles.shape[-1])

    @property
    def overlap_reach(self) -> int:
        """Grid steps within which two tiles of one field share pixels (1 = direct neighbours)."""
        if self.stride <= 0:
            return 1
        return max(1, -(-self.tile_size // self.stride))

    def class_counts(self) -> dict[str, int]:
        """Tiles per class name (every class listed, zero included)."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(counts[k]) for k, name in enumerate(self.class_names)}

    def subset(self, indices) -> "TileDataset":
        """The chosen tiles (indices or a boolean mask); classes, channels and sources unchanged,
        so groups keep pointing at the same sources."""
        indices = np.asarray(indices)
        if indices.dtype != bool:
            indices = indices.astype(np.int64, copy=False)
        return dataclasses.replace(
            self,
            tiles=self.tiles[indices],
            labels=self.labels[indices],
            groups=self.groups[indices],
            positions=self.positions[indices],
            class_names=list(self.class_names),
            channel_names=list(self.channel_names),
            sources=list(self.sources),
        )


def _dataset(
    tiles: list[np.ndarray],
    labels: list[np.ndarray],
    groups: list[np.ndarray],
    positions: list[np.ndarray],
    n_channels: int,
    tile_size: int,
    class_names: Sequence[str],
    channel_names: Sequence[str],
    sources: Sequence[str],
    stride: int | None = None,
) -> TileDataset:
    """Assemble per-source pieces (lists may be empty)."""

    def joined(parts, empty_shape, dtype):
        return (
            np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(empty_shape, dtype=dtype)
        )

    return TileDataset(
        tiles=joined(tiles, (0, n_channels, tile_size, tile_size), np.float32),
        labels=joined(labels, (0,), np.int64),
        groups=joined(groups, (0,), np.int64),
        positions=joined(positions, (0, 2), np.int64).reshape(-1, 2),
        class_names=list(class_names),
        channel_names=list(channel_names),
        sources=list(sources),
        stride=int(stride or 0),
    )


def concat_datasets(datasets: Sequence[TileDataset]) -> TileDataset:
    """Merge datasets; classes are matched by name (union, order of first appearance), groups
    renumbered. Channel names must agree in count -> ValueError otherwise."""
    datasets = list(datasets)
    if not datasets:
        raise ValueError("concat_datasets: no datasets given")
    first = datasets[0]
    class_names: list[str] = []
    for dataset in datasets:
        if len(dataset.channel_names) != len(first.channel_names):
            raise ValueError(
                f"cannot merge datasets with {len(first.channel_names)} and "
                f"{len(dataset.channel_names)} channels "
                f"({first.channel_names} vs {dataset.channel_names})"
            )
        if dataset.tiles.shape[2:] != first.tiles.shape[2:]:
            raise ValueError(
                f"cannot merge datasets with tile sizes {first.tiles.shape[-1]} and {dataset.tiles.shape[-1]}"
            )
        class_names += [name for name in dataset.class_names if name not in class_names]
    labels: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    sources: list[str] = []
    for dataset in datasets:
        to_merged = np.array([class_names.index(n) for n in dataset.class_names], dtype=np.int64)
        labels.append(to_merged[dataset.labels])
        groups.append(dataset.groups + len(sources))
        n_groups = max(len(dataset.sources), int(dataset.groups.max(initial=-1)) + 1)
        sources += list(dataset.sources) + [f"group {g}" for g in range(len(dataset.sources), n_groups)]
    return _dataset(
        [d.tiles for d in datasets],
        labels,
        groups,
        [d.positions for d in datasets],
        len(first.channel_names),
        first.tiles.shape[-1],
        class_names,
        first.channel_names,
        sources,
        stride=_finest_stride(datasets),
    )


def _finest_stride(datasets: Sequence[TileDataset]) -> int:
    """The merged dataset keeps the smallest stride: its overlap reach covers every part."""
    strides = [d.stride if d.stride > 0 else d.tile_size for d in datasets]
    return 0 if all(d.stride <= 0 for d in datasets) else min(strides)


@dataclass(frozen=True)
class Problem:
    """Why training would fail (`blocking`) or mislead; `message` is a user-facing sentence."""

    message: str
    blocking: bool = True


def trainability_problems(
    class_counts: Mapping[str, int], min_per_class: int = MIN_TILES_PER_CLASS, few: int = FEW_TILES_PER_CLASS
) -> list[Problem]:
    """The one rule for "is this trainable", on tiles per class name (every class listed)."""
    counts = {str(name): int(n) for name, n in class_counts.items()}
    if len(counts) > MAX_CLASSES:  # an instance mask taken for classes, say (training would hang)
        return [
            Problem(f"{len(counts):,} classes ({short_list(counts)}); a model has at most {MAX_CLASSES}.")
        ]
    if sum(counts.values()) == 0:
        return [
            Problem(
                "No labelled tiles yet: label some (a painted tile needs at least the "
                "minimum painted fraction), or use a smaller tile size."
            )
        ]
    problems = []
    with_tiles = [name for name, n in counts.items() if n > 0]
    if len(with_tiles) < 2:
        problems.append(
            Problem(
                f"Only one class ({with_tiles[0]!r}) has labelled tiles: "
                f"training needs tiles of at least two classes "
                f"(classes: {short_list(counts)})."
            )
        )
    else:
        too_few = [f"'{name}' ({n})" for name, n in counts.items() if n < min_per_class]
        if too_few:
            problems.append(
                Problem(
                    f"Every class needs at least {min_per_class} tiles; too few "
                    f"for {short_list(too_few)}. Label more, or remove the class."
                )
            )
    low = [f"{name} ({n})" for name, n in counts.items() if min_per_class <= n < few]
    if low:
        problems.append(
            Problem(
                f"Few tiles for {short_list(low)}: the model will learn little "
                "and its validation accuracy will be noisy.",
                blocking=False,
            )
        )
    return problems


def check_trainable(dataset: TileDataset, min_per_class: int = MIN_TILES_PER_CLASS) -> None:
    """ValueError with the user-facing message of the first blocking `trainability_problems`:
    no tiles; fewer than two classes with tiles; a class with fewer than `min_per_class` tiles."""
    for problem in trainability_problems(dataset.class_counts(), min_per_class):
        if problem.blocking:
            raise ValueError(problem.message)


def short_list(values, limit: int = 6) -> str:
    """ "a, b, c, … (60000 in all)": messages name a few items, never all of them (one stray
    label value used to produce a 2 MB error line)."""
    values = [str(v) for v in values]
    if len(values) <= limit:
        return ", ".join(values)
    return ", ".join(values[: limit - 1]) + f", … {values[-1]} ({len(values)} in all)"


def label_values(labels: np.ndarray) -> np.ndarray:
    """The distinct non-zero values of a label image, sorted (sparse values cost nothing)."""
    labels = np.asarray(labels)
    values = np.unique(labels)
    return values[values != 0]


def check_label_values(labels: np.ndarray, source: str, n_classes: int | None = None) -> np.ndarray:
    """The distinct class values of one label image, or ValueError with a short message: more
    distinct values than MAX_CLASSES (an instance mask: one id per cell), a value above
    MAX_CLASSES, or one above `n_classes` when the classes are known."""
    values = label_values(labels)
    if len(values) > MAX_CLASSES:
        raise ValueError(
            f"{source}: {len(values):,} distinct label values ({short_list(values)}): this looks "
            "like an instance mask (one id per cell), not class labels. A label image holds class "
            f"numbers 1..K (K at most {MAX_CLASSES}; 0 = unlabelled); paint the classes, or sort "
            "cells into one folder per class"
        )
    top = int(values[-1]) if len(values) else 0
    limit = MAX_CLASSES if n_classes is None else min(n_classes, MAX_CLASSES)
    if top > limit:
        named = (
            f"the largest class number is {MAX_CLASSES}"
            if n_classes is None or n_classes > MAX_CLASSES
            else f"there are only {n_classes} classes"
        )
        raise ValueError(
            f"{source}: label value {top} has no class ({named}); values present: {short_list(values)}"
        )
    return values


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


@dataclass
class Normalization:
    """Per-channel affine map (x - low) / (high - low), statistics from the training data.
    mode="per_tile" instead computes low/high on each tile at apply time."""

    low: list[float]
    high: list[float]
    mode: str = "dataset"  # "dataset" | "per_tile"
    percentiles: tuple[float, float] = (1.0, 99.8)

    def __post_init__(self):
        if self.mode not in NORMALIZATION_MODES:
            raise ValueError(f"normalization mode must be one of {NORMALIZATION_MODES}, got {self.mode!r}")
        self.low = [float(v) for v in np.ravel(self.low)]
        self.high = [float(v) for v in np.ravel(self.high)]
        if len(self.low) != len(self.high) or not self.low:
            raise ValueError(
                f"normalization needs one low and one high per channel, got "
                f"{len(self.low)} and {len(self.high)}"
            )
        if not all(np.isfinite(self.low + self.high)):
            raise ValueError("normalization low/high values must be finite numbers")
        self.percentiles = _check_percentiles(self.percentiles)

    @property
    def n_channels(self) -> int:
        return len(self.low)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """float32 normalised copy of (N, C, T, T) tiles or a (C, Y, X) field (dataset mode).
        Channel count mismatch -> ValueError.

        A flat channel (high == low) is only shifted, never divided by zero. per_tile mode needs
        (N, C, T, T) tiles: normalising a whole field per tile would be a silent mistake."""
        array = np.asarray(array)
        if array.ndim not in (3, 4):
            raise ValueError(f"normalise (N, C, T, T) tiles or a (C, Y, X) field, got shape {array.shape}")
        channel_axis = array.ndim - 3
        if array.shape[channel_axis] != self.n_channels:
            raise ValueError(
                f"the data has {array.shape[channel_axis]} channel(s) but the "
                f"normalisation (and model) expects {self.n_channels}"
            )
        if self.mode == "dataset":
            shape = (-1, 1, 1)
            low = np.asarray(self.low, dtype=np.float32).reshape(shape)
            span = np.asarray(self.high, dtype=np.float32).reshape(shape) - low
        else:
            if array.ndim != 4:
                raise ValueError(
                    "per_tile normalisation applies to (N, C, T, T) tiles; cut the field into tiles first"
                )
            if len(array) == 0:
                return array.astype(np.float32)
            rows = array.reshape(array.shape[0] * array.shape[1], -1)  # one row per tile channel
            low, high = np.percentile(rows, self.percentiles, axis=1).astype(np.float32)
            low, high = (v.reshape(array.shape[0], array.shape[1], 1, 1) for v in (low, high))
            span = high - low
        scale = np.divide(1.0, span, out=np.ones_like(span), where=span > 0)
        out = np.subtract(array, low, dtype=np.float32)
        out *= scale
        return out

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "low": [float(v) for v in self.low],
            "high": [float(v) for v in self.high],
            "percentiles": [float(p) for p in self.percentiles],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        if not isinstance(d, dict):
            raise ValueError(f"normalization must be a mapping, got {type(d).__name__}")
        missing = [key for key in ("low", "high") if key not in d]
        if missing:
            raise ValueError(f"normalization is missing {', '.join(missing)}")
        return cls(
            low=list(d["low"]),
            high=list(d["high"]),
            mode=d.get("mode", "dataset"),
            percentiles=tuple(d.get("percentiles", (1.0, 99.8))),
        )


def _check_percentiles(percentiles) -> tuple[float, float]:
    try:
        low, high = (float(p) for p in percentiles)
    except (TypeError, ValueError):
        raise ValueError(f"percentiles must be two numbers (low, high), got {percentiles!r}") from None
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
    return low, high


def fit_normalization(
    tiles: np.ndarray, mode: str = "dataset", percentiles: tuple[float, float] = (1.0, 99.8)
) -> Normalization:
    """Per-channel low/high percentiles over all training tiles (subsampled for speed).

    Up to 2**20 pixels per channel are used as they are; beyond that a fixed-seed random sample
    of that many, so the same tiles always give the same statistics."""
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or len(tiles) == 0:
        raise ValueError(f"fit_normalization needs (N, C, T, T) tiles with N > 0, got shape {tiles.shape}")
    if mode not in NORMALIZATION_MODES:
        raise ValueError(f"normalization mode must be one of {NORMALIZATION_MODES}, got {mode!r}")
    percentiles = _check_percentiles(percentiles)
    n, n_channels = tiles.shape[:2]
    per_tile = tiles.shape[2] * tiles.shape[3]
    if n * per_tile > _PERCENTILE_SAMPLE:
        rng = np.random.default_rng(0)
        tile = rng.integers(0, n, _PERCENTILE_SAMPLE)
        pixel = rng.integers(0, per_tile, _PERCENTILE_SAMPLE)
        flat = np.ravel(tiles)  # flat index of (tile, channel, pixel): 1-D takes are fast
        sample = np.stack(
            [np.take(flat, (tile * n_channels + c) * per_tile + pixel) for c in range(n_channels)]
        )  # (C, S)
    else:
        sample = np.moveaxis(tiles, 1, 0).reshape(n_channels, -1)
    low, high = np.percentile(sample.astype(np.float64), percentiles, axis=1)
    # A flat channel (or one whose span float32 cannot resolve): widen it so that the model file
    # never holds low >= high, which the loader refuses. `apply` only shifts such a channel
    # either way (scale 1 for a span of 0 or of 1).
    span = high.astype(np.float32) - low.astype(np.float32)
    flat = ~(span > 1e-6 * np.maximum(np.abs(low), np.abs(high)))
    high = np.where(flat, low + np.maximum(1.0, 1e-3 * np.abs(low)), high)
    return Normalization(low=low.tolist(), high=high.tolist(), mode=mode, percentiles=percentiles)


def split_train_val(
    dataset: TileDataset, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx). Per class: when the class's tiles come from >= 2 groups, whole groups
    go to validation; when from one group, a contiguous block of grid columns/rows goes to
    validation and tiles adjacent to that block (8-neighbourhood) are dropped from both sides.
    Every class with >= 2 tiles gets at least one validation tile. val_fraction=0 -> empty val.

    A group held out goes out whole (tiles of every class in it), only when every class in it
    keeps training tiles elsewhere and it holds at most MAX_GROUP_OVERSHOOT x the class's target. A class with >= 2 groups for which no group can go out that
    way (each of its fields also holds the only tiles of another class) falls back to a block
    held out inside one of its fields. Blocks sit at one end of the class's tiles (fewest
    neighbours to drop). Deterministic for a seed."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be within [0, 1), got {val_fraction}")
    n = len(dataset)
    everything = np.arange(n, dtype=np.int64)
    if val_fraction == 0 or n == 0:
        return everything, np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    labels = np.asarray(dataset.labels, dtype=np.int64)
    _, groups = np.unique(np.asarray(dataset.groups), return_inverse=True)
    groups = groups.ravel()
    n_groups, n_classes = groups.max() + 1, max(len(dataset.class_names), labels.max() + 1)
    per_group = np.zeros((n_groups, n_classes), dtype=np.int64)  # tiles of class k in group g
    np.add.at(per_group, (groups, labels), 1)
    class_total = per_group.sum(axis=0)
    target = {
        k: min(class_total[k] - 1, max(1, int(round(val_fraction * class_total[k]))))
        for k in range(n_classes)
        if class_total[k] >= 2
    }

    val_group = np.zeros(n_groups, dtype=bool)
    held = np.zeros(n_classes, dtype=np.int64)  # tiles of each class in held-out groups

    def may_hold_out(g: int) -> bool:  # every class in g keeps training tiles elsewhere
        present = per_group[g] > 0
        return bool(np.all(class_total[present] - held[present] > per_group[g, present]))

    def hold_out(g: int) -> None:
        val_group[g] = True
        held[:] += per_group[g]

    # Whole groups first; small classes first, since they have the fewest groups to choose from.
    for k in sorted(target, key=lambda k: (class_total[k], k)):
        found = np.flatnonzero(per_group[:, k])
        if len(found) < 2:
            continue
        its_groups = [int(g) for g in rng.permutation(found)]
        for g in its_groups:
            if held[k] >= target[k]:
                break
            if not val_group[g] and held[k] + per_group[g, k] <= target[k] and may_hold_out(g):
                hold_out(g)
        if held[k] == 0:  # every group is bigger than the target: take the smallest that may go
            allowed = [
                g
                for g in its_groups
                if may_hold_out(g) and per_group[g, k] <= MAX_GROUP_OVERSHOOT * target[k]
            ]
            if allowed:
                hold_out(min(allowed, key=lambda g: (per_group[g, k], g)))

    is_val = val_group[groups]
    # Blocks inside one field for classes still without validation tiles.
    positions = np.asarray(dataset.positions, dtype=np.int64).reshape(-1, 2)
    block_groups = set()
    for k in sorted(target):
        if is_val[labels == k].any():
            continue
        candidates = np.flatnonzero(per_group[:, k] * ~val_group)
        if len(candidates) == 0:
            continue
        g = int(max(candidates, key=lambda c: (per_group[c, k], -c)))
        mine = np.flatnonzero((labels == k) & (groups == g))
        block = _end_block(positions[mine], target[k], rng)
        is_val[mine[block]] = True
        block_groups.add(int(g))

    # Drop training tiles that touch (8-neighbourhood) a validation tile of the same field, or,
    # with overlapping tiles, share any pixel with one.
    dropped = np.zeros(n, dtype=bool)
    if block_groups:
        reach = dataset.overlap_reach
        in_blocks = np.isin(groups, list(block_groups))
        val_tiles = np.flatnonzero(is_val & in_blocks)
        candidates = np.flatnonzero(~is_val & in_blocks)
        steps = range(-reach, reach + 1)
        offsets = np.array([(dy, dx) for dy in steps for dx in steps])
        touched = np.concatenate(
            [
                _cell_key(positions[val_tiles] + offset, groups[val_tiles], positions, reach)
                for offset in offsets
            ]
        )
        dropped[candidates] = np.isin(
            _cell_key(positions[candidates], groups[candidates], positions, reach), touched
        )
    return everything[~is_val & ~dropped], everything[is_val]


def _cell_key(pos: np.ndarray, group: np.ndarray, all_positions: np.ndarray, margin: int = 1) -> np.ndarray:
    """One integer per (group, row, col), valid for positions up to `margin` steps outside."""
    origin = all_positions.min(axis=0) - margin
    span = all_positions.max(axis=0) - origin + 2 * margin
    pos = pos - origin
    return (group * span[0] + pos[:, 0]) * span[1] + pos[:, 1]


def _end_block(positions: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of a contiguous block of grid columns (or rows) at one end of `positions`
    (one field, one class) holding at least `target` of them, and never all of them when the
    tiles span more than one column/row."""
    extents = [len(np.unique(positions[:, axis])) for axis in (0, 1)]
    if extents[0] != extents[1]:
        axis = int(np.argmax(extents))  # cut across the longer side: a thinner block
    else:
        axis = int(rng.integers(2))
    values = np.unique(positions[:, axis])
    if rng.integers(2):
        values = values[::-1]  # block at the far end instead
    coordinate = positions[:, axis]
    counts = np.array([(coordinate == v).sum() for v in values])
    taken = int(np.searchsorted(np.cumsum(counts), target) + 1)
    taken = min(taken, max(1, len(values) - 1))
    if len(values) == 1:  # all in one line of the grid: split along it
        order = np.argsort(positions[:, 1 - axis], kind="stable")
        block = np.zeros(len(positions), dtype=bool)
        block[order[: max(1, min(target, len(positions) - 1))]] = True
        return block
    return np.isin(coordinate, values[:taken])
