"""PNG and JPEG through imagecodecs (imageio/Pillow squash 16-bit RGB PNGs to 8 bits), with
their declared size checked from the header before decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import limits
from .files import _suffix
from .image import ImageData, ImageReadError, _describe


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
    if height * width > limits.MAX_PHOTO_PIXELS:
        raise ImageReadError(
            f"{path}: declares a {kind} image of {what}; napari-cellclf decodes PNG and JPEG files "
            f"of at most {limits.MAX_PHOTO_PIXELS:,} pixels (16384 x 16384) - save larger images "
            "as (tiled) TIFF, which opens lazily"
        )
    if declared > limits.RATIO_CHECK_BYTES and declared > limits.MAX_COMPRESSION_RATIO * len(raw):
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
