"""Labelled tiles for training and evaluation, plus normalisation. No Qt.

CONTRACT (stub by the lead; the data owner implements it):
- Class indices inside the engine are 0..K-1; label-image values are 1..K (0 = unlabelled).
- Every dataset carries `groups` (which field of view / file a tile came from) and the tile's
  grid position, so validation splits never share a field (or neighbouring tiles) across sides.
- Normalisation statistics come from training data and travel with the model; per-tile
  normalisation only when asked for (it destroys absolute-brightness signal).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass
class TileDataset:
    tiles: np.ndarray          # (N, C, T, T) float32, raw intensities (not normalised)
    labels: np.ndarray         # (N,) int64 in 0..K-1
    groups: np.ndarray         # (N,) int64: index into `sources`
    positions: np.ndarray      # (N, 2) int64 grid (row, col) of the tile in its source; (0, 0) for whole-image samples
    class_names: list[str]
    channel_names: list[str]
    sources: list[str] = field(default_factory=list)   # file path or layer name per group

    def __len__(self) -> int: ...

    def class_counts(self) -> dict[str, int]:
        """Tiles per class name (every class listed, zero included)."""
        raise NotImplementedError

    def subset(self, indices) -> "TileDataset": ...


def concat_datasets(datasets: Sequence[TileDataset]) -> TileDataset:
    """Merge datasets; classes are matched by name (union, order of first appearance), groups
    renumbered. Channel names must agree in count -> ValueError otherwise."""
    raise NotImplementedError


def check_trainable(dataset: TileDataset, min_per_class: int = 2) -> None:
    """ValueError with a user-facing message for: no tiles; fewer than two classes with tiles;
    a class with fewer than `min_per_class` tiles."""
    raise NotImplementedError


def from_label_images(images: Sequence[np.ndarray], label_images: Sequence[np.ndarray],
                      class_names: Sequence[str], tile_size: int, stride: int | None = None,
                      min_fraction: float = 0.5, channel_names: Sequence[str] | None = None,
                      sources: Sequence[str] | None = None) -> TileDataset:
    """(C, Y, X) images + painted (Y, X) label images (value k = class_names[k-1]); unpainted
    tiles are skipped. Shape mismatch image/labels -> ValueError."""
    raise NotImplementedError


def from_whole_images(images: Sequence[np.ndarray], class_indices: Sequence[int],
                      class_names: Sequence[str], tile_size: int, stride: int | None = None,
                      foreground_channel: int | None = None, min_foreground: float = 0.05,
                      channel_names: Sequence[str] | None = None,
                      sources: Sequence[str] | None = None) -> TileDataset:
    """The original method: every tile of images[i] is class class_indices[i] (0-based). With
    `foreground_channel`, background-only tiles are skipped."""
    raise NotImplementedError


def from_class_folders(root: str | Path, tile_size: int, mode: str = "resize",
                       channels: Sequence[int | str] | None = None, stride: int | None = None,
                       class_names: Sequence[str] | None = None) -> TileDataset:
    """root/<class>/<image>: mode="resize" resizes each image to tile_size (like Keras
    flow_from_directory), mode="tile" slices it into tiles. Hidden files and stray entries are
    ignored (io.is_ignored / io.list_images); classes are the non-empty subfolders, sorted, unless
    `class_names` fixes the order (then folders not in it -> ValueError naming them; classes of
    `class_names` without a folder simply have no samples, for evaluating on part of the classes).
    Empty root / unreadable file / channel-count mismatch -> ValueError naming the path."""
    raise NotImplementedError


@dataclass
class Normalization:
    """Per-channel affine map (x - low) / (high - low), statistics from the training data.
    mode="per_tile" instead computes low/high on each tile at apply time."""
    low: list[float]
    high: list[float]
    mode: str = "dataset"          # "dataset" | "per_tile"
    percentiles: tuple[float, float] = (1.0, 99.8)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """float32 normalised copy of (N, C, T, T) tiles or a (C, Y, X) field (dataset mode).
        Channel count mismatch -> ValueError."""
        raise NotImplementedError

    def to_dict(self) -> dict: ...

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization": ...


def fit_normalization(tiles: np.ndarray, mode: str = "dataset",
                      percentiles: tuple[float, float] = (1.0, 99.8)) -> Normalization:
    """Per-channel low/high percentiles over all training tiles (subsampled for speed)."""
    raise NotImplementedError


def split_train_val(dataset: TileDataset, val_fraction: float = 0.2, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx). Per class: when the class's tiles come from >= 2 groups, whole groups
    go to validation; when from one group, a contiguous block of grid columns/rows goes to
    validation and tiles adjacent to that block (8-neighbourhood) are dropped from both sides.
    Every class with >= 2 tiles gets at least one validation tile. val_fraction=0 -> empty val."""
    raise NotImplementedError
