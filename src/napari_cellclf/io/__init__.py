"""Microscopy files -> arrays + axes, channel names, pixel size. No Qt, no napari.

- `read_image(path)` is the one entry point for TIFF (plain, ImageJ hyperstack, OME, multi-page),
  PNG and JPEG. It never returns None: unreadable files raise `ImageReadError` whose message names
  the file. Large files (> `LAZY_BYTES`) come back lazily (tifffile memmap or zarr store), not read.
- `to_cyx(image, ...)` turns any `ImageData` into the engine's float32 (C, Y, X) array.

How the metadata is found (first match wins):
- axes: the TIFF series axes from tifffile; its generic letters (I, Q, ...) become Z, then T.
- channel names: OME `Channel/@Name`, else ImageJ `Labels` when they repeat once per channel.
- pixel size: OME `PhysicalSizeY/X`; else ImageJ resolution tags in the ImageJ `unit`; else plain
  resolution tags in cm/mm/µm (inch "dpi" tags are print settings, not microscopy, so ignored).
- `metadata` keeps "flavour" (ome/imagej/shaped/plain/png/jpeg), "z_spacing" when known,
  "channel_colors" (napari colormap names taken from ImageJ LUTs or RGB photometry) and
  "n_series" (how many images the file holds; we read the first).

PNG and JPEG go through imagecodecs (a declared dependency, the codec library behind tifffile)
because imageio/Pillow squash 16-bit RGB PNGs to 8 bits.

The package, one module a seam: `image` (ImageData, ImageReadError), `files` (which files are
images), `read` (read_image and the TIFF reader), `photos` (PNG/JPEG), `metadata` (OME, ImageJ,
resolution tags), `planes` (to_cyx, channel selection, display samples), `limits` (what a file
may declare; lower a limit there, e.g. `io.limits.LAZY_BYTES`).
"""

from .files import IGNORED_NAMES, SUPPORTED_SUFFIXES, is_ignored, is_supported, list_images
from .image import ImageData, ImageReadError
from .limits import (
    LAZY_BYTES,
    MAX_COMPRESSION_RATIO,
    MAX_FIELD_VALUES,
    MAX_PHOTO_PIXELS,
    RATIO_CHECK_BYTES,
    SUBSAMPLE_SIDE,
)
from .planes import check_finite, contrast_limits, select_channels, subsample, to_cyx
from .read import KNOWN_AXES, read_image

__all__ = [
    "IGNORED_NAMES",
    "KNOWN_AXES",
    "LAZY_BYTES",
    "MAX_COMPRESSION_RATIO",
    "MAX_FIELD_VALUES",
    "MAX_PHOTO_PIXELS",
    "RATIO_CHECK_BYTES",
    "SUBSAMPLE_SIDE",
    "SUPPORTED_SUFFIXES",
    "ImageData",
    "ImageReadError",
    "check_finite",
    "contrast_limits",
    "is_ignored",
    "is_supported",
    "list_images",
    "read_image",
    "select_channels",
    "subsample",
    "to_cyx",
]
