"""`ImageData`, what every reader returns, and `ImageReadError`, what every reader raises."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class ImageReadError(ValueError):
    """A file could not be read as an image; the message names the file and says why."""


@dataclass
class ImageData:
    data: Any  # np.ndarray, np.memmap or a lazy array (dask/zarr) with .shape/.dtype
    axes: str  # one letter per dim of `data`, from "TZCYXS", e.g. "YX", "CYX", "YXS", "TZCYX"
    path: str
    channel_names: list[str] | None = None  # one per C (or S for RGB-like samples) when known
    pixel_size: tuple[float, float] | None = None  # (y, x) physical size of one pixel
    unit: str | None = None  # e.g. "µm"
    significant_bits: int | None = None  # e.g. 12 for 12-bit data in a uint16 container
    rgb: bool = False  # True for colour photos (PNG/JPEG RGB(A), 8-bit TIFF RGB)
    lazy: bool = False
    metadata: dict = field(default_factory=dict)  # anything else worth keeping (flavour, ImageJ info...)

    @property
    def channel_axis(self) -> int | None:
        """Index of the axis that holds channels (C, or S for non-RGB samples); None otherwise.
        An RGB photo has no channel axis: napari shows it as one colour layer."""
        if "C" in self.axes:
            return self.axes.index("C")
        if "S" in self.axes and not self.rgb:
            return self.axes.index("S")
        return None

    @property
    def n_channels(self) -> int:
        """Channels `to_cyx` returns: C, non-RGB samples, 3 for an RGB(A) photo, else 1."""
        if self.rgb:
            return 3
        axis = self.channel_axis
        return 1 if axis is None else int(self.data.shape[axis])


def _describe(shape: Sequence[int], dtype, nbytes: int | None = None) -> str:
    """ "100000 x 100000 uint16 (18.6 GiB)": what a file declares, for messages."""
    nbytes = int(np.prod(shape, dtype=np.float64) * np.dtype(dtype).itemsize) if nbytes is None else nbytes
    return f"{' x '.join(str(int(n)) for n in shape)} {np.dtype(dtype).name} ({_size(nbytes)})"


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""
