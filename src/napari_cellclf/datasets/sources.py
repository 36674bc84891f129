"""Labelling sources: each one counts its labelled tiles and builds them, with the same rules."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from .. import data
from ..data import Problem, TileDataset
from ..objects import MASK_CHANNEL_NAME, count_objects, object_classes, object_tiles
from ..tiling import TileGrid, foreground_tiles, make_grid, tile_labels_from_label_image

_BORDER = "drop"  # training tiles lie wholly inside their field
_MIN_FOREGROUND = inspect.signature(foreground_tiles).parameters["min_fraction"].default


@dataclass(frozen=True)
class TileSpec:
    """How fields are cut into labelled tiles; one spec serves counting and building alike."""

    tile_size: int
    stride: int | None = None  # None or 0: the tile size (no overlap)
    min_fraction: float = float(
        inspect.signature(tile_labels_from_label_image).parameters["min_fraction"].default
    )
    foreground_channel: int | None = None  # whole images: only tiles with foreground there
    min_foreground: float = _MIN_FOREGROUND

    @property
    def step(self) -> int:
        return int(self.stride or self.tile_size)

    def grid(self, shape: Sequence[int]) -> TileGrid:
        return make_grid((int(shape[-2]), int(shape[-1])), self.tile_size, self.step, border=_BORDER)


def painted_tile_classes(labels: np.ndarray, spec: TileSpec, grid: TileGrid | None = None) -> np.ndarray:
    """Class value (1..K, 0 = not labelled) of every grid tile of a painted label image: the rule
    data.from_label_images cuts training tiles by (tiling.tile_labels_from_label_image on
    `spec`'s grid), which the counts and the widget's labelled-tile overlay read too."""
    grid = grid or spec.grid(np.shape(labels))
    return np.asarray(tile_labels_from_label_image(np.asarray(labels), grid, spec.min_fraction), np.int64)


def count_painted(
    labels: np.ndarray, spec: TileSpec, n_classes: int, grid: TileGrid | None = None
) -> list[int]:
    """Tiles per class (1..n_classes) of a painted label image."""
    tile_labels = painted_tile_classes(labels, spec, grid)
    hist = np.bincount(tile_labels.ravel(), minlength=n_classes + 1)
    return [int(v) for v in hist[1 : n_classes + 1]]


def whole_image_tiles(image: np.ndarray | None, spec: TileSpec, shape: tuple[int, int]) -> np.ndarray:
    """Bool per grid tile: the tiles a whole-image class gives (all, or the foreground ones of
    `spec.foreground_channel` of `image`)."""
    grid = spec.grid(shape)
    if spec.foreground_channel is None:
        return np.ones(grid.n_tiles, bool)
    if image is None:
        raise ValueError("counting foreground tiles needs the image")
    return np.asarray(foreground_tiles(image, grid, spec.foreground_channel, spec.min_foreground), bool)


def count_whole(image: np.ndarray | None, spec: TileSpec, shape: tuple[int, int]) -> int:
    return int(whole_image_tiles(image, spec, shape).sum())


def whole_tile_classes(
    image: np.ndarray | None, spec: TileSpec, shape: tuple[int, int], class_value: int
) -> np.ndarray:
    """Class value (`class_value` or 0) of every grid tile of a field declared one class."""
    return np.where(whole_image_tiles(image, spec, shape), int(class_value), 0).astype(np.int64)


def split_positions(dataset: TileDataset, val_fraction: float, seed: int) -> dict[str, dict[str, set]]:
    """Source name -> {"train": {(row, col), ...}, "validation": {...}}: where each tile of a
    training went, by the very call training.train splits with (data.split_train_val with the
    config's val_fraction and seed)."""
    out: dict[str, dict[str, set]] = {name: {"train": set(), "validation": set()} for name in dataset.sources}
    if len(dataset) == 0:
        return out
    train_idx, val_idx = data.split_train_val(dataset, val_fraction, seed=seed)
    for part, indices in (("train", train_idx), ("validation", val_idx)):
        for i in np.asarray(indices, dtype=np.int64):
            name = dataset.sources[int(dataset.groups[i])]
            out[name][part].add(tuple(int(v) for v in dataset.positions[i]))
    return out


@dataclass
class PaintedLabels:
    """A field with a painted label image (Y, X): 0 = unlabelled, value k = class k."""

    name: str
    labels: np.ndarray
    image: np.ndarray | None = None  # (C, Y, X); only needed to build tiles

    def count(self, spec: TileSpec, class_names: Sequence[str]) -> list[int]:
        return count_painted(self.labels, spec, len(class_names))

    def tiles(self, spec: TileSpec, class_names: Sequence[str], channel_names: Sequence[str]) -> TileDataset:
        return _painted_dataset([self], spec, class_names, channel_names)


@dataclass
class WholeImage:
    """Every tile of a field is class `class_index` (0-based)."""

    name: str
    class_index: int
    image: np.ndarray  # (C, Y, X) (for foreground: the chosen channels)

    def count(self, spec: TileSpec, class_names: Sequence[str]) -> list[int]:
        per_class = [0] * len(class_names)
        per_class[self.class_index] = count_whole(self.image, spec, self.image.shape[-2:])
        return per_class

    def tiles(self, spec: TileSpec, class_names: Sequence[str], channel_names: Sequence[str]) -> TileDataset:
        return _whole_dataset([self], spec, class_names, channel_names)


@dataclass
class ClassFolders:
    """Images in root/<class>/<image>, read once with the settings kept here; re-read when the
    tile size or the channels change (with the folders' own classes: the session's other classes
    have no folder, and concat_datasets merges classes by name)."""

    root: str
    mode: str
    dataset: TileDataset
    tile_size: int
    channels: tuple[int, ...] = ()
    classes: tuple[str, ...] = ()  # the class folders picked; () = every one

    @classmethod
    def read(
        cls,
        root: str | Path,
        tile_size: int,
        channels: Sequence[int] = (),
        mode: str = "resize",
        classes: Sequence[str] = (),
    ) -> "ClassFolders":
        dataset = data.from_class_folders(
            root, tile_size, mode=mode, channels=list(channels) or None, only=list(classes) or None
        )
        return cls(str(root), mode, dataset, int(tile_size), tuple(channels), tuple(classes))

    def tiles_for(self, tile_size: int, channels: Sequence[int] = ()) -> TileDataset:
        if self.tile_size == tile_size and tuple(self.channels) == tuple(channels):
            return self.dataset
        return data.from_class_folders(
            self.root,
            tile_size,
            mode=self.mode,
            channels=list(channels) or None,
            class_names=list(self.dataset.class_names),
            only=list(self.classes) or None,
        )

    def at(self, tile_size: int, channels: Sequence[int] = ()) -> "ClassFolders":
        """These folders read with another tile size or other channels (self when unchanged)."""
        if self.tile_size == tile_size and tuple(self.channels) == tuple(channels):
            return self
        return ClassFolders(
            self.root,
            self.mode,
            self.tiles_for(tile_size, channels),
            int(tile_size),
            tuple(channels),
            self.classes,
        )

    def count(self, spec: TileSpec, class_names: Sequence[str]) -> list[int]:
        # The tiles as imported: re-reading every folder on each paint would freeze the viewer.
        found = self.dataset.class_counts()
        return [int(found.get(name, 0)) for name in class_names]

    def tiles(self, spec: TileSpec, class_names: Sequence[str], channel_names: Sequence[str]) -> TileDataset:
        return self.tiles_for(spec.tile_size, self.channels)


@dataclass
class InstanceObjects:
    """A field with an instance mask (Y, X; 0 = background, each id one cell) and a painted label
    image: each object is one sample, a tile of `spec.tile_size` centred on its centroid
    (objects.object_tiles), of the class painted on most of its painted pixels
    (objects.object_classes; unpainted objects are skipped). `blank_background`: pixels outside
    the object are zero in its tile. `mask_channel`: the tile has one more channel, the object's
    own mask (named objects.MASK_CHANNEL_NAME, left unnormalised). Split positions are the grid cell (tile size) of the centre,
    so objects whose tiles share pixels with a validation object stay out of training."""

    name: str
    masks: np.ndarray
    labels: np.ndarray
    image: np.ndarray | None = None  # (C, Y, X); only needed to build tiles
    blank_background: bool = False
    mask_channel: bool = False

    def count(self, spec: TileSpec, class_names: Sequence[str]) -> list[int]:
        return count_objects(self.masks, self.labels, len(class_names))

    def tiles(self, spec: TileSpec, class_names: Sequence[str], channel_names: Sequence[str]) -> TileDataset:
        return _objects_dataset([self], spec, class_names, channel_names)


Source = Union[PaintedLabels, WholeImage, ClassFolders, InstanceObjects]


@dataclass
class TileCounts:
    per_class: list[int]  # all sources together
    per_source: dict[str, list[int]] = field(default_factory=dict)  # source name -> per class
    notes: list[str] = field(default_factory=list)  # sources that could not be counted, and why

    @property
    def total(self) -> int:
        return int(sum(self.per_class))

    @property
    def per_field(self) -> dict[str, list[int]]:
        """`per_source` in the widget's words (its sources are fields, keyed by field id)."""
        return self.per_source

    def add(self, name: str, per_class: Sequence[int]) -> None:
        self.per_source[name] = list(per_class)
        self.per_class = [a + int(b) for a, b in zip(self.per_class, per_class)]


def count_tiles(sources: Sequence[Source], spec: TileSpec, class_names: Sequence[str]) -> TileCounts:
    """The one count of labelled tiles per class; a source that cannot be cut (e.g. smaller than
    one tile) becomes a note instead of an error."""
    counts = TileCounts(per_class=[0] * len(class_names))
    for source in sources:
        name = str(getattr(source, "name", None) or getattr(source, "root", ""))
        try:
            counts.add(name, source.count(spec, class_names))
        except ValueError as exc:
            counts.notes.append(f"{name}: {exc}")
    return counts


def problems(counts: TileCounts, class_names: Sequence[str]) -> list[Problem]:
    """Why training these tiles would fail (blocking) or mislead: the rule of
    data.trainability_problems on the counted tiles."""
    return data.trainability_problems(dict(zip(class_names, counts.per_class)))


def problem_messages(counts: TileCounts, class_names: Sequence[str]) -> list[str]:
    return [problem.message for problem in problems(counts, class_names)]


def _painted_dataset(
    painted: Sequence[PaintedLabels], spec: TileSpec, class_names, channel_names
) -> TileDataset:
    images = []
    for source in painted:
        if source.image is None:
            raise ValueError(f"{source.name}: no image to cut tiles from")
        images.append(source.image)
    return data.from_label_images(
        images,
        [s.labels for s in painted],
        list(class_names),
        spec.tile_size,
        spec.step,
        min_fraction=spec.min_fraction,
        channel_names=channel_names,
        sources=[s.name for s in painted],
        border=_BORDER,
    )


def _whole_dataset(whole: Sequence[WholeImage], spec: TileSpec, class_names, channel_names) -> TileDataset:
    return data.from_whole_images(
        [s.image for s in whole],
        [s.class_index for s in whole],
        list(class_names),
        spec.tile_size,
        spec.step,
        foreground_channel=spec.foreground_channel,
        min_foreground=spec.min_foreground,
        channel_names=channel_names,
        sources=[s.name for s in whole],
        border=_BORDER,
    )


def _objects_dataset(
    sources: Sequence[InstanceObjects], spec: TileSpec, class_names, channel_names
) -> TileDataset:
    tiles, labels, groups, positions, names = [], [], [], [], []
    n_channels = None
    mask_channel = bool(sources[0].mask_channel) if sources else False
    for group, source in enumerate(sources):
        if bool(source.mask_channel) != mask_channel:  # one model input: every field cut alike
            raise ValueError(f"{source.name}: the cell mask is a channel of some object fields, not all")
        if source.image is None:
            raise ValueError(f"{source.name}: no image to cut tiles from")
        image = np.asarray(source.image)
        image = image[np.newaxis] if image.ndim == 2 else image
        if n_channels is not None and image.shape[0] != n_channels:
            raise ValueError(
                f"{source.name} has {image.shape[0]} channel(s) but earlier fields have {n_channels}"
            )
        n_channels = image.shape[0]
        try:
            table, classes = object_classes(source.masks, source.labels, len(class_names))
            chosen = np.flatnonzero(classes)
            picked = type(table)(table.labels[chosen], table.centroids[chosen], table.areas[chosen])
            tiles.append(
                object_tiles(
                    image, source.masks, spec.tile_size, picked, source.blank_background, mask_channel
                )
            )
        except ValueError as exc:
            raise ValueError(f"{source.name}: {exc}") from None
        labels.append(classes[chosen] - 1)
        groups.append(np.full(len(chosen), group))
        positions.append(picked.centres // spec.tile_size)
        names.append(source.name)
    n_channels = n_channels or len(channel_names)
    if channel_names is None or len(channel_names) != n_channels:
        channel_names = [f"ch{c}" for c in range(n_channels)]
    channel_names = list(channel_names) + [MASK_CHANNEL_NAME] * mask_channel
    return data._dataset(
        tiles,
        labels,
        groups,
        positions,
        n_channels + mask_channel,
        spec.tile_size,
        class_names,
        channel_names,
        names,
        unscaled_channels=int(mask_channel),
    )


def build_dataset(
    sources: Sequence[Source], spec: TileSpec, class_names: Sequence[str], channel_names: Sequence[str]
) -> TileDataset:
    """The labelled tiles of every source, merged (classes by name). ValueError when empty."""
    parts = []
    painted = [s for s in sources if isinstance(s, PaintedLabels)]
    if painted:
        parts.append(_painted_dataset(painted, spec, class_names, channel_names))
    whole = [s for s in sources if isinstance(s, WholeImage)]
    if whole:
        parts.append(_whole_dataset(whole, spec, class_names, channel_names))
    objects = [s for s in sources if isinstance(s, InstanceObjects)]
    if objects:
        parts.append(_objects_dataset(objects, spec, class_names, channel_names))
    parts += [
        s.tiles(spec, class_names, channel_names)
        for s in sources
        if not isinstance(s, (PaintedLabels, WholeImage, InstanceObjects))
    ]
    if not parts:
        raise ValueError("Nothing is labelled yet.")
    return parts[0] if len(parts) == 1 else data.concat_datasets(parts)
