"""What a TIFF says about itself: OME-XML, ImageJ tags, plain resolution tags -> channel names,
channel colours, pixel size and unit (first match wins; see the package docstring)."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import numpy as np

_MICRO_UNITS = {"µm", "μm", "um", "micron", "microns", "micrometer", "micrometre", "\\u00b5m", "\\u03bcm"}


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
    size_y, size_x, size_z = (pixels.get(f"PhysicalSize{a}") for a in "YXZ")
    # Sizes that are absent or not numbers are unknown, never a reason to refuse the image.
    try:
        if size_y is not None and size_x is not None:
            y, x = float(size_y), float(size_x)
            if y > 0 and x > 0:
                out["pixel_size"] = (y, x)
                out["unit"] = _normalise_unit(pixels.get("PhysicalSizeXUnit", "µm"))
    except ValueError:
        pass
    try:
        if "Z" in axes and size_z:
            out["z_spacing"] = float(size_z)
    except ValueError:
        pass
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
    red, green, blue = (int(v > 127) for v in lut[:, 255])
    return _LUT_COLORS.get((red, green, blue))


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
