"""Fields side by side: a field that lands on top of another is moved into a free slot.

napari opens every file at the origin, so two same-size fields (File > Open Sample twice, two
files dropped) cover each other: their additive channels sum into one picture, the user paints on
the mix and the tile grid belongs to the hidden one. Each field that overlaps one placed before it
is translated, with every layer that belongs to it (all its channels, its labels and result
layers, a ground-truth layer from the same source), into the first free cell of a row-major grid
of slots. Channels stay composited within a field; across fields nothing is on top of anything.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from ._fields import META_KEY, Field, field_id_of

Box = tuple[float, float, float, float]  # y0, x0, y1, x1 in world units
GAP = 0.05  # of the slot size, between neighbouring fields


def field_box(fld: Field) -> Box:
    (sy, sx), (ty, tx) = fld.scale, fld.translate
    return ty, tx, ty + fld.shape[0] * sy, tx + fld.shape[1] * sx


def overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def free_slot(placed: Sequence[Box], size: tuple[float, float], slot: tuple[float, float], cols: int):
    """(y, x) of the first slot, row-major in a grid of `cols` columns of `slot`-sized cells
    (plus the gap), where a box of `size` overlaps none of `placed`."""
    step_y, step_x = slot[0] * (1 + GAP), slot[1] * (1 + GAP)
    for k in range(len(placed) + cols * (len(placed) + 1) + 1):
        y, x = (k // cols) * step_y, (k % cols) * step_x
        box = (y, x, y + size[0], x + size[1])
        if not any(overlaps(box, other) for other in placed):
            return y, x
    raise AssertionError("unreachable: there are more slots than placed boxes")  # pragma: no cover


def arrange(fields: Sequence[Field]) -> dict[str, tuple[float, float]]:
    """Field id -> new (y, x) translate for the fields that overlap one before them (layer order:
    the first opened stays where it is)."""
    if len(fields) < 2:
        return {}
    slot = (
        max(field_box(f)[2] - field_box(f)[0] for f in fields),
        max(field_box(f)[3] - field_box(f)[1] for f in fields),
    )
    cols = max(2, math.ceil(math.sqrt(len(fields))))
    placed: list[Box] = []
    moves: dict[str, tuple[float, float]] = {}
    for fld in fields:
        box = field_box(fld)
        if any(overlaps(box, other) for other in placed):
            y, x = free_slot(placed, (box[2] - box[0], box[3] - box[1]), slot, cols)
            moves[fld.id] = (y, x)
            box = (y, x, y + box[2] - box[0], x + box[3] - box[1])
        placed.append(box)
    return moves


def layers_of(layers: Iterable, fld: Field) -> list:
    """Every layer that sits on this field: its channels, layers derived from it, and layers of
    the same source (the sample data's ground truth)."""
    out = list(fld.layers)
    for layer in layers:
        if layer in out:
            continue
        info = (getattr(layer, "metadata", None) or {}).get(META_KEY)
        same_source = isinstance(info, dict) and info.get("source") in (fld.source, fld.id)
        if field_id_of(layer) == fld.id or same_source:
            out.append(layer)
    return out


def lay_out(viewer, fields: Sequence[Field]) -> list[str]:
    """Move overlapping fields apart (see the module docstring); the ids of the fields moved."""
    moves = arrange(fields)
    by_id = {f.id: f for f in fields}
    for fid, (y, x) in moves.items():
        fld = by_id[fid]
        dy, dx = y - fld.translate[0], x - fld.translate[1]
        for layer in layers_of(viewer.layers, fld):
            translate = np.array(layer.translate, dtype=float)
            translate[-2:] += (dy, dx)
            layer.translate = translate
        fld.translate = (y, x)
    return list(moves)
