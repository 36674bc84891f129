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
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .channels import resolve_channels

SUPPORTED_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
# TIFFs whose pixels (as declared, decoded) or file exceed this open lazily: memmap or zarr.
LAZY_BYTES = 256 * 2**20
# Limits on what a file may declare (README, "Bad input"). A few hundred bytes can declare a
# 20 GB image (a decompression bomb); these refuse such files before anything is allocated.
# PNG and JPEG are always decoded whole: at most this many pixels (16,384 x 16,384).
MAX_PHOTO_PIXELS = 2**28
# No codec we read packs more than ~1,000 decoded bytes into one stored byte (deflate's limit is
# 1,032; JPEG's a few hundred) except for blank images; beyond this ratio, above
# RATIO_CHECK_BYTES decoded, a file declares pixels it cannot hold.
MAX_COMPRESSION_RATIO = 4000
RATIO_CHECK_BYTES = 64 * 2**20
# The engine (training, classification, attribution) works on one whole plane in float32:
# at most this many values (channels x height x width), i.e. 4 GiB.
MAX_FIELD_VALUES = 2**30
# Files that are never images/classes when walking folders (macOS, Windows, editors).
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}

KNOWN_AXES = "TZCYXS"
# Side length a subsample is strided down to (contrast limits, bit depth of lazy data).
SUBSAMPLE_SIDE = 1024
# tifffile log messages that mean the file is cut short or damaged (it otherwise falls back to
# reading whatever pages it can, which would silently give a partial image).
_CORRUPTION_HINTS = ("corrupt", "invalid page offset", "truncated", "invalid offset")
_MICRO_UNITS = {"µm", "μm", "um", "micron", "microns", "micrometer", "micrometre", "\\u00b5m", "\\u03bcm"}


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


# --------------------------------------------------------------------------------------------
# files and folders


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def is_supported(path: str | Path) -> bool:
    """True when the suffix is one we read (case-insensitive, .ome.tif included)."""
    return _suffix(Path(path)) in SUPPORTED_SUFFIXES


def is_ignored(path: str | Path) -> bool:
    """Hidden files (., ._*), IGNORED_NAMES: never images, never classes."""
    name = Path(path).name
    ignored = {n.lower() for n in IGNORED_NAMES}
    return name.startswith(".") or name.lower() in ignored


def list_images(folder: str | Path) -> list[Path]:
    """Supported, non-ignored image files directly in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and is_supported(p) and not is_ignored(p)),
        key=lambda p: p.name,
    )


# --------------------------------------------------------------------------------------------
# reading


def read_image(path: str | Path) -> ImageData:
    """Read one TIFF/PNG/JPEG into an `ImageData`; ImageReadError (names the file) otherwise."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    if not is_supported(path):
        raise ImageReadError(
            f"{path}: unsupported file type '{path.suffix}' "
            f"(napari-cellclf reads {', '.join(SUPPORTED_SUFFIXES)})"
        )
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    try:
        if _suffix(path) in (".tif", ".tiff"):
            image = _read_tiff(path)
        else:
            image = _read_png_or_jpeg(path)
        _check_shape(image)
        image.significant_bits = _significant_bits(image)
    except ImageReadError:
        raise
    except MemoryError as exc:  # a limit above let through more than this machine has
        raise ImageReadError(f"{path}: not enough memory to read the image ({_first_line(exc)})") from None
    except Exception as exc:  # tifffile/imagecodecs errors: one line that names the file
        kind = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(_suffix(path), "TIFF")
        raise ImageReadError(f"{path}: not a readable {kind} image ({_first_line(exc)})") from exc
    return image


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"


def _check_shape(image: ImageData) -> None:
    shape = tuple(image.data.shape)
    if len(shape) != len(image.axes):
        raise ImageReadError(f"{image.path}: axes '{image.axes}' do not match shape {shape}")
    if 0 in shape:
        raise ImageReadError(f"{image.path}: the image has no pixels (shape {shape})")
    if "Y" not in image.axes or "X" not in image.axes:
        raise ImageReadError(f"{image.path}: no Y and X axes (axes '{image.axes}')")


