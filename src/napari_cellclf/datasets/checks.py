"""Checks made before a job, in words a user can act on. No Qt.

Training refuses what `data.trainability_problems` says on the counted tiles, and labelled
sources whose channels cannot be stacked into one model input (`channel_problems`); both faces ask
here before they start (the widget to disable Train with the reason, the CLI's folder loader to
stop with one error line), so neither keeps thresholds of its own.
"""

from __future__ import annotations

from typing import Sequence

from ..data import Problem, short_list
from ..objects import MASK_CHANNEL_NAME
from .sources import TileCounts, problems


def channel_problems(named: Sequence[tuple[str, Sequence[str]]]) -> list[Problem]:
    """Every labelled source must give the model the same number of channels: (source name,
    its channel names) in order; the first source that differs from the first one is named."""
    if not named:
        return []
    # Object mode's mask channel is cut from cell masks: sources without them (tile fields,
    # class folders) cannot have it. Said as that, not as a channel choice to change.
    masked = [name for name, channels in named if list(channels)[-1:] == [MASK_CHANNEL_NAME]]
    if masked and len(masked) != len(named):
        plain = [name for name, _ in named if name not in masked]
        return [
            Problem(
                f"The cell mask is an extra input channel of the cells of {short_list(map(repr, masked))}, but "
                f"{short_list(map(repr, plain))} {'has' if len(plain) == 1 else 'have'} no cell masks to cut it "
                "from: choose cell masks for every labelled image, or train without the mask channel."
            )
        ]
    first_name, first = named[0]
    for name, channels in named[1:]:
        if len(channels) != len(first):
            return [
                Problem(
                    f"{name!r} has {_channels(channels)} but {first_name!r} has {_channels(first)}: "
                    "every labelled image must give the model the same channels (choose "
                    "channels both have, or leave one of them out)."
                )
            ]
    return []


def training_problems(
    counts: TileCounts, class_names: Sequence[str], named_channels: Sequence[tuple[str, Sequence[str]]] = ()
) -> list[Problem]:
    """Everything that would make training fail (blocking) or mislead, before it starts."""
    return channel_problems(named_channels) + problems(counts, class_names)


def _channels(names: Sequence[str]) -> str:
    n = len(names)
    return f"{n} channel{'s' if n != 1 else ''} ({short_list(names)})"
