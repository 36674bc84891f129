"""Square tile grids over 2-D fields of view (numpy + scikit-image only).

CONTRACT (stub by the lead; the tiling owner implements it):
- Tiles are indexed row-major: tile n sits at grid row n // cols, column n % cols, its top-left
  pixel at (row * stride, col * stride).
- border="drop": only tiles that fit whole; border="pad": partial tiles at the bottom/right are
  kept and padded (reflect) so every pixel is covered.
- Label images use napari's convention: 0 = unlabelled, k = class k (1-based). Tile labels
  returned here keep that convention (0 = unlabelled).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    image_shape: tuple[int, int]   # (H, W) of the field
    tile_size: int
    stride: int
    border: str                    # "drop" | "pad"
    rows: int
    cols: int

    @property
    def n_tiles(self) -> int: ...

    def origins(self) -> np.ndarray:
        """(n_tiles, 2) int array of (y0, x0), row-major."""
        raise NotImplementedError

    def row_col(self, index) -> tuple[np.ndarray, np.ndarray]:
        """Grid row and column of tile index/indices."""
        raise NotImplementedError

    def tile_at(self, y: float, x: float) -> int | None:
        """Index of the tile whose non-overlapped cell contains pixel (y, x), None outside."""
        raise NotImplementedError


def make_grid(image_shape: tuple[int, int], tile_size: int, stride: int | None = None,
              border: str = "drop") -> TileGrid:
    """stride defaults to tile_size (no overlap). ValueError for tile_size < 1, stride < 1,
    unknown border, or an image smaller than one tile with border='drop'."""
    raise NotImplementedError


def extract_tiles(image_cyx: np.ndarray, grid: TileGrid, indices: np.ndarray | None = None
                  ) -> np.ndarray:
    """(N, C, T, T) array (same dtype) of the chosen tiles (all when indices is None)."""
    raise NotImplementedError


def foreground_tiles(image_cyx: np.ndarray, grid: TileGrid, channel: int = 0,
                     min_fraction: float = 0.05, threshold: float | None = None) -> np.ndarray:
    """Bool (n_tiles,): tiles where at least `min_fraction` of pixels of `channel` are above
    `threshold` (default: Otsu on that channel). Lets training/inference skip empty background."""
    raise NotImplementedError


def tile_labels_from_label_image(labels: np.ndarray, grid: TileGrid, min_fraction: float = 0.5
                                 ) -> np.ndarray:
    """int (n_tiles,) label per tile: the majority non-zero value among painted pixels if painted
    pixels cover at least `min_fraction` of the tile, else 0 (unlabelled)."""
    raise NotImplementedError


def tile_values_to_map(values: np.ndarray, grid: TileGrid, indices: np.ndarray | None = None,
                       fill=0) -> np.ndarray:
    """(H, W) map: each tile's value painted over its pixels (overlaps: later/centre tile wins —
    use `stitch_probabilities` for averaging). `indices` says which tiles `values` belong to."""
    raise NotImplementedError


def stitch_probabilities(probabilities: np.ndarray, grid: TileGrid,
                         indices: np.ndarray | None = None) -> np.ndarray:
    """(K, H, W) float32: per-pixel mean of the probabilities of every tile covering it; pixels
    covered by no chosen tile are NaN."""
    raise NotImplementedError


def stitch_tile_maps(maps: np.ndarray, grid: TileGrid, indices: np.ndarray | None = None
                     ) -> np.ndarray:
    """(N, T, T) or (N, C, T, T) per-tile maps -> (H, W) or (C, H, W) float32, overlaps averaged,
    uncovered pixels 0. Used for attribution maps."""
    raise NotImplementedError
