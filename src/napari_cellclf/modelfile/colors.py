"""Class colours: the default palette (colour-blind safe, visible on napari's dark canvas) and
CIELAB distances for spreading more colours than the palette holds."""

from __future__ import annotations

import colorsys
import re
from collections.abc import Sequence

import numpy as np

# Okabe & Ito (2008) colour-blind-safe palette, black left out (invisible on napari's dark canvas).
_OKABE_ITO = ["#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7"]
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


def default_class_colors(n: int) -> list[str]:
    """n distinct, colour-blind-friendly hex colours (Okabe-Ito first); returns for any n.

    Past the palette, up to `_SPREAD_MAX` colours: each next colour is the candidate (a hue x
    saturation x brightness grid, light enough for napari's dark canvas) farthest in CIELAB from
    every colour chosen so far, so no two classes look alike (the old golden-angle loop gave
    classes 8-11 one yellow hue). Beyond that, golden-angle hues at four saturation/brightness
    levels, then the remaining colours in order from the whole 24-bit cube."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"number of colours must be an integer >= 0, got {n!r}")
    if n > 2**24:
        raise ValueError(f"there are only {2**24} distinct '#rrggbb' colours, {n} asked for")
    colors = list(_OKABE_ITO[:n])
    if len(colors) < n:
        colors += _spread_colors(colors, min(n, _SPREAD_MAX) - len(colors))
    seen = set(colors)
    levels = ((0.65, 0.95), (0.65, 0.75), (0.45, 0.95), (0.85, 0.85))
    i = 0
    while len(colors) < n and i < 8 * n + 64:
        saturation, value = levels[i % len(levels)]
        hue = (0.13 + i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
        candidate = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
        if candidate not in seen:
            colors.append(candidate)
            seen.add(candidate)
        i += 1
    code = 0x404040  # fallback: every remaining colour, brightest-ish first
    while len(colors) < n:
        candidate = f"#{code % 2**24:06x}"
        if candidate not in seen:
            colors.append(candidate)
            seen.add(candidate)
        code += 1
    return colors


_SPREAD_MAX = 64
_MIN_LIGHTNESS = 50.0  # CIELAB L*: darker colours vanish on napari's black canvas


def _spread_colors(chosen: list[str], k: int) -> list[str]:
    """k colours by farthest-point sampling in CIELAB from a fixed candidate grid (deterministic)."""
    candidates = []
    for h in range(36):
        for s in (0.45, 0.7, 0.95):
            for v in (0.7, 0.95):
                r, g, b = colorsys.hsv_to_rgb(h / 36, s, v)
                candidates.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    lab = hex_to_lab(candidates)
    keep = lab[:, 0] >= _MIN_LIGHTNESS
    candidates, lab = [c for c, ok in zip(candidates, keep) if ok], lab[keep]
    distance = np.full(len(candidates), np.inf)
    if chosen:
        distance = np.linalg.norm(lab[:, None] - hex_to_lab(chosen)[None], axis=-1).min(axis=1)
    out: list[str] = []
    for _ in range(min(k, len(candidates))):
        best = int(distance.argmax())
        out.append(candidates[best])
        distance = np.minimum(distance, np.linalg.norm(lab - lab[best], axis=1))
    return out


def hex_to_lab(colors: Sequence[str]) -> np.ndarray:
    """(N, 3) CIELAB (D65) of '#rrggbb' colours: distances there follow perceived difference."""
    rgb = np.array([[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in colors], dtype=float)
    rgb = rgb.reshape(-1, 3)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)
