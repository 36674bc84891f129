"""Pixel size of the training data vs. the field being classified. No Qt.

A CNN trained on tiles learns structures at one scale: a field imaged with pixels 2x smaller
shows every cell 2x larger inside the same tile, and the classes can silently go wrong. The model
file keeps the training data's pixel size (`ModelMeta.pixel_size`, from the files' metadata via
io); `pixel_size_warning` compares a field's pixel size with it and returns a sentence for the
CLI and the widget to show when they differ by more than `DEFAULT_FACTOR` on either axis.
"""

from __future__ import annotations

import math
from typing import Iterable

DEFAULT_FACTOR = 1.25
# Length of one unit in micrometres, for the units io reports (io._normalise_unit: "µm", ...).
_MICROMETRES = {
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "Å": 1e-4,
    "angstrom": 1e-4,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
}


def pixel_size_record(pixel_size, unit: str | None) -> dict | None:
    """ModelMeta.pixel_size from an io.ImageData's (y, x) pixel_size and unit; None if unknown."""
    if not pixel_size:
        return None
    y, x = (float(v) for v in pixel_size)
    if not (math.isfinite(y) and math.isfinite(x) and y > 0 and x > 0):
        return None
    return {"y": y, "x": x, "unit": unit or None}


def in_micrometres(record: dict | None) -> tuple[float, float] | None:
    """(y, x) in µm, or None when unknown or the unit is not a length we know."""
    if not record:
        return None
    scale = _MICROMETRES.get(str(record.get("unit")).strip()) if record.get("unit") else None
    if scale is None:
        return None
    return float(record["y"]) * scale, float(record["x"]) * scale


def training_pixel_size(images: Iterable) -> dict | None:
    """One pixel size for the training data: the median over the images (objects with
    `.pixel_size` and `.unit`, e.g. io.ImageData) whose size is known, in µm when the units allow.
    None when no image has one."""
    records = [
        r
        for r in (pixel_size_record(getattr(i, "pixel_size", None), getattr(i, "unit", None)) for i in images)
        if r
    ]
    if not records:
        return None
    in_um = [v for v in (in_micrometres(r) for r in records) if v is not None]
    if len(in_um) == len(records):
        ys, xs, unit = [v[0] for v in in_um], [v[1] for v in in_um], "µm"
    else:
        unit = records[0]["unit"]
        same = [r for r in records if r["unit"] == unit]
        ys, xs = [r["y"] for r in same], [r["x"] for r in same]
    return {"y": _median(ys), "x": _median(xs), "unit": unit}


def training_pixel_size_of_files(paths: Iterable, limit: int = 64) -> dict | None:
    """training_pixel_size of the image files (metadata as io reads it; at most `limit` files,
    evenly spread, are opened); unreadable files and sources that are not files (napari layer
    names) are skipped."""
    from pathlib import Path

    from .io import ImageReadError, read_image

    unique = list(dict.fromkeys(str(p) for p in paths))
    if len(unique) > limit:
        unique = [unique[round(i * (len(unique) - 1) / (limit - 1))] for i in range(limit)]
    images = []
    for path in unique:
        if not Path(path).is_file():
            continue
        try:
            images.append(read_image(path))
        except (ImageReadError, OSError):
            continue
    return training_pixel_size(images)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def pixel_size_warning(
    field_pixel_size,
    field_unit: str | None,
    model_pixel_size: dict | None,
    factor: float = DEFAULT_FACTOR,
    name: str = "This image",
) -> str | None:
    """A sentence when the field's pixel size differs from the model's training pixel size by more
    than `factor` (either way, on either axis); None when they agree or either is unknown."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor!r}")
    field = pixel_size_record(field_pixel_size, field_unit)
    if field is None or not model_pixel_size:
        return None
    a, b = in_micrometres(field), in_micrometres(model_pixel_size)
    if a is None or b is None:
        if field.get("unit") != model_pixel_size.get("unit"):
            return None  # lengths we cannot convert: say nothing rather than guess
        a = (field["y"], field["x"])
        b = (float(model_pixel_size["y"]), float(model_pixel_size["x"]))
        unit = field.get("unit") or "units"
    else:
        unit = "µm"
    ratios = [fa / mb for fa, mb in zip(a, b)]
    worst = max(ratios, key=lambda r: max(r, 1 / r))
    if max(worst, 1 / worst) <= factor:
        return None
    if worst < 1:
        look = f"cells look {1 / worst:.1f}x larger than in training"
    else:
        look = f"cells look {worst:.1f}x smaller than in training"
    return (
        f"{name} has {_size_text(a, unit)} pixels but the model was trained on "
        f"{_size_text(b, unit)} pixels: {look}, so its classes may be wrong; resample the image "
        f"to the training pixel size (or train on images like it). Warned above a {factor:g}x "
        f"difference."
    )


def _size_text(size: tuple[float, float], unit: str) -> str:
    y, x = size
    return f"{y:.3g} {unit}" if math.isclose(y, x, rel_tol=1e-3) else f"{y:.3g} x {x:.3g} {unit}"
