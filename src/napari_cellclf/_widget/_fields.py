"""Layers -> fields of view -> (C, Y, X) float32 arrays.

Our reader and sample data open a C-channel file as C image layers that share
`metadata["cellclf"]["field"]` and carry `channel_index` / `channel_name`. Those layers are grouped
back into one field, channels ordered by `channel_index`. Any other 2-D image layer is a field of
its own with one channel (an RGB layer: three). Layers this widget made (labels, classes,
confidence, attribution, tile grid) say so in `metadata["cellclf"]["role"]` and are never fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Iterable, Sequence

import numpy as np
from napari.layers import Image

from ..channels import model_channel_indices, resolve_channels

META_KEY = "cellclf"
ROLE_LABELS = "labels"
ROLE_CLASSES = "classes"
ROLE_CONFIDENCE = "confidence"
ROLE_ATTRIBUTION = "attribution"
ROLE_GRID = "grid"
ROLE_LABELLED = "labelled tiles"
ROLE_VALIDATION = "validation tiles"
DERIVED_ROLES = {
    ROLE_LABELS,
    ROLE_CLASSES,
    ROLE_CONFIDENCE,
    ROLE_ATTRIBUTION,
    ROLE_GRID,
    ROLE_LABELLED,
    ROLE_VALIDATION,
}


@dataclass
class Channel:
    layer: Any  # napari Image layer
    name: str
    sample: int | None = None  # index of the RGB sample for RGB layers


@dataclass
class Field:
    id: str
    name: str
    channels: list[Channel]
    shape: tuple[int, int]
    scale: tuple[float, float]
    translate: tuple[float, float]
    source: str = ""
    layers: list[Any] = field(default_factory=list)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    def check_channels(self, channels: Sequence[int]) -> list[int]:
        """Indices of the chosen channels (all when empty): channels.resolve_channels."""
        try:
            return resolve_channels(self.channel_names, list(channels) if len(channels) else None)
        except ValueError as error:
            raise ValueError(f"field {self.name!r}: {error}") from None

    def stack(self, channels: Sequence[int] = ()) -> np.ndarray:
        """(C, Y, X) float32 copy of the chosen channels (all when empty), in the given order."""
        chosen = self.check_channels(channels)
        out = np.empty((len(chosen),) + self.shape, dtype=np.float32)
        for k, c in enumerate(chosen):
            out[k] = _plane(self.channels[c])
        return out

    def layer_kwargs(self) -> dict:
        """Keyword arguments that put a new layer exactly over this field's pixels."""
        return {"scale": self.scale, "translate": self.translate}


def role_of(layer) -> str | None:
    meta = getattr(layer, "metadata", None) or {}
    info = meta.get(META_KEY)
    return info.get("role") if isinstance(info, dict) else None


def field_id_of(layer) -> str | None:
    """The field a layer belongs to (source images and derived layers alike)."""
    info = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    if isinstance(info, dict) and info.get("field") is not None:
        return str(info["field"])
    if _is_plain_2d_image(layer):
        return f"layer:{layer.unique_id}"
    return None


def derived_metadata(field_id: str, role: str) -> dict:
    return {META_KEY: {"role": role, "field": field_id}}


def find_derived(layers: Iterable, field_id: str, role: str):
    for layer in layers:
        if role_of(layer) == role and field_id_of(layer) == field_id:
            return layer
    return None


def fields_from_layers(layers: Iterable) -> list[Field]:
    """Every field of view among the viewer's image layers, in layer order (bottom first)."""
    grouped: dict[str, list] = {}
    for layer in layers:
        if not isinstance(layer, Image) or role_of(layer) is not None:
            continue
        if _plane_shape(layer) is None:
            continue  # 3-D+ stacks: the classifier works on 2-D fields
        grouped.setdefault(field_id_of(layer), []).append(layer)

    fields: list[Field] = []
    used_names: set[str] = set()
    for fid, members in grouped.items():
        info = (members[0].metadata or {}).get(META_KEY)
        if isinstance(info, dict) and info.get("field") is not None:
            members = sorted(members, key=lambda ly: ly.metadata[META_KEY].get("channel_index", 0))
            channels = [
                c for ly in members for c in _channels_of(ly, ly.metadata[META_KEY].get("channel_name"))
            ]
            name = _display_name(str(info["field"]))
            source = str(info.get("source") or info["field"])
        else:
            layer = members[0]
            channels = _channels_of(layer, layer.name)
            name = layer.name
            source = str(
                (layer.metadata or {}).get("source_path") or getattr(layer.source, "path", None) or layer.name
            )
        shapes = {_plane_shape(c.layer) for c in channels}
        if len(shapes) != 1:
            continue  # channels of different sizes cannot be stacked; such a group is not a field
        base, k = name, 2
        while name in used_names:
            name, k = f"{base} ({k})", k + 1
        used_names.add(name)
        first = channels[0].layer
        fields.append(
            Field(
                id=fid,
                name=name,
                channels=channels,
                shape=shapes.pop(),
                scale=tuple(float(s) for s in first.scale[-2:]),
                translate=tuple(float(t) for t in first.translate[-2:]),
                source=source,
                layers=list(dict.fromkeys(c.layer for c in channels)),
            )
        )
    return fields


def _channels_of(layer, name) -> list[Channel]:
    """An RGB(A) layer gives three channels (alpha is never signal); any other layer one."""
    name = str(name or layer.name)
    if getattr(layer, "rgb", False):
        return [Channel(layer, f"{name} {c}", sample=i) for i, c in enumerate("RGB")]
    return [Channel(layer, name)]


def _display_name(field_id: str) -> str:
    """ "/data/plate1/A01.ome.tif" -> "A01"; "sample:puncta" -> "puncta"; a plane picked from a
    stack, "/data/s.tif#Z=3" -> "s Z=3"."""
    if "#" in field_id:
        base, _, tag = field_id.rpartition("#")
        return f"{_display_name(base)} {tag}"
    scheme, sep, rest = field_id.partition(":")
    if sep and len(scheme) > 1 and scheme.isalpha() and not rest.startswith(("/", "\\")):
        return rest or field_id
    if "/" in field_id or "\\" in field_id:
        name = PurePath(field_id.replace("\\", "/")).name
        for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name
    return field_id


def _is_plain_2d_image(layer) -> bool:
    return isinstance(layer, Image) and _plane_shape(layer) is not None


def _level0(layer):
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def _plane_shape(layer) -> tuple[int, int] | None:
    """(Y, X) when the layer is one 2-D plane (extra axes of length 1 allowed), else None."""
    shape = tuple(int(s) for s in _level0(layer).shape)
    if getattr(layer, "rgb", False):
        shape = shape[:-1]
    if len(shape) < 2 or any(s != 1 for s in shape[:-2]):
        return None
    return shape[-2], shape[-1]


def _plane(channel: Channel) -> np.ndarray:
    data = _level0(channel.layer)
    if channel.sample is not None:
        data = data[..., channel.sample]
    plane = np.asarray(data)
    return plane.reshape(plane.shape[-2:])


def model_channels(
    fld: Field, channel_names: Sequence[str], channel_indices: Sequence[int] | None
) -> list[int]:
    """Which of the field's channels feed a model trained on `channel_names`: by name when the
    field has them all (files may order channels differently), else by the indices the model was
    trained with, else all channels when the count matches. ValueError saying what is expected."""
    try:
        return model_channel_indices(channel_names, channel_indices, fld.channel_names)
    except ValueError as error:
        raise ValueError(f"field {fld.name!r}: {error}") from None
