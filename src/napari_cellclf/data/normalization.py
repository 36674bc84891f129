"""Per-channel normalisation fitted on training tiles (`Normalization`, `fit_normalization`). No Qt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .dataset import NORMALIZATION_MODES

# Enough pixels for stable percentiles; more only costs time.
_PERCENTILE_SAMPLE = 2**20


@dataclass
class Normalization:
    """Per-channel affine map (x - low) / (high - low), statistics from the training data.
    mode="per_tile" instead computes low/high on each tile at apply time.

    `unscaled` trailing channels follow the `len(low)` normalised ones and reach the model as
    they are: object mode's cell-mask channel is already 0/1, and stretching it by percentiles
    (per tile: a small cell's 99.8th percentile can be 0) would change what "on the cell" means.
    low/high hold the normalised channels only; the files of models without such channels are
    unchanged (no "unscaled" key)."""

    low: list[float]
    high: list[float]
    mode: str = "dataset"  # "dataset" | "per_tile"
    percentiles: tuple[float, float] = (1.0, 99.8)
    unscaled: int = 0

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
        whole = isinstance(self.unscaled, (int, np.integer)) and not isinstance(self.unscaled, bool)
        if not whole or self.unscaled < 0:
            raise ValueError(f"normalization unscaled must be a whole number >= 0, got {self.unscaled!r}")
        self.unscaled = int(self.unscaled)

    @property
    def n_channels(self) -> int:
        return len(self.low) + self.unscaled

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
        if self.unscaled:
            scaled = self.n_channels - self.unscaled
            head = [slice(None)] * array.ndim
            head[channel_axis] = slice(0, scaled)
            out = np.empty(array.shape, np.float32)
            out[tuple(head)] = Normalization(self.low, self.high, self.mode, self.percentiles).apply(
                array[tuple(head)]
            )
            head[channel_axis] = slice(scaled, None)
            out[tuple(head)] = array[tuple(head)]
            return out
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
        out: dict[str, Any] = {
            "mode": self.mode,
            "low": [float(v) for v in self.low],
            "high": [float(v) for v in self.high],
            "percentiles": [float(p) for p in self.percentiles],
        }
        if self.unscaled:
            out["unscaled"] = self.unscaled
        return out

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
            unscaled=d.get("unscaled", 0),
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
    tiles: np.ndarray,
    mode: str = "dataset",
    percentiles: tuple[float, float] = (1.0, 99.8),
    unscaled: int = 0,
) -> Normalization:
    """Per-channel low/high percentiles over all training tiles (subsampled for speed); the last
    `unscaled` channels get none and are left as they are (`Normalization.unscaled`).

    Up to 2**20 pixels per channel are used as they are; beyond that a fixed-seed random sample
    of that many, so the same tiles always give the same statistics."""
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or len(tiles) == 0:
        raise ValueError(f"fit_normalization needs (N, C, T, T) tiles with N > 0, got shape {tiles.shape}")
    if mode not in NORMALIZATION_MODES:
        raise ValueError(f"normalization mode must be one of {NORMALIZATION_MODES}, got {mode!r}")
    percentiles = _check_percentiles(percentiles)
    if not 0 <= unscaled < tiles.shape[1]:
        raise ValueError(f"unscaled channels must be 0..{tiles.shape[1] - 1}, got {unscaled!r}")
    n, stored = tiles.shape[:2]
    n_channels = stored - unscaled  # the unscaled channels come last: sampled around, not copied
    per_tile = tiles.shape[2] * tiles.shape[3]
    if n * per_tile > _PERCENTILE_SAMPLE:
        rng = np.random.default_rng(0)
        tile = rng.integers(0, n, _PERCENTILE_SAMPLE)
        pixel = rng.integers(0, per_tile, _PERCENTILE_SAMPLE)
        flat = np.ravel(tiles)  # flat index of (tile, channel, pixel): 1-D takes are fast
        sample = np.stack(
            [np.take(flat, (tile * stored + c) * per_tile + pixel) for c in range(n_channels)]
        )  # (C, S)
    else:
        sample = np.moveaxis(tiles[:, :n_channels], 1, 0).reshape(n_channels, -1)
    low, high = np.percentile(sample.astype(np.float64), percentiles, axis=1)
    # A flat channel (or one whose span float32 cannot resolve): widen it so that the model file
    # never holds low >= high, which the loader refuses. `apply` only shifts such a channel
    # either way (scale 1 for a span of 0 or of 1).
    span = high.astype(np.float32) - low.astype(np.float32)
    flat = ~(span > 1e-6 * np.maximum(np.abs(low), np.abs(high)))
    high = np.where(flat, low + np.maximum(1.0, 1e-3 * np.abs(low)), high)
    return Normalization(
        low=low.tolist(), high=high.tolist(), mode=mode, percentiles=percentiles, unscaled=unscaled
    )