class _LogCollector(logging.Handler):
    """Collects tifffile's warnings so that corruption becomes an error, not a partial image."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _read_tiff(path: Path) -> ImageData:
    import tifffile

    logger = logging.getLogger("tifffile")
    collector = _LogCollector()
    logger.addHandler(collector)
    propagate, logger.propagate = logger.propagate, False  # no stray log lines for users
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ImageReadError(f"{path}: the TIFF holds no image")
            series = tif.series[0]
            axes = _normalise_axes(path, series.axes, tuple(series.shape))
            _check_complete(path, series, collector.messages)
            _check_declared_size(path, series)
            info = _tiff_metadata(tif, series, axes)
            info["n_series"] = len(tif.series)
            page = series.keyframe
            rgb = (
                int(page.photometric) == 2
                and "S" in axes
                and "C" not in axes
                and series.shape[axes.index("S")] in (3, 4)
                and np.dtype(series.dtype) == np.uint8
                and not (tif.imagej_metadata or {}).get("channels")
            )
            lazy = max(path.stat().st_size, int(series.nbytes)) > LAZY_BYTES
            data = _tiff_data(path, series, lazy)
    finally:
        logger.removeHandler(collector)
        logger.propagate = propagate
    if tuple(data.shape) != tuple(series.shape):
        data = data.reshape(series.shape)  # memmap of a squeezed series; a view, not a copy
    names = info.pop("channel_names")
    if rgb:
        names = ["red", "green", "blue", "alpha"][: series.shape[axes.index("S")]]
        info["channel_colors"] = None
    data, axes, names = _merge_samples_into_channels(path, data, axes, names, lazy)
    return ImageData(
        data=data,
        axes=axes,
        path=str(path),
        channel_names=names,
        pixel_size=info.pop("pixel_size"),
        unit=info.pop("unit"),
        rgb=rgb,
        lazy=isinstance(data, np.memmap) or not isinstance(data, np.ndarray),
        metadata=info,
    )


def _normalise_axes(path: Path, axes: str, shape: tuple[int, ...]) -> str:
    """tifffile axes -> letters of "TZCYXS"; generic stack letters (I, Q, ...) become Z then T."""
    generic = [i for i, a in enumerate(axes) if a not in KNOWN_AXES]
    free = [a for a in "TZ" if a not in axes]
    if len(generic) > len(free) or len(axes) > len(KNOWN_AXES):
        raise ImageReadError(
            f"{path}: {len(shape)}-D image (axes '{axes}', shape {shape}) has more dimensions "
            "than napari-cellclf reads (T, Z, C, Y, X and colour samples S)"
        )
    letters = list(axes)
    for i, letter in zip(reversed(generic), reversed(free)):  # innermost generic -> Z
        letters[i] = letter
    return "".join(letters)


def _check_complete(path: Path, series, log_messages: list[str]) -> None:
    """Truncated/corrupt files: tifffile logs and reads what it can; we refuse instead."""
    hints = [m for m in log_messages if any(h in m.lower() for h in _CORRUPTION_HINTS)]
    if hints:
        raise ImageReadError(f"{path}: the TIFF is truncated or corrupted ({hints[0].splitlines()[0]})")
    size = path.stat().st_size
    last = series.pages[-1] if len(series.pages) else None
    if last is None or not hasattr(last, "dataoffsets"):
        return
    ends = [o + n for o, n in zip(last.dataoffsets, last.databytecounts) if n]
    if ends and max(ends) > size:
        raise ImageReadError(
            f"{path}: the TIFF is truncated (image data runs to byte "
            f"{max(ends)} but the file has {size} bytes)"
        )


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


def _check_declared_size(path: Path, series) -> None:
    """Refuse, before any pixel is allocated, a TIFF whose declared image its file cannot hold:
    OME metadata naming planes that are not stored (tifffile would invent zero planes), and
    compressed pages declaring far more pixels than their stored bytes can decode to."""
    pages = list(series.pages)
    missing = sum(page is None for page in pages)
    if missing:
        raise ImageReadError(
            f"{path}: the metadata declares {len(pages)} planes (shape {tuple(series.shape)}, "
            f"axes {series.axes}) but the file stores only {len(pages) - missing}; "
            "the file is damaged or its OME-XML is wrong"
        )
    page = series.keyframe
    if int(getattr(page, "compression", 1)) == 1:
        return  # uncompressed: _check_complete saw the data fit the file
    declared = int(page.nbytes)
    stored = int(sum(getattr(page, "databytecounts", ()) or ()))
    if declared > RATIO_CHECK_BYTES and declared > MAX_COMPRESSION_RATIO * max(stored, 1):
        raise ImageReadError(
            f"{path}: declares an image of {_describe(page.shape, page.dtype, declared)} per plane "
            f"but stores only {stored} bytes of compressed data for it: not a real image "
            "(a decompression bomb or a damaged header); refused before reading"
        )


def _tiff_data(path: Path, series, lazy: bool):
    """The pixels: read now, or a memmap (contiguous, uncompressed), or a zarr array."""
    if not lazy:
        return series.asarray()
    import tifffile

    if series.dataoffset is not None:
        return tifffile.memmap(path, series=0, mode="r")
    try:
        import zarr
    except ImportError:  # without zarr a compressed large file can only be read whole
        return series.asarray()
    store = tifffile.imread(path, aszarr=True, series=0, level=0)
    return zarr.open(store, mode="r")


def _merge_samples_into_channels(path, data, axes, names, lazy):
    """An image with both C and S (OME allows it): S becomes part of C, channel-major."""
    if not ("C" in axes and "S" in axes):
        return data, axes, names
    if not isinstance(data, np.ndarray) or lazy:
        raise ImageReadError(
            f"{path}: large image with both channel (C) and sample (S) axes is not supported"
        )
    c, s = axes.index("C"), axes.index("S")
    data = np.moveaxis(data, s, c + 1 if s > c else c)
    axes = axes.replace("S", "")
    c = axes.index("C")
    shape = data.shape[:c] + (data.shape[c] * data.shape[c + 1],) + data.shape[c + 2 :]
    return data.reshape(shape), axes, None


def _tiff_metadata(tif, series, axes: str) -> dict:
    n_channels = (
        series.shape[axes.index("C")]
        if "C" in axes
        else (series.shape[axes.index("S")] if "S" in axes else 1)
    )
    info: dict = {"channel_names": None, "pixel_size": None, "unit": None, "channel_colors": None}
    page = series.keyframe
    if tif.is_ome and tif.ome_metadata:
        info["flavour"] = "ome"
        info.update(_ome_info(tif.ome_metadata, axes, n_channels))
    elif tif.is_imagej:
        info["flavour"] = "imagej"
        info.update(_imagej_info(tif.imagej_metadata or {}, page, axes, n_channels))
    else:
        info["flavour"] = "shaped" if tif.is_shaped else "plain"
        info["pixel_size"], info["unit"] = _plain_resolution(page)
    if (
        info["channel_colors"] is None
        and "S" in axes
        and "C" not in axes
        and int(page.photometric) == 2
        and n_channels == 3
    ):
        info["channel_colors"] = ["red", "green", "blue"]  # RGB-stored fluorescence channels
    return info


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_info(xml: str, axes: str, n_channels: int) -> dict:
    root = ElementTree.fromstring(xml)
    pixels = next((e for e in root.iter() if _local(e.tag) == "Pixels"), None)
    if pixels is None:
        return {}
    out: dict = {}
    try:
        y, x = float(pixels.get("PhysicalSizeY")), float(pixels.get("PhysicalSizeX"))
        if y > 0 and x > 0:
            out["pixel_size"] = (y, x)
            out["unit"] = _normalise_unit(pixels.get("PhysicalSizeXUnit", "µm"))
    except (TypeError, ValueError):
        pass
    if "Z" in axes and pixels.get("PhysicalSizeZ"):
        out["z_spacing"] = float(pixels.get("PhysicalSizeZ"))
    names = [c.get("Name") for c in pixels if _local(c.tag) == "Channel"]
    if len(names) == n_channels and all(names):
        out["channel_names"] = names
    return out


def _imagej_info(ij: dict, page, axes: str, n_channels: int) -> dict:
    out: dict = {}
    unit = _normalise_unit(ij.get("unit"))
    resolution = page.resolution if "XResolution" in page.tags else None
    if unit and resolution and resolution[0] > 0 and resolution[1] > 0:
        out["pixel_size"] = (1.0 / resolution[1], 1.0 / resolution[0])
        out["unit"] = unit
    if "Z" in axes and ij.get("spacing"):
        out["z_spacing"] = float(ij["spacing"])
    labels = ij.get("Labels")
    if isinstance(labels, str):
        labels = [labels]
    # ImageJ keeps one label per plane (C fastest): they name channels when they repeat with
    # period C, e.g. ["DAPI", "GFP", "DAPI", "GFP", ...] for a Z stack.
    if (
        isinstance(labels, (list, tuple))
        and "S" not in axes
        and labels
        and len(labels) % n_channels == 0
        and all(label == labels[i % n_channels] for i, label in enumerate(labels))
    ):
        out["channel_names"] = [str(label) for label in labels[:n_channels]]
    luts = ij.get("LUTs")
    if luts is not None and len(luts) == n_channels:
        colors = [_lut_color(np.asarray(lut)) for lut in luts]
        if all(colors):
            out["channel_colors"] = colors
    return out


_LUT_COLORS = {
    (1, 0, 0): "red",
    (0, 1, 0): "green",
    (0, 0, 1): "blue",
    (1, 0, 1): "magenta",
    (0, 1, 1): "cyan",
    (1, 1, 0): "yellow",
    (1, 1, 1): "gray",
}


def _lut_color(lut: np.ndarray) -> str | None:
    """napari colormap name of an ImageJ LUT that is a plain black-to-colour ramp, else None."""
    if lut.shape != (3, 256) or lut[:, 0].max() > 8:
        return None
    end = tuple(int(v > 127) for v in lut[:, 255])
    return _LUT_COLORS.get(end)


def _plain_resolution(page) -> tuple[tuple[float, float] | None, str | None]:
    """Pixel size from resolution tags in cm/mm/µm; implausible values are ignored."""
    if "XResolution" not in page.tags:
        return None, None
    um_per_unit = {3: 1e4, 4: 1e3, 5: 1.0}.get(int(page.resolutionunit))  # cm, mm, µm
    resolution = page.resolution
    if um_per_unit is None or min(resolution) <= 0:
        return None, None
    size = (um_per_unit / resolution[1], um_per_unit / resolution[0])
    if not all(1e-3 <= s <= 1e3 for s in size):  # not a microscope pixel
        return None, None
    return size, "µm"


def _normalise_unit(unit: str | None) -> str | None:
    if unit is None:
        return None
    text = str(unit).strip()
    if text.lower() in _MICRO_UNITS:
        return "µm"
    if text.lower() in ("", "pixel", "pixels", "px"):
        return None
    return text


def _read_png_or_jpeg(path: Path) -> ImageData:
    import imagecodecs

    raw = path.read_bytes()
    kind = "PNG" if _suffix(path) == ".png" else "JPEG"
    header = _png_header(raw) if kind == "PNG" else _jpeg_header(raw)
    if header is None:
        raise ImageReadError(f"{path}: not a readable {kind} image (no valid {kind} header)")
    (height, width, samples, itemsize), complete = header
    declared = height * width * samples * itemsize
    what = _describe(
        (height, width) if samples == 1 else (height, width, samples),
        np.uint16 if itemsize == 2 else np.uint8,
        declared,
    )
    if height * width > MAX_PHOTO_PIXELS:
        raise ImageReadError(
            f"{path}: declares a {kind} image of {what}; napari-cellclf decodes PNG and JPEG files "
            f"of at most {MAX_PHOTO_PIXELS:,} pixels (16384 x 16384) - save larger images "
            "as (tiled) TIFF, which opens lazily"
        )
    if declared > RATIO_CHECK_BYTES and declared > MAX_COMPRESSION_RATIO * len(raw):
        raise ImageReadError(
            f"{path}: declares a {kind} image of {what} in a file of {len(raw)} bytes: "
            "not a real image (a decompression bomb or a damaged header); refused before decoding"
        )
    if not complete:
        raise ImageReadError(
            f"{path}: the {kind} is truncated (its image data ends before the end-of-image marker)"
        )
    if kind == "PNG":
        data, flavour = imagecodecs.png_decode(raw), "png"
    else:
        data, flavour = imagecodecs.jpeg8_decode(raw), "jpeg"
    data = np.asarray(data)
    axes, names, rgb = "YX", None, False
    if data.ndim == 3 and data.shape[-1] in (1, 2):  # grey, grey + alpha: alpha dropped
        data = np.ascontiguousarray(data[..., 0])
    elif data.ndim == 3 and data.shape[-1] in (3, 4):
        axes, rgb = "YXS", True
        names = ["red", "green", "blue", "alpha"][: data.shape[-1]]
    elif data.ndim != 2:
        raise ImageReadError(f"{path}: unexpected {flavour.upper()} shape {data.shape}")
    return ImageData(
        data=data,
        axes=axes,
        path=str(path),
        channel_names=names,
        rgb=rgb,
        metadata={"flavour": flavour, "n_series": 1, "channel_colors": None},
    )


_PNG_SAMPLES = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}  # colour type -> decoded samples (palette: RGBA)


def _png_header(raw: bytes):
    """((height, width, samples, bytes per sample), complete) from the IHDR chunk; None when
    there is none. PNG is checked for truncation by its decoder, so `complete` is True."""
    if not raw.startswith(b"\x89PNG\r\n\x1a\n") or raw[12:16] != b"IHDR" or len(raw) < 29:
        return None
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    bit_depth, colour_type = raw[24], raw[25]
    if colour_type not in _PNG_SAMPLES or width == 0 or height == 0:
        return None
    return (height, width, _PNG_SAMPLES[colour_type], 2 if bit_depth == 16 else 1), True


def _jpeg_header(raw: bytes):
    """((height, width, components, bytes per sample), complete) from the frame header (SOF);
    None when there is none. `complete`: an end-of-image marker follows the first scan (entropy
    coded data never holds FF D9, so its absence means the file was cut short)."""
    if not raw.startswith(b"\xff\xd8"):
        return None
    i, frame = 2, None
    while i + 4 <= len(raw):
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(raw[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 10 <= len(raw):
            precision = raw[i + 4]
            height = int.from_bytes(raw[i + 5 : i + 7], "big")
            width = int.from_bytes(raw[i + 7 : i + 9], "big")
            frame = (height, width, max(1, raw[i + 9]), 2 if precision > 8 else 1)
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            if frame is None or frame[0] == 0 or frame[1] == 0:
                return None
            return frame, raw.find(b"\xff\xd9", i + 2 + length) >= 0
        if length < 2:
            return None
        i += 2 + length
    return None


def _significant_bits(image: ImageData) -> int | None:
    """Smallest usual camera bit depth (8, 10, 12, 14, 16, ...) that holds the data's maximum.
    Lazy data: the maximum of a subsample, so it may undershoot."""
    dtype = np.dtype(image.data.dtype)
    if dtype.kind not in "ui":
        return None
    sample = subsample(image) if image.lazy else np.asarray(image.data)
    top = int(sample.max()) if sample.size else 0
    container = dtype.itemsize * 8
    for bits in (8, 10, 12, 14, 16, 24, 32, 64):
        if bits >= container or top < 2**bits:
            return min(bits, container)
    return container


# --------------------------------------------------------------------------------------------
# display helpers (used by the reader and sample data; no napari here)


def subsample(image: ImageData, channel: int | None = None, max_side: int | None = None) -> np.ndarray:
    """A small numpy sample of the pixels: up to 3 evenly spaced T/Z planes, Y/X strided to at
    most `max_side` pixels, one channel (index on `image.channel_axis`) or all. Reads only that much
    from lazy data. An RGB photo's alpha is left out. `max_side` defaults to SUBSAMPLE_SIDE."""
    data, axes = image.data, image.axes
    max_side = max_side or SUBSAMPLE_SIDE
    leading = [i for i, a in enumerate(axes) if a in "TZ"]
    picks = []
    for i, a in enumerate(axes):
        n = int(data.shape[i])
        if a in "YX":
            picks.append([slice(None, None, max(1, math.ceil(n / max_side)))])
        elif i == image.channel_axis and channel is not None:
            picks.append([int(channel)])
        elif a == "S" and image.rgb:
            picks.append([slice(0, 3)])
        elif i in leading:
            picks.append(sorted({int(k) for k in np.linspace(0, n - 1, min(n, 3)).round()}))
        else:
            picks.append([slice(None)])
    pieces = [np.asarray(data[index]) for index in _product(picks)]
    return np.concatenate([p.ravel() for p in pieces])


