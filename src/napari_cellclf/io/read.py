"""`read_image`: the one entry point for TIFF (plain, ImageJ hyperstack, OME, multi-page), PNG
and JPEG; the TIFF reader (lazy above `limits.LAZY_BYTES`, corruption and declared-size checks)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import limits
from .files import SUPPORTED_SUFFIXES, _suffix, is_supported
from .image import ImageData, ImageReadError, _describe
from .metadata import _tiff_metadata
from .photos import _read_png_or_jpeg
from .planes import subsample

KNOWN_AXES = "TZCYXS"
# tifffile log messages that mean the file is cut short or damaged (it otherwise falls back to
# reading whatever pages it can, which would silently give a partial image).
_CORRUPTION_HINTS = ("corrupt", "invalid page offset", "truncated", "invalid offset")


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
            lazy = max(path.stat().st_size, int(series.nbytes)) > limits.LAZY_BYTES
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
    if declared > limits.RATIO_CHECK_BYTES and declared > limits.MAX_COMPRESSION_RATIO * max(stored, 1):
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
