"""One file per channel: which single-channel files are the channels of one field. No Qt.

Plate readers and CellProfiler pipelines often write each channel of a field as its own file,
named by a common stem and a channel suffix: `A01_D.tif`, `A01_F.tif`, `A01_R.tif`
(CellProfiler's DNA/F-actin/...), `img_w1.tif`/`img_w2.tif` (MetaMorph wavelengths),
`x_ch00.tif`, `x_c1.tif`, `x_DAPI.tif`/`x_GFP.tif`. Files group into one field when they share
the stem, carry different channel suffixes and have the same (Y, X) shape; a stem with a single
file is no group, and label/mask files are never channels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Sequence

# The channel token after the last "_", "-" or " ": 1-8 letters (D, F, R, DAPI, GFP), or w/c/ch/
# channel and 1-3 digits (w1, ch00, c2, C01). Not any letters-and-digits: "A01"/"A02" are wells.
_CHANNEL = re.compile(
    r"^(?P<stem>.+?)[_\- ](?P<channel>[A-Za-z]{1,8}|(?:[wWcC]|[cC][hH]|[cC]hannel)\d{1,3})$"
)
# Never channels: the label layouts beside an image (datasets.folders) and common mask names.
_NOT_CHANNELS = {"labels", "objects", "mask", "masks", "seg", "segmentation", "label", "outlines"}
_IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg")


@dataclass(frozen=True)
class ChannelGroup:
    stem: str  # the common name, folder included (the field's id)
    members: tuple[int, ...]  # indices into the names given, in channel order
    channels: tuple[str, ...]  # the channel suffixes, one per member


def split_channel_name(name: str) -> tuple[str, str] | None:
    """("A01", "D") for "A01_D.tif" (folder kept in the stem); None without a channel suffix."""
    path = PurePath(str(name).replace("\\", "/"))
    base = path.name
    for suffix in _IMAGE_SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    match = _CHANNEL.match(base)
    if match is None or match["channel"].lower() in _NOT_CHANNELS:
        return None
    stem = str(path.parent / match["stem"]) if str(path.parent) not in ("", ".") else match["stem"]
    return stem, match["channel"]


def group_channel_files(
    names: Sequence[str], shapes: Sequence[tuple[int, ...]], channel_counts: Sequence[int] | None = None
) -> list[ChannelGroup]:
    """The groups of >= 2 single-channel files that are one field's channels (see the module
    docstring), members ordered by channel suffix; files of another shape than the stem's first
    file stay out of its group."""
    by_stem: dict[tuple[str, tuple[int, ...]], list[tuple[str, int]]] = {}
    for i, (name, shape) in enumerate(zip(names, shapes)):
        if channel_counts is not None and int(channel_counts[i]) != 1:
            continue
        parts = split_channel_name(name)
        if parts is None:
            continue
        stem, channel = parts
        by_stem.setdefault((stem, tuple(int(s) for s in shape[-2:])), []).append((channel, i))
    groups = []
    for (stem, _shape), members in by_stem.items():
        channels = [c for c, _ in members]
        if len(members) < 2 or len(set(c.lower() for c in channels)) != len(channels):
            continue
        members = sorted(members, key=lambda m: _channel_key(m[0]))
        groups.append(ChannelGroup(stem, tuple(i for _, i in members), tuple(c for c, _ in members)))
    return sorted(groups, key=lambda g: min(g.members))


def _channel_key(channel: str) -> tuple:
    """w2 before w10; letters alphabetically (CellProfiler's D, F, R)."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.findall(r"\d+|\D+", channel))
