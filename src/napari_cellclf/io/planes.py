"""From an `ImageData` to the engine's float32 (C, Y, X) plane (`to_cyx`: plane choice, channel
selection, finite and float32-range checks) and small display samples (`subsample`,
`contrast_limits`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..channels import resolve_channels
from . import limits
from .image import ImageData, ImageReadError, _size


def subsample(image: ImageData, channel: int | None = None, max_side: int | None = None) -> np.ndarray:
    """A small numpy sample of the pixels: up to 3 evenly spaced T/Z planes, Y/X strided to at
    most `max_side` pixels, one channel (index on `image.channel_axis`) or all. Reads only that much
    from lazy data. An RGB photo's alpha is left out. `max_side` defaults to limits.SUBSAMPLE_SIDE."""
    data, axes = image.data, image.axes
    max_side = max_side or limits.SUBSAMPLE_SIDE
    leading = [i for i, a in enumerate(axes) if a in "TZ"]
    picks: list[Sequence[int | slice]] = []
    for i, a in enumerate(axes):
        n = int(data.shape[i])
        if a in "YX":
            picks.append([slice(None, None, max(1, math.ceil(n / max_side)))])
        elif i == image.channel_axis and channel is not None:
            picks.append([int(channel)])
        elif a == "S" and image.rgb:
            picks.append([slice(0, 3)])
        elif i in leading:
            picks.append(sorted({int(k) for k in np.linspace(0, n - 1, min(n, 3)).round()}))
        else:
            picks.append([slice(None)])
    pieces = [np.asarray(data[index]) for index in _product(picks)]
    return np.concatenate([p.ravel() for p in pieces])


def _product(picks: Sequence[Sequence[int | slice]]) -> list[tuple]:
    out: list[tuple] = [()]
    for options in picks:
        out = [prefix + (o,) for prefix in out for o in options]
    return out


def contrast_limits(
    image: ImageData, channel: int | None = None, percentiles: tuple[float, float] = (0.5, 99.8)
) -> tuple[float, float]:
    """Display range from percentiles of a subsample (so 12-bit data in uint16 is not black and
    lazy data is not read whole); always lo < hi. 8-bit RGB photos keep (0, 255)."""
    if image.rgb and np.dtype(image.data.dtype) == np.uint8:
        return 0.0, 255.0
    sample = subsample(image, channel).astype(np.float64, copy=False)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    if hi <= lo:  # flat or nearly flat: fall back to the full range of the sample
        lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def to_cyx(
    image: ImageData, channels: Sequence[int | str] | None = None, plane: dict[str, int] | None = None
) -> tuple[np.ndarray, list[str]]:
    """float32 (C, Y, X) array and its channel names ("ch0".. when unknown).

    YXS samples become channels; an RGB photo becomes 3 channels. `channels` selects by index or
    name (unknown name / index out of range -> ValueError listing what exists). Z or T longer than
    1 need `plane={"Z": k, "T": t}`, otherwise ValueError saying so (never a silent pick).
    """
    data, axes, shape = image.data, image.axes, tuple(image.data.shape)
    plane = {str(k).upper(): v for k, v in (plane or {}).items()}
    unknown = sorted(set(plane) - set("TZ"))
    if unknown:
        raise ValueError(f"plane: unknown axis {', '.join(unknown)} (only 'T' and 'Z' planes can be chosen)")
    index: list = []
    for a, n in zip(axes, shape):
        if a not in "TZ":
            index.append(slice(None))
        elif a in plane:
            k = plane[a]
            if not isinstance(k, (int, np.integer)) or not 0 <= k < n:
                raise ValueError(
                    f"plane {a}={k!r} is out of range for {image.path} ({a} has {n} planes: 0..{n - 1})"
                )
            index.append(int(k))
        elif n == 1:
            index.append(0)
        else:
            raise ValueError(
                f"{image.path} has {n} {a} planes (axes {axes}, shape {shape}); "
                f"choose one (cellclf: --plane {a}=k with k in 0..{n - 1}; "
                f"Python: plane={{'{a}': k}})"
            )
    rest = "".join(a for a in axes if a not in "TZ")
    values = math.prod(3 if (a == "S" and image.rgb) else n for a, n in zip(axes, shape) if a not in "TZ")
    if values > limits.MAX_FIELD_VALUES:
        raise ImageReadError(
            f"{image.path}: one plane of this image holds {values:,} values "
            f"({', '.join(f'{a} {n}' for a, n in zip(axes, shape) if a not in 'TZ')}), "
            f"{_size(values * 4)} as float32; napari-cellclf trains on and classifies at most "
            f"{limits.MAX_FIELD_VALUES:,} values ({_size(limits.MAX_FIELD_VALUES * 4)}) at once - crop or bin it"
        )
    array = np.asarray(data[tuple(index)])
    if "S" in rest and image.rgb:
        array = np.take(array, [0, 1, 2], axis=rest.index("S"))
    channel_letter = "C" if "C" in rest else ("S" if "S" in rest else None)
    if channel_letter is None:
        array, rest = array[np.newaxis], "C" + rest
        channel_letter = "C"
    array = np.moveaxis(array, [rest.index(channel_letter), rest.index("Y"), rest.index("X")], [0, 1, 2])
    n = array.shape[0]
    names = list(image.channel_names or [])[:n]
    if len(names) != n:
        names = [f"ch{i}" for i in range(n)]
    array, names = select_channels(array, names, channels)
    check_finite(array, image.path, names)
    if array.dtype.kind == "f" and array.dtype.itemsize > 4 and array.size:
        top = float(np.max(np.abs(array)))
        if top > float(np.finfo(np.float32).max):
            raise ImageReadError(
                f"{image.path}: pixel values up to {top:.3g} are beyond the "
                f"float32 range (+-{np.finfo(np.float32).max:.3g}) the engine "
                "works in; rescale the image first"
            )
    array = np.ascontiguousarray(array, dtype=np.float32)
    return array, names


def check_finite(
    cyx: np.ndarray, source: str, names: Sequence[str] | None = None, error: type[Exception] = ImageReadError
) -> None:
    """`error` (ImageReadError for files) when a (C, Y, X) float field holds NaN or infinite
    pixels. A NaN spreads through normalisation and every convolution it touches, so each tile
    that holds one would be classified (and explained) as garbage without a word; we refuse
    instead, saying where. Used for files (to_cyx) and arrays (inference, training data)."""
    cyx = np.asarray(cyx)
    if cyx.dtype.kind not in "fc":
        return
    finite = np.isfinite(cyx)
    if finite.all():
        return
    bad = int(finite.size - np.count_nonzero(finite))
    c, y, x = (int(v) for v in np.argwhere(~finite)[0]) if cyx.ndim == 3 else (0, 0, 0)
    channel = f"channel {names[c]}, " if names and c < len(names) else ""
    raise error(
        f"{source}: {bad:,} pixel(s) are NaN or infinite (first at {channel}y {y}, x {x}); "
        "they have no brightness to classify - replace them (e.g. with 0 or the background "
        "level) first"
    )


def select_channels(
    cyx: np.ndarray, names: Sequence[str], channels: Sequence[int | str] | None
) -> tuple[np.ndarray, list[str]]:
    """Pick channels of a (C, Y, X) array by index or name (rules: channels.resolve_channels)."""
    names = list(names)
    if len(names) != cyx.shape[0]:
        raise ValueError(f"{len(names)} channel names for {cyx.shape[0]} channels")
    if channels is None:
        return cyx, names
    indices = resolve_channels(names, channels)
    return cyx[indices], [names[i] for i in indices]