def _product(picks: list[list]) -> list[tuple]:
    out: list[tuple] = [()]
    for options in picks:
        out = [prefix + (o,) for prefix in out for o in options]
    return out


def contrast_limits(
    image: ImageData, channel: int | None = None, percentiles: tuple[float, float] = (0.5, 99.8)
) -> tuple[float, float]:
    """Display range from percentiles of a subsample (so 12-bit data in uint16 is not black and
    lazy data is not read whole); always lo < hi. 8-bit RGB photos keep (0, 255)."""
    if image.rgb and np.dtype(image.data.dtype) == np.uint8:
        return 0.0, 255.0
    sample = subsample(image, channel).astype(np.float64, copy=False)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    if hi <= lo:  # flat or nearly flat: fall back to the full range of the sample
        lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


# --------------------------------------------------------------------------------------------
# to the engine's (C, Y, X)


def to_cyx(
    image: ImageData, channels: Sequence[int | str] | None = None, plane: dict[str, int] | None = None
) -> tuple[np.ndarray, list[str]]:
    """float32 (C, Y, X) array and its channel names ("ch0".. when unknown).

    YXS samples become channels; an RGB photo becomes 3 channels. `channels` selects by index or
    name (unknown name / index out of range -> ValueError listing what exists). Z or T longer than
    1 need `plane={"Z": k, "T": t}`, otherwise ValueError saying so (never a silent pick).
    """
    data, axes, shape = image.data, image.axes, tuple(image.data.shape)
    plane = {str(k).upper(): v for k, v in (plane or {}).items()}
    unknown = sorted(set(plane) - set("TZ"))
    if unknown:
        raise ValueError(f"plane: unknown axis {', '.join(unknown)} (only 'T' and 'Z' planes can be chosen)")
    index: list = []
    for a, n in zip(axes, shape):
        if a not in "TZ":
            index.append(slice(None))
        elif a in plane:
            k = plane[a]
            if not isinstance(k, (int, np.integer)) or not 0 <= k < n:
                raise ValueError(
                    f"plane {a}={k!r} is out of range for {image.path} ({a} has {n} planes: 0..{n - 1})"
                )
            index.append(int(k))
        elif n == 1:
            index.append(0)
        else:
            raise ValueError(
                f"{image.path} has {n} {a} planes (axes {axes}, shape {shape}); "
                f"choose one (cellclf: --plane {a}=k with k in 0..{n - 1}; "
                f"Python: plane={{'{a}': k}})"
            )
    rest = "".join(a for a in axes if a not in "TZ")
    values = math.prod(3 if (a == "S" and image.rgb) else n for a, n in zip(axes, shape) if a not in "TZ")
    if values > MAX_FIELD_VALUES:
        raise ImageReadError(
            f"{image.path}: one plane of this image holds {values:,} values "
            f"({', '.join(f'{a} {n}' for a, n in zip(axes, shape) if a not in 'TZ')}), "
            f"{_size(values * 4)} as float32; napari-cellclf trains on and classifies at most "
            f"{MAX_FIELD_VALUES:,} values ({_size(MAX_FIELD_VALUES * 4)}) at once - crop or bin it"
        )
    array = np.asarray(data[tuple(index)])
    if "S" in rest and image.rgb:
        array = np.take(array, [0, 1, 2], axis=rest.index("S"))
    channel_letter = "C" if "C" in rest else ("S" if "S" in rest else None)
    if channel_letter is None:
        array, rest = array[np.newaxis], "C" + rest
        channel_letter = "C"
    array = np.moveaxis(array, [rest.index(channel_letter), rest.index("Y"), rest.index("X")], [0, 1, 2])
    n = array.shape[0]
    names = list(image.channel_names or [])[:n]
    if len(names) != n:
        names = [f"ch{i}" for i in range(n)]
    array, names = select_channels(array, names, channels)
    check_finite(array, image.path, names)
    if array.dtype.kind == "f" and array.dtype.itemsize > 4 and array.size:
        top = float(np.max(np.abs(array)))
        if top > float(np.finfo(np.float32).max):
            raise ImageReadError(
                f"{image.path}: pixel values up to {top:.3g} are beyond the "
                f"float32 range (+-{np.finfo(np.float32).max:.3g}) the engine "
                "works in; rescale the image first"
            )
    array = np.ascontiguousarray(array, dtype=np.float32)
    return array, names


