"""Files that are not fields yet: 3-D stacks and time series (one plane is picked), and one file
per channel (grouped into one field).

A stack is listed in the Fields table with why it cannot be used as it is; "Use plane" takes the
plane the viewer's sliders show (the widget's face of io's plane selection, `cellclf --plane Z=k`)
and adds it as a 2-D field beside the stack, which is hidden. Channel files are grouped by
`datasets.channel_files` (stem + channel suffix, same shape): their layers get one field id,
channel indices in suffix order, and one position, so they composite as one field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from napari.layers import Image

from ..channels import channel_colormaps
from ..datasets.channel_files import ChannelGroup, group_channel_files
from ._fields import META_KEY, Field, _level0, _plane_shape, field_id_of, role_of
from ._layers import keep_selection


@dataclass
class Unusable:
    id: str
    name: str
    layers: list = field(default_factory=list)
    shape: tuple[int, ...] = ()
    axes: str = ""  # of the layer data, e.g. "ZYX", when the reader said so
    reason: str = ""

    @property
    def size_text(self) -> str:
        if self.axes and len(self.axes) == len(self.shape):
            return " × ".join(f"{a} {n}" for a, n in zip(self.axes, self.shape) if a not in "YX") + (
                f", {self.shape[-1]}×{self.shape[-2]}"
            )
        return "×".join(str(n) for n in self.shape)


def unusable_images(layers: Iterable) -> list[Unusable]:
    """Image layers that are not 2-D fields (stacks, time series), one entry per file."""
    out: dict[str, Unusable] = {}
    for layer in layers:
        if not isinstance(layer, Image) or role_of(layer) is not None or _plane_shape(layer) is not None:
            continue
        info = (layer.metadata or {}).get(META_KEY)
        info = info if isinstance(info, dict) else {}
        fid = str(info.get("field") or f"layer:{layer.unique_id}")
        shape = tuple(int(s) for s in _level0(layer).shape)
        if getattr(layer, "rgb", False):
            shape = shape[:-1]
        axes = str(info.get("layer_axes") or "").replace("S", "")
        if fid not in out:
            out[fid] = Unusable(fid, layer.name.split(" [")[0], [], shape, axes, _reason(shape, axes))
        out[fid].layers.append(layer)
    return list(out.values())


def _reason(shape: tuple[int, ...], axes: str) -> str:
    extra = [(a, n) for a, n in zip(axes, shape) if a not in "YX" and n > 1] if axes else []
    if extra:
        what = {"Z": "a 3-D stack", "T": "a time series"}
        kinds = " and ".join(what.get(a, f"{n} planes along {a}") for a, n in extra)
        kinds += " (" + ", ".join(f"{a} {n}" for a, n in extra) + ")"
    else:
        kinds = " and ".join(f"{n} planes along axis {i}" for i, n in enumerate(shape[:-2]) if n > 1)
    return (
        f"{kinds or 'not one 2-D plane'}: the classifier works on one 2-D plane. Move the slider "
        "to the plane to use, then 'Use plane' (CLI: --plane Z=k)."
    )


def current_plane(viewer, layer) -> tuple[int, ...]:
    """Indices of the leading (non-YX) axes of `layer` at the viewer's slider position."""
    shape = tuple(int(s) for s in _level0(layer).shape)
    if getattr(layer, "rgb", False):
        shape = shape[:-1]
    point = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    lead = len(shape) - 2
    return tuple(int(np.clip(np.round(point[i]), 0, shape[i] - 1)) for i in range(lead))


def use_plane(viewer, item: Unusable) -> list:
    """Add the viewer's current plane of every channel of `item` as a 2-D field; hide the stack."""
    plane = current_plane(viewer, item.layers[0])
    axes = item.axes[: len(plane)] if item.axes else ""
    tag = ",".join(f"{a}={k}" for a, k in zip(axes, plane)) if axes else "plane=" + ",".join(map(str, plane))
    # a layer of another reader has no file id: its name stands in ("stack#plane=2" -> "stack plane=2")
    base = item.name if item.id.startswith("layer:") else item.id
    added = []
    with keep_selection(viewer):
        for layer in item.layers:
            data = np.asarray(_level0(layer)[plane])
            info = dict((layer.metadata or {}).get(META_KEY) or {})
            info.update(field=f"{base}#{tag}", layer_axes=(item.axes[len(plane) :] if axes else "YX"))
            info.setdefault("channel_index", 0)
            info.setdefault("channel_name", layer.name)
            new = viewer.add_image(
                data,
                name=f"{layer.name} [{tag}]",
                colormap=layer.colormap,
                blending=layer.blending,
                contrast_limits=layer.contrast_limits,
                rgb=getattr(layer, "rgb", False),
                scale=tuple(layer.scale[-2:]),
                translate=tuple(layer.translate[-2:]),
                metadata={META_KEY: info},
            )
            layer.visible = False
            added.append(new)
    return added


def channel_groups(fields: Sequence[Field]) -> list[tuple[ChannelGroup, list[Field]]]:
    """Which single-channel fields are the channels of one field (by source file name)."""
    names = [f.source or f.name for f in fields]
    groups = group_channel_files(names, [f.shape for f in fields], [f.n_channels for f in fields])
    return [(g, [fields[i] for i in g.members]) for g in groups]


def group_channels(viewer, fields: Sequence[Field]) -> list[ChannelGroup]:
    """Merge every channel group among `fields` into one field (its first member's position);
    the groups merged."""
    done = []
    for group, members in channel_groups(fields):
        colors = channel_colormaps(list(group.channels))
        for index, (fld, channel, color) in enumerate(zip(members, group.channels, colors)):
            for layer in fld.layers:
                info = dict((layer.metadata or {}).get(META_KEY) or {})
                info.update(
                    source=info.get("source") or fld.source,
                    field=group.stem,
                    channel_index=index,
                    channel_name=channel,
                    n_channels=len(members),
                )
                layer.metadata = {**(layer.metadata or {}), META_KEY: info}
                layer.translate = tuple(layer.translate[:-2]) + tuple(members[0].translate)
                layer.blending = "additive"
                layer.colormap = color
            for other in viewer.layers:  # labels painted on a channel file alone are kept apart
                if field_id_of(other) == fld.id and other not in fld.layers:
                    other.visible = False
        done.append(group)
    return done
