"""The tile dataset (`TileDataset`), its modes and the one "is this trainable" rule. No Qt."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence, get_args

import numpy as np

from ..tiling import (
    MAX_CLASSES,
)

# The modes the engine itself needs are defined here, once; options.py and the faces refer to them.
FolderMode = Literal["resize", "tile"]  # class folders: one tile per image, or tiles of it
NormalizationMode = Literal["dataset", "per_tile"]
FOLDER_MODES: tuple[str, ...] = get_args(FolderMode)
NORMALIZATION_MODES: tuple[str, ...] = get_args(NormalizationMode)
# "Is this trainable": the one rule (check_trainable raises on it, the widget lists it).
MIN_TILES_PER_CLASS = 2  # the split needs one training and one validation tile per class
FEW_TILES_PER_CLASS = 20  # below this a class is learnt from too little: runs differ seed to seed


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
    # Trailing channels that are not intensities and get no normalisation statistics (object
    # mode's cell-mask channel, 0/1): training fits Normalization(unscaled=...) from this.
    unscaled_channels: int = 0

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
    unscaled_channels: int = 0,
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
        unscaled_channels=int(unscaled_channels),
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
        if dataset.unscaled_channels != first.unscaled_channels:
            raise ValueError(
                "cannot merge datasets with and without the cell-mask channel "
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
        unscaled_channels=first.unscaled_channels,
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