def check_finite(
    cyx: np.ndarray, source: str, names: Sequence[str] | None = None, error: type[Exception] = ImageReadError
) -> None:
    """`error` (ImageReadError for files) when a (C, Y, X) float field holds NaN or infinite
    pixels. A NaN spreads through normalisation and every convolution it touches, so each tile
    that holds one would be classified (and explained) as garbage without a word; we refuse
    instead, saying where. Used for files (to_cyx) and arrays (inference, training data)."""
    cyx = np.asarray(cyx)
    if cyx.dtype.kind not in "fc":
        return
    finite = np.isfinite(cyx)
    if finite.all():
        return
    bad = int(finite.size - np.count_nonzero(finite))
    c, y, x = (int(v) for v in np.argwhere(~finite)[0]) if cyx.ndim == 3 else (0, 0, 0)
    channel = f"channel {names[c]}, " if names and c < len(names) else ""
    raise error(
        f"{source}: {bad:,} pixel(s) are NaN or infinite (first at {channel}y {y}, x {x}); "
        "they have no brightness to classify - replace them (e.g. with 0 or the background "
        "level) first"
    )


def select_channels(
    cyx: np.ndarray, names: Sequence[str], channels: Sequence[int | str] | None
) -> tuple[np.ndarray, list[str]]:
    """Pick channels of a (C, Y, X) array by index or name (rules: channels.resolve_channels)."""
    names = list(names)
    if len(names) != cyx.shape[0]:
        raise ValueError(f"{len(names)} channel names for {cyx.shape[0]} channels")
    if channels is None:
        return cyx, names
    indices = resolve_channels(names, channels)
    return cyx[indices], [names[i] for i in indices]
