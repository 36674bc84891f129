"""What an attribution map looks like on screen: raw pixels, smoothed, or one value per tile. No Qt.

Gradient x input is speckled at the pixel level (single bright pixels, sign flipping between
neighbours), which over a whole field reads as noise. Smoothing (a Gaussian of an eighth of a
tile) shows the regions that pushed the decision; the per-tile mean shows which tiles did, in the
tile grid the classifier used. The maps keep their sign and units, and `symmetric_limit` gives
the colour limits (centred on 0, so white/transparent means "no evidence either way").
"""

from __future__ import annotations

import numpy as np

from .tiling import TileGrid, extract_tiles, tile_values_to_map

MODES = ("pixels", "smoothed", "tile mean")


def display_map(attribution: np.ndarray, mode: str = "pixels", grid: TileGrid | None = None) -> np.ndarray:
    """(H, W) float32 map for display. "smoothed" and "tile mean" need the tile grid."""
    a = np.nan_to_num(np.asarray(attribution, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "pixels":
        return a
    if grid is None:
        raise ValueError(f"display mode {mode!r} needs the tile grid")
    if mode == "smoothed":
        from scipy.ndimage import gaussian_filter

        return gaussian_filter(a, sigma=max(1.0, grid.tile_size / 8), mode="reflect").astype(np.float32)
    if mode == "tile mean":
        # padded border tiles are reflect-padded: their mean is over the padded tile, near enough
        means = extract_tiles(a[np.newaxis], grid).mean(axis=(1, 2, 3))
        return tile_values_to_map(means.astype(np.float32), grid).astype(np.float32)
    raise ValueError(f"display mode must be one of {', '.join(MODES)}, got {mode!r}")


def symmetric_limit(values: np.ndarray, percentile: float = 99.5) -> float:
    """Colour limit L for (-L, L): a high percentile of |values| (a few extreme pixels would
    otherwise wash everything else out), never 0."""
    finite = np.abs(np.asarray(values)[np.isfinite(values)])
    limit = float(np.percentile(finite, percentile)) if finite.size else 0.0
    if not limit > 0:
        limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return limit
