"""Microscopy files -> arrays + axes, channel names, pixel size. No Qt, no napari.

CONTRACT (stub written by the lead; the io owner implements it and may add helpers):
- `read_image(path)` is the one entry point for TIFF (plain, ImageJ hyperstack, OME, multi-page),
  PNG and JPEG. It never returns None: unreadable files raise `ImageReadError` whose message names
  the file. Large files (> `LAZY_BYTES`) come back lazily (tifffile memmap or zarr store), not read.
- `to_cyx(image, ...)` turns any `ImageData` into the engine's float32 (C, Y, X) array.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SUPPORTED_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
LAZY_BYTES = 256 * 2**20
# Files that are never images/classes when walking folders (macOS, Windows, editors).
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


class ImageReadError(ValueError):
    """A file could not be read as an image; the message names the file and says why."""


@dataclass
class ImageData:
    data: Any                      # np.ndarray, np.memmap or a lazy array (dask/zarr) with .shape/.dtype
    axes: str                      # one letter per dim of `data`, from "TZCYXS", e.g. "YX", "CYX", "YXS", "TZCYX"
    path: str
    channel_names: list[str] | None = None   # one per C (or S for RGB-like samples) when known
    pixel_size: tuple[float, float] | None = None   # (y, x) physical size of one pixel
    unit: str | None = None        # e.g. "µm"
    significant_bits: int | None = None  # e.g. 12 for 12-bit data in a uint16 container
    rgb: bool = False              # True for colour photos (PNG/JPEG RGB(A), 8-bit TIFF RGB)
    lazy: bool = False
    metadata: dict = field(default_factory=dict)  # anything else worth keeping (flavour, ImageJ info...)

    @property
    def n_channels(self) -> int: ...


def is_supported(path: str | Path) -> bool:
    """True when the suffix is one we read (case-insensitive, .ome.tif included)."""
    raise NotImplementedError


def is_ignored(path: str | Path) -> bool:
    """Hidden files (., ._*), IGNORED_NAMES: never images, never classes."""
    raise NotImplementedError


def list_images(folder: str | Path) -> list[Path]:
    """Supported, non-ignored image files directly in `folder`, sorted by name."""
    raise NotImplementedError


def read_image(path: str | Path) -> ImageData:
    raise NotImplementedError


def to_cyx(image: ImageData, channels: Sequence[int | str] | None = None,
           plane: dict[str, int] | None = None) -> tuple[np.ndarray, list[str]]:
    """float32 (C, Y, X) array and its channel names ("ch0".. when unknown).

    YXS samples become channels; an RGB photo becomes 3 channels. `channels` selects by index or
    name (unknown name / index out of range -> ValueError listing what exists). Z or T longer than
    1 need `plane={"Z": k, "T": t}`, otherwise ValueError saying so (never a silent pick).
    """
    raise NotImplementedError


def select_channels(cyx: np.ndarray, names: Sequence[str], channels: Sequence[int | str] | None
                    ) -> tuple[np.ndarray, list[str]]:
    """Pick channels of a (C, Y, X) array by index or name; clear ValueError otherwise."""
    raise NotImplementedError
