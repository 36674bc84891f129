"""Hostile and damaged files for the bad-input tests (test_fuzz.py and the unit tests).

Each function writes one small file into a folder and returns its path. The bombs are tiny on
disk and declare huge images; the rest are truncations, lies in metadata and odd values.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

# TIFF tag numbers used by the hand-written files below.
_WIDTH, _LENGTH, _BITS, _COMPRESSION, _PHOTOMETRIC = 256, 257, 258, 259, 262
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_BYTES = 273, 277, 278, 279
_TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_BYTES = 322, 323, 324, 325
_SHORT, _LONG = 3, 4


def _tiff(
    path: Path, tags: dict[int, tuple[int, list[int]]], payload: bytes, offset_tags: tuple[int, ...]
) -> Path:
    """A little-endian classic TIFF with one IFD. `offset_tags` hold offsets into `payload`
    (which is stored right after the header) and are shifted to file offsets here."""
    header = 8
    ifd_at = header + len(payload) + (len(payload) % 2)
    entries = sorted(tags.items())
    extra = bytearray()
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd = bytearray(struct.pack("<H", len(entries)))
    for tag, (kind, values) in entries:
        if tag in offset_tags:
            values = [header + v for v in values]
        fmt = "<H" if kind == _SHORT else "<I"
        data = b"".join(struct.pack(fmt, v) for v in values)
        if len(data) <= 4:
            ifd += struct.pack("<HHI", tag, kind, len(values)) + data.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, kind, len(values), extra_at + len(extra))
            extra += data
    ifd += struct.pack("<I", 0)
    body = b"II*\0" + struct.pack("<I", ifd_at) + payload + b"\0" * (len(payload) % 2)
    path.write_bytes(body + bytes(ifd) + bytes(extra))
    return path


def deflate_bomb_tiff(folder: Path, side: int = 100_000) -> Path:
    """~200 bytes, one deflate strip, declares side x side uint16 (20 GB for 100,000)."""
    strip = zlib.compress(b"\0" * 4096, 9)
    tags = {
        _WIDTH: (_LONG, [side]),
        _LENGTH: (_LONG, [side]),
        _BITS: (_SHORT, [16]),
        _COMPRESSION: (_SHORT, [8]),
        _PHOTOMETRIC: (_SHORT, [1]),
        _STRIP_OFFSETS: (_LONG, [0]),
        _ROWS_PER_STRIP: (_LONG, [side]),
        _STRIP_BYTES: (_LONG, [len(strip)]),
        _SAMPLES: (_SHORT, [1]),
    }
    return _tiff(folder / "deflate_bomb.tif", tags, strip, (_STRIP_OFFSETS,))


def tiled_bomb_tiff(folder: Path, side: int = 100_000, tile: int = 50_000) -> Path:
    """A tiled deflate TIFF whose few tiles all point at one tiny stream; declares side x side
    uint16 (18.6 GiB for 100,000)."""
    stream = zlib.compress(b"\0" * 4096, 9)
    n = (-(-side // tile)) ** 2
    tags = {
        _WIDTH: (_LONG, [side]),
        _LENGTH: (_LONG, [side]),
        _BITS: (_SHORT, [16]),
        _COMPRESSION: (_SHORT, [8]),
        _PHOTOMETRIC: (_SHORT, [1]),
        _TILE_WIDTH: (_LONG, [tile]),
        _TILE_LENGTH: (_LONG, [tile]),
        _TILE_OFFSETS: (_LONG, [0] * n),
        _TILE_BYTES: (_LONG, [len(stream)] * n),
        _SAMPLES: (_SHORT, [1]),
    }
    return _tiff(folder / "tiled_bomb.tif", tags, stream, (_TILE_OFFSETS,))


def _jpeg_bytes(shape=(64, 64), seed: int = 0) -> bytes:
    import imagecodecs

    rng = np.random.default_rng(seed)
    return bytes(imagecodecs.jpeg8_encode(rng.integers(0, 255, shape, dtype=np.uint8), level=90))


def jpeg_bomb(folder: Path, height: int = 65_500, width: int = 65_500) -> Path:
    """A 16x16 JPEG whose frame header (SOF) is edited to declare height x width."""
    raw = bytearray(_jpeg_bytes((16, 16)))
    i = 2
    while i < len(raw):
        marker, length = raw[i + 1], struct.unpack(">H", raw[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            raw[i + 5 : i + 9] = struct.pack(">HH", height, width)
            break
        i += 2 + length
    path = folder / "jpeg_bomb.jpg"
    path.write_bytes(bytes(raw))
    return path


def truncated_jpeg(folder: Path) -> Path:
    raw = _jpeg_bytes((96, 96))
    path = folder / "truncated.jpg"
    path.write_bytes(raw[: len(raw) * 2 // 3])
    return path


def good_jpeg(folder: Path, shape=(96, 96)) -> Path:
    path = folder / "good.jpg"
    path.write_bytes(_jpeg_bytes(shape))
    return path


def png_bomb(folder: Path, side: int = 100_000) -> Path:
    """A 4x4 PNG whose IHDR (with a correct CRC) declares side x side RGB."""
    import imagecodecs

    raw = bytearray(imagecodecs.png_encode(np.zeros((4, 4, 3), np.uint8)))
    ihdr = raw[12:29]  # b"IHDR" + 13 bytes of header data
    ihdr[4:12] = struct.pack(">II", side, side)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path = folder / "png_bomb.png"
    path.write_bytes(bytes(raw))
    return path


def ome_more_planes_than_stored(folder: Path) -> Path:
    """An OME-TIFF of 2 channels whose XML says SizeC=5 (tifffile would invent 3 zero planes)."""
    import tifffile

    path = folder / "lying.ome.tif"
    data = np.arange(2 * 32 * 32, dtype=np.uint16).reshape(2, 32, 32) + 1
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "CYX"})
    raw = path.read_bytes()
    assert raw.count(b'SizeC="2"') == 1
    path.write_bytes(raw.replace(b'SizeC="2"', b'SizeC="5"'))
    return path


def nan_tiff(folder: Path, shape=(64, 64)) -> Path:
    import tifffile

    data = np.random.default_rng(0).random(shape).astype(np.float32)
    data[5:9, 10:12] = np.nan
    path = folder / "nan.tif"
    tifffile.imwrite(path, data)
    return path


# --------------------------------------------------------------------------------------------
# model files


def edit_model_header(path: Path, change=None, meta_text: str | None = None, out: Path | None = None) -> Path:
    """Rewrite the cellclf metadata of a saved model as a tamperer would, keeping its weights and
    checksum: `change(meta_dict)` edits the parsed metadata in place, or `meta_text` replaces it."""
    import json

    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    if meta_text is None:
        meta = json.loads(header["__metadata__"]["cellclf"])
        change(meta)
        meta_text = json.dumps(meta)
    header["__metadata__"]["cellclf"] = meta_text
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    out = out or path
    out.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + length :])
    return out


def flip_weight_byte(path: Path, out: Path | None = None) -> Path:
    """One byte in the middle of the tensor data inverted (a bad disk sector, a bad copy)."""
    raw = bytearray(path.read_bytes())
    length = struct.unpack("<Q", raw[:8])[0]
    data_start = 8 + length
    raw[data_start + (len(raw) - data_start) // 2] ^= 0x10
    out = out or path
    out.write_bytes(bytes(raw))
    return out


def deeply_nested_header(path: Path, depth: int = 100_000, out: Path | None = None) -> Path:
    import json

    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    meta_text = json.loads(raw[8 : 8 + length])["__metadata__"]["cellclf"]
    nested = meta_text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    return edit_model_header(path, meta_text=nested, out=out)
