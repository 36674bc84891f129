"""`ModelMeta`, the JSON metadata a model file carries, and its schema checks (`from_dict` refuses
anything load_model could not use, with ModelFileError naming what)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._files import json_ready
from ..baseline import FEATURES_ARCHITECTURE
from ..data import NORMALIZATION_MODES as _NORMALIZATION_MODES
from ..model import ARCHITECTURES
from ..objects import MASK_CHANNEL_NAME, stored_settings
from ..tiling import MAX_CLASSES, MAX_TILE_SIZE, MIN_TILE_SIZE, check_tile_size
from .colors import _HEX_COLOR

FORMAT_VERSION = 1
# Deepest nesting of JSON objects/lists in the metadata (history and extra hold a few levels).
MAX_METADATA_DEPTH = 32
# Normalisation bounds beyond any pixel value: larger ones overflow float32 arithmetic.
MAX_NORMALIZATION_VALUE = 1e30
MAX_MEMBERS = 64


class ModelFileError(ValueError):
    """The file is not a valid napari-cellclf model; the message names the file and why."""


@dataclass
class ModelMeta:
    class_names: list[str]
    class_colors: list[str]  # "#rrggbb", one per class
    channel_names: list[str]  # channels the model was trained on, in order
    tile_size: int
    architecture: str  # model.ARCHITECTURES
    normalization: dict  # data.Normalization.to_dict()
    channel_indices: list[int] | None = None  # indices into the source image, when known
    history: dict = field(
        default_factory=dict
    )  # training.History as dict (per-run curves, summary, warnings)
    seed: int | None = None
    package_version: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    # Training data's pixel size {"y": float, "x": float, "unit": str | None}; None = unknown.
    pixel_size: dict | None = None
    n_members: int = 1  # > 1: an ensemble of that many models (averaged probabilities)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return len(self.channel_names)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (numpy scalars become Python numbers, NaN/inf become None)."""
        return json_ready(
            {
                "format_version": self.format_version,
                "class_names": list(self.class_names),
                "class_colors": list(self.class_colors),
                "channel_names": list(self.channel_names),
                "channel_indices": None if self.channel_indices is None else list(self.channel_indices),
                "tile_size": self.tile_size,
                "architecture": self.architecture,
                "normalization": dict(self.normalization),
                "history": dict(self.history),
                "seed": self.seed,
                "package_version": self.package_version,
                "extra": dict(self.extra),
                "pixel_size": None if self.pixel_size is None else dict(self.pixel_size),
                "n_members": self.n_members,
            }
        )

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMeta":
        """Validate types/lengths; ModelFileError on anything missing or inconsistent."""
        if not isinstance(d, dict):
            raise ModelFileError(f"metadata must be a JSON object, got {type(d).__name__}")
        if _depth(d) > MAX_METADATA_DEPTH + 1:
            raise ModelFileError(f"metadata is nested more than {MAX_METADATA_DEPTH} levels deep")
        missing = [
            key
            for key in (
                "class_names",
                "class_colors",
                "channel_names",
                "tile_size",
                "architecture",
                "normalization",
            )
            if key not in d
        ]
        if missing:
            raise ModelFileError(f"metadata lacks {', '.join(missing)}")
        format_version = d.get("format_version", FORMAT_VERSION)
        if not _is_int(format_version) or format_version < 1:
            raise ModelFileError(f"format_version must be a positive integer, got {format_version!r}")
        if format_version > FORMAT_VERSION:
            raise ModelFileError(
                f"written in model format {format_version} by a newer napari-cellclf "
                f"(this one reads format {FORMAT_VERSION}); update napari-cellclf"
            )
        class_names = _string_list(d["class_names"], "class_names", min_length=2)
        if len(class_names) > MAX_CLASSES:
            raise ModelFileError(f"{len(class_names)} classes; a model has at most {MAX_CLASSES}")
        if len(set(class_names)) != len(class_names):
            raise ModelFileError(f"class_names repeat a name: {class_names}")
        class_colors = _string_list(d["class_colors"], "class_colors", min_length=len(class_names))
        if len(class_colors) != len(class_names):
            raise ModelFileError(f"{len(class_colors)} class_colors for {len(class_names)} classes")
        bad_colors = [c for c in class_colors if not _HEX_COLOR.match(c)]
        if bad_colors:
            raise ModelFileError(f"class_colors must be '#rrggbb', got {bad_colors}")
        channel_names = _string_list(d["channel_names"], "channel_names", min_length=1)
        extra = d.get("extra", {}) or {}
        if not isinstance(extra, dict):
            raise ModelFileError(f"extra must be a JSON object, got {type(extra).__name__}")
        # A model that reads the cell's mask as a channel (objects.object_tiles) names it last;
        # that channel is not in any image, so channel_indices (into the source image) cover the
        # image channels only: one fewer than channel_names.
        image_channels = len(channel_names) - _mask_channels(extra, channel_names)
        channel_indices = d.get("channel_indices")
        if channel_indices is not None:
            if (
                not isinstance(channel_indices, list)
                or len(channel_indices) != image_channels
                or not all(_is_int(i) and i >= 0 for i in channel_indices)
            ):
                raise ModelFileError(
                    f"channel_indices must be {image_channels} non-negative "
                    f"integers (one per image channel), got {channel_indices!r}"
                )
        tile_size = d["tile_size"]
        try:  # JSON gives ints; 64.0 would be a hand-edited file
            if not _is_int(tile_size):
                raise ValueError(
                    f"tile_size must be an integer of {MIN_TILE_SIZE}..{MAX_TILE_SIZE} px, got {tile_size!r}"
                )
            check_tile_size(tile_size, MIN_TILE_SIZE, MAX_TILE_SIZE)  # the faces' rule
        except ValueError as exc:
            raise ModelFileError(str(exc)) from None
        architecture = d["architecture"]
        if architecture not in ARCHITECTURES and architecture != FEATURES_ARCHITECTURE:
            raise ModelFileError(
                f"unknown architecture {architecture!r} (known: "
                f"{', '.join((*ARCHITECTURES, FEATURES_ARCHITECTURE))})"
            )
        normalization = _check_normalization(d["normalization"], len(channel_names))
        history = d.get("history", {}) or {}
        for name, value in (("history", history), ("extra", extra)):
            if not isinstance(value, dict):
                raise ModelFileError(f"{name} must be a JSON object, got {type(value).__name__}")
            if _depth(value) > MAX_METADATA_DEPTH:
                raise ModelFileError(f"{name} is nested more than {MAX_METADATA_DEPTH} levels deep")
        _check_cli_record(extra.get("cli"))
        seed = d.get("seed")
        if seed is not None and not _is_int(seed):
            raise ModelFileError(f"seed must be an integer or null, got {seed!r}")
        n_members = d.get("n_members", 1)
        if not _is_int(n_members) or not 1 <= n_members <= MAX_MEMBERS:
            raise ModelFileError(f"n_members must be an integer from 1 to {MAX_MEMBERS}, got {n_members!r}")
        if not isinstance(extra.get("tta", False), bool):
            raise ModelFileError(f"extra.tta must be true or false, got {extra.get('tta')!r}")
        package_version = d.get("package_version", "")
        if not isinstance(package_version, str):
            raise ModelFileError(f"package_version must be a string, got {package_version!r}")
        return cls(
            class_names=class_names,
            class_colors=class_colors,
            channel_names=channel_names,
            tile_size=tile_size,
            architecture=architecture,
            normalization=normalization,
            channel_indices=None if channel_indices is None else list(channel_indices),
            history=history,
            seed=seed,
            package_version=package_version,
            format_version=format_version,
            extra=extra,
            pixel_size=_check_pixel_size(d.get("pixel_size")),
            n_members=n_members,
        )


