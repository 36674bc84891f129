"""Which channels of an image are meant: the one home of the channel rules. No Qt, no torch.

Two questions, answered here for io, the CLI, the widget and inference alike:
- `resolve_channels(names, channels)`: a user's choice (indices and/or names) -> indices into an
  image whose channels are called `names`. Names match exactly, else case-insensitively when that
  is unambiguous; a string of digits ("2" from a command line) is an index.
- `model_channel_indices(model_channels, trained_indices, names)`: which channels of an image feed
  a model trained on `model_channels` when the user chose none.
"""

from __future__ import annotations

import re
from typing import Sequence, Union

import numpy as np

ChannelRef = Union[int, str]  # a channel by 0-based index or by name


def resolve_channels(names: Sequence[str], channels: Sequence[ChannelRef] | ChannelRef | None) -> list[int]:
    """Indices of `channels` among `names` (all of them when None). ValueError listing what exists
    for an unknown name, an index out of range or an empty selection."""
    names = [str(name) for name in names]
    if channels is None:
        return list(range(len(names)))
    if isinstance(channels, (str, int, np.integer)):
        channels = [channels]
    if len(channels) == 0:
        raise ValueError("channels: empty selection (give channel indices or names)")
    available = ", ".join(f"{i}={name}" for i, name in enumerate(names))
    return [_channel_index(channel, names, available) for channel in channels]


def _channel_index(channel, names: list[str], available: str) -> int:
    if isinstance(channel, (bool, np.bool_)):
        raise ValueError(f"channel {channel!r}: not a channel index or name ({available})")
    if isinstance(channel, (int, np.integer)):
        if 0 <= channel < len(names):
            return int(channel)
        raise ValueError(
            f"channel index {channel} is out of range: there are {len(names)} channel(s) ({available})"
        )
    if isinstance(channel, str):
        if channel in names:
            return names.index(channel)
        folded = [i for i, name in enumerate(names) if name.lower() == channel.lower()]
        if len(folded) == 1:
            return folded[0]
        if channel.strip().isdigit():  # "2" from a command line
            return _channel_index(int(channel), names, available)
        raise ValueError(f"no channel named '{channel}' ({available})")
    raise ValueError(f"channel {channel!r}: not a channel index or name ({available})")


def model_channel_indices(
    model_channels: Sequence[str], trained_indices: Sequence[int] | None, names: Sequence[str]
) -> list[int]:
    """Which channels of an image (named `names`) feed a model trained on `model_channels`
    (ModelMeta.channel_names / .channel_indices): by name when the image has each of them exactly
    once (files may order channels differently), else the indices the model was trained with,
    else all channels when the count matches. ValueError saying what the model expects otherwise."""
    wanted, names = list(model_channels), list(names)
    if wanted and all(names.count(name) == 1 for name in wanted):
        return [names.index(name) for name in wanted]
    indices = trained_indices
    if indices and len(indices) == len(wanted) and all(0 <= i < len(names) for i in indices):
        return list(indices)
    if len(names) == len(wanted):
        return list(range(len(names)))
    raise ValueError(
        f"the model expects {len(wanted)} channel(s) ({', '.join(wanted)}), "
        f"the image has {len(names)} ({', '.join(names)})"
    )


# Channel names that are nuclear stains: shown blue, like on the microscope.
NUCLEAR = re.compile(r"dapi|hoechst|h33342|h3342|\bhoe|dna|nucle|draq|\bh2b|sytox|\bpi\b", re.I)
# Other channels of a multi-channel image, in order (blue stays free for the nucleus).
COLOR_CYCLE = ("green", "magenta", "cyan", "yellow", "red", "gray")


def channel_colormaps(names: list[str], file_colors: list[str] | None = None) -> list[str]:
    """napari colormap per channel: one channel -> gray; the file's own colours (ImageJ LUTs,
    RGB samples) when it has them; else nuclear stains blue and the rest green, magenta, cyan,
    yellow, ..."""
    if len(names) == 1:
        return ["gray"]
    if file_colors and len(file_colors) == len(names):
        return list(file_colors)
    colors = ["blue" if NUCLEAR.search(name) else None for name in names]
    cycle = iter(c for c in COLOR_CYCLE * len(names))
    return [c or next(cycle) for c in colors]