def _depth(value) -> int:
    """Nesting depth of JSON containers, without recursion (a hostile header may nest 10^5)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level > 2 * MAX_METADATA_DEPTH:  # deep enough to refuse: stop looking
                return level
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def _check_cli_record(cli) -> None:
    """extra["cli"], written by `cellclf train` and read back by `cellclf evaluate`."""
    if cli is None:
        return
    if not isinstance(cli, dict):
        raise ModelFileError(f"extra.cli must be a JSON object, got {type(cli).__name__}")
    rules = {
        "layout": (lambda v: v in ("folders", "labels", "objects"), "'folders', 'labels' or 'objects'"),
        "mode": (lambda v: v in ("resize", "tile"), "'resize' or 'tile'"),
        "stride": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
        "data": (lambda v: v is None or isinstance(v, str), "a string"),
    }
    for key, (ok, rule) in rules.items():
        if key in cli and not ok(cli[key]):
            raise ModelFileError(f"extra.cli.{key} must be {rule}, got {cli[key]!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _string_list(value, name: str, min_length: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ModelFileError(f"{name} must be a list of strings, got {value!r}")
    if len(value) < min_length:
        raise ModelFileError(f"{name} needs at least {min_length} entries, got {len(value)}")
    return list(value)


def _mask_channels(extra: dict, channel_names: list[str]) -> int:
    """1 when the model reads the cell's mask as its last channel (objects.stored_settings), else
    0; a flag that is not true/false, or a mask model whose last channel is not the mask, is
    refused (every consumer strips that last name: objects.image_channel_names)."""
    stored = extra.get("objects")
    if stored is None:
        return 0
    if not isinstance(stored, dict):
        raise ModelFileError(f"extra.objects must be a JSON object, got {type(stored).__name__}")
    for key in ("blank_background", "mask_channel"):
        if not isinstance(stored.get(key, False), bool):
            raise ModelFileError(f"extra.objects.{key} must be true or false, got {stored[key]!r}")
    if not stored_settings(extra)["mask_channel"]:
        return 0
    if len(channel_names) < 2 or channel_names[-1] != MASK_CHANNEL_NAME:
        raise ModelFileError(
            f"a model with the cell mask as a channel needs an image channel and "
            f"'{MASK_CHANNEL_NAME}' last in channel_names, got {channel_names!r}"
        )
    return 1


def _check_normalization(value, n_channels: int) -> dict:
    """The parts every consumer relies on: a mode and, for dataset mode, finite low/high per
    normalised channel. The last `unscaled` channels (data.Normalization: the cell-mask channel,
    already 0/1) have no statistics, so low/high hold n_channels - unscaled numbers."""
    if not isinstance(value, dict):
        raise ModelFileError(f"normalization must be a JSON object, got {type(value).__name__}")
    mode = value.get("mode", "dataset")
    if mode not in _NORMALIZATION_MODES:
        raise ModelFileError(f"normalization mode must be one of {_NORMALIZATION_MODES}, got {mode!r}")
    unscaled = value.get("unscaled", 0)
    if not _is_int(unscaled) or not 0 <= unscaled < n_channels:
        raise ModelFileError(
            f"normalization unscaled must be a whole number of 0..{n_channels - 1} (channels left "
            f"as they are), got {unscaled!r}"
        )
    if mode == "per_tile":
        return dict(value)  # statistics come from each tile at apply time
    n_channels -= unscaled
    for key in ("low", "high"):
        bounds = value.get(key)
        if (
            not isinstance(bounds, list)
            or len(bounds) != n_channels
            or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds
            )
        ):
            raise ModelFileError(
                f"normalization {key} must be {n_channels} finite numbers (one per channel), got {bounds!r}"
            )
    for channel, (low, high) in enumerate(zip(value["low"], value["high"])):
        if max(abs(low), abs(high)) > MAX_NORMALIZATION_VALUE:
            raise ModelFileError(
                f"normalization of channel {channel}: low {low!r} / high {high!r} "
                f"beyond +-{MAX_NORMALIZATION_VALUE:g}"
            )
        span = float(np.float32(high) - np.float32(low))
        if not span > 1e-6 * max(abs(low), abs(high)) or not math.isfinite(span):
            raise ModelFileError(
                f"normalization of channel {channel}: low {low!r} must be below "
                f"high {high!r} (every pixel would map to one value)"
            )
    return dict(value)


def _check_pixel_size(value) -> dict | None:
    """None, or {"y": > 0, "x": > 0, "unit": str | None} (pixelsize.pixel_size_record)."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not all(
            isinstance(value.get(k), (int, float))
            and not isinstance(value.get(k), bool)
            and math.isfinite(value[k])
            and value[k] > 0
            for k in ("y", "x")
        )
        or not isinstance(value.get("unit"), (str, type(None)))
    ):
        raise ModelFileError(
            f"pixel_size must be null or {{'y': >0, 'x': >0, 'unit': text or null}}, got {value!r}"
        )
    return {"y": float(value["y"]), "x": float(value["x"]), "unit": value.get("unit")}
