"""One shareable model file: safetensors weights + JSON metadata, atomic, never unpickled.

- The file is a single `.safetensors` file; the JSON metadata lives in the safetensors header
  (`__metadata__["cellclf"]`). Loading validates the header, the metadata schema and every tensor
  name, shape and dtype against the architecture rebuilt from the metadata; anything else (a
  pickle, a truncated or tampered file) raises ModelFileError naming the file. Nothing is ever
  unpickled: safetensors only reads a JSON header and raw little-endian numbers.
- An ensemble (model.Ensemble, `n_members` > 1) is one file too: member i's tensors are named
  `members.<i>.<name>`. A DihedralTTA wrapper is not stored as weights: `extra["tta"]` says to
  wrap the loaded model again. BatchNorm's integer batch counters are not stored (unused in
  inference); every other tensor is, and is checked.
- Saving writes a temporary file in the same folder, fsyncs, then os.replace()s it: a full disk or
  a crash never leaves a half-written model under the real name (and never deletes the old one).
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize_safetensors
from torch import nn

from ._files import atomic_write
from .baseline import FEATURES_ARCHITECTURE
from .data import NORMALIZATION_MODES as _NORMALIZATION_MODES
from .model import ARCHITECTURES, MIN_TILE_SIZE, DihedralTTA, build_ensemble, choose_device, unwrap
from .tiling import MAX_CLASSES, MAX_TILE_SIZE

FORMAT_VERSION = 1
SUFFIX = ".safetensors"
METADATA_KEY = "cellclf"
# Beside the metadata: SHA-256 over every tensor and the header values that decide the tensors'
# shapes only loosely (the tile size: 56 px and 30,000 px give the same weights). Files written
# before it existed have none and still load.
CHECKSUM_KEY = "cellclf.weights_sha256"
_SHAPE_KEYS = ("architecture", "tile_size", "n_members")
# Deepest nesting of JSON objects/lists in the metadata (history and extra hold a few levels).
MAX_METADATA_DEPTH = 32
# Normalisation bounds beyond any pixel value: larger ones overflow float32 arithmetic.
MAX_NORMALIZATION_VALUE = 1e30

# Okabe & Ito (2008) colour-blind-safe palette, black left out (invisible on napari's dark canvas).
_OKABE_ITO = ["#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7"]
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
MAX_MEMBERS = 64
_UNSTORED = "num_batches_tracked"  # BatchNorm's step counter: an integer, unused in eval


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
        return _json_ready(
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
        channel_indices = d.get("channel_indices")
        if channel_indices is not None:
            if (
                not isinstance(channel_indices, list)
                or len(channel_indices) != len(channel_names)
                or not all(_is_int(i) and i >= 0 for i in channel_indices)
            ):
                raise ModelFileError(
                    f"channel_indices must be {len(channel_names)} non-negative "
                    f"integers (one per channel), got {channel_indices!r}"
                )
        tile_size = d["tile_size"]
        if not _is_int(tile_size) or not MIN_TILE_SIZE <= tile_size <= MAX_TILE_SIZE:
            raise ModelFileError(
                f"tile_size must be an integer {MIN_TILE_SIZE}..{MAX_TILE_SIZE}, got {tile_size!r}"
            )
        architecture = d["architecture"]
        if architecture not in ARCHITECTURES and architecture != FEATURES_ARCHITECTURE:
            raise ModelFileError(
                f"unknown architecture {architecture!r} (known: "
                f"{', '.join((*ARCHITECTURES, FEATURES_ARCHITECTURE))})"
            )
        normalization = _check_normalization(d["normalization"], len(channel_names))
        history = d.get("history", {}) or {}
        extra = d.get("extra", {}) or {}
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


def _check_normalization(value, n_channels: int) -> dict:
    """The parts every consumer relies on: a mode and, for dataset mode, finite low/high per channel."""
    if not isinstance(value, dict):
        raise ModelFileError(f"normalization must be a JSON object, got {type(value).__name__}")
    mode = value.get("mode", "dataset")
    if mode not in _NORMALIZATION_MODES:
        raise ModelFileError(f"normalization mode must be one of {_NORMALIZATION_MODES}, got {mode!r}")
    if mode == "per_tile":
        return dict(value)  # statistics come from each tile at apply time
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


def _json_ready(value):
    """numpy scalars/arrays and tuples to plain JSON types; NaN/inf (a diverged loss) to None."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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


def _template(meta: ModelMeta) -> nn.Module:
    return build_ensemble(meta.architecture, meta.in_channels, meta.n_classes, meta.tile_size, meta.n_members)


def _stored(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t for name, t in state.items() if not name.endswith(_UNSTORED)}


def _expected_shapes(meta: ModelMeta) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in _stored(_template(meta).state_dict()).items()}


def model_file_path(path: str | Path) -> Path:
    """The path save_model writes for `path`: the suffix added when missing (so that the CLI's
    output guard checks the real name before training)."""
    path = Path(path).expanduser()
    return path if path.name.endswith(SUFFIX) else path.with_name(path.name + SUFFIX)


def save_model(path: str | Path, model: nn.Module, meta: ModelMeta) -> Path:
    """Atomic write; adds the suffix if missing; returns the final path."""
    path = model_file_path(path)
    meta_dict = meta.to_dict()
    try:
        ModelMeta.from_dict(meta_dict)  # never write a file that load_model would refuse
    except ModelFileError as exc:
        raise ValueError(f"cannot save model to {path}: invalid metadata: {exc}") from None
    if meta.architecture == FEATURES_ARCHITECTURE:
        tensors, meta_dict = _feature_file_parts(path, model, meta)
        expected = {name: tuple(t.shape) for name, t in tensors.items()}
    else:
        model, tta = unwrap(model)
        if tta != bool(meta.extra.get("tta", False)):
            raise ValueError(
                f"cannot save model to {path}: the model {'is' if tta else 'is not'} wrapped "
                f"in DihedralTTA but its metadata says tta={meta.extra.get('tta', False)}"
            )
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in _stored(model.state_dict()).items()}
        expected = _expected_shapes(meta)
    actual = {name: tuple(t.shape) for name, t in tensors.items()}
    if actual != expected:
        raise ValueError(
            f"cannot save model to {path}: its weights do not match the metadata "
            f"({meta.architecture}, {meta.in_channels} channels, {meta.n_classes} classes, "
            f"tile {meta.tile_size}, {meta.n_members} member(s))"
        )
    payload = serialize_safetensors(
        tensors,
        metadata={
            METADATA_KEY: json.dumps(meta_dict, allow_nan=False, ensure_ascii=False),
            CHECKSUM_KEY: weights_checksum(tensors, meta_dict),
        },
    )
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save model to {path}: folder {folder} does not exist")
    atomic_write(path, lambda handle: handle.write(payload))
    return path


def weights_checksum(tensors: dict[str, torch.Tensor], meta_dict: dict) -> str:
    """SHA-256 (hex) over every tensor (name, dtype, shape, bytes, in name order) and the
    header's shape-deciding values (architecture, tile size, ensemble members)."""
    digest = hashlib.sha256()
    shape_values = {key: meta_dict.get(key) for key in _SHAPE_KEYS if key in meta_dict}
    digest.update(json.dumps(shape_values, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _feature_file_parts(path: Path, model, meta: ModelMeta) -> tuple[dict, dict]:
    """A classical-features model (baseline.FeatureNet): its arrays as tensors, its spec in
    extra["feature_model"]; checked by rebuilding it as load_model will."""
    from . import baseline

    try:
        tensors, spec = baseline.file_tensors(model)
        meta = ModelMeta.from_dict({**meta.to_dict(), "extra": {**meta.extra, baseline.SPEC_KEY: spec}})
        baseline.model_from_file(tensors, meta)
    except (ValueError, ModelFileError) as exc:
        raise ValueError(f"cannot save model to {path}: {exc}") from None
    return {name: t.contiguous() for name, t in tensors.items()}, meta.to_dict()


def _read_feature_tensors(
    reader, meta: ModelMeta, fail, load_weights: bool, checksum, meta_dict: dict
) -> dict[str, torch.Tensor]:
    """A 'features' model file's tensors, checked by rebuilding the model (baseline) and
    against the saved checksum."""
    from . import baseline

    tensors = {name: reader.get_tensor(name) for name in reader.keys()}
    if load_weights and checksum is not None and checksum != weights_checksum(tensors, meta_dict):
        raise fail("the weights do not match the checksum saved with them (a damaged or edited file)")
    try:
        baseline.model_from_file(tensors, meta)
    except ValueError as exc:
        raise fail(f"invalid classical-features model: {exc}") from None
    return tensors if load_weights else {}


def _sniff_foreign_format(head: bytes) -> str | None:
    """Name a known non-safetensors format from the first bytes, for a helpful message."""
    if head[8:9] == b"{":
        return None  # a safetensors header: 8-byte length, then JSON (its length may start 0x80)
    if head.startswith(b"PK\x03\x04"):
        return (
            "it is a ZIP archive — most likely a PyTorch torch.save() checkpoint, which holds "
            "pickled code; napari-cellclf only reads .safetensors model files and never unpickles"
        )
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return (
            "it is a Python pickle, which can run arbitrary code when loaded; napari-cellclf "
            "only reads .safetensors model files and never unpickles"
        )
    return None


def read_meta(path: str | Path) -> ModelMeta:
    """Only the metadata, validated (cheap: the weights are not read)."""
    path = Path(path).expanduser()
    meta, _ = _open_validated(path, load_weights=False)
    return meta


def _open_validated(path: Path, load_weights: bool) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    def fail(why: str) -> ModelFileError:
        return ModelFileError(f"cannot load model {path}: {why}")

    if not path.exists():
        raise fail("no such file")
    if not path.is_file():
        raise fail("not a file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise fail(f"cannot read it ({exc.strerror or exc})") from None
    foreign = _sniff_foreign_format(head)
    if foreign:
        raise fail(foreign)
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as reader:
            header_meta = reader.metadata() or {}
            if METADATA_KEY not in header_meta:
                raise fail(
                    "the safetensors header has no napari-cellclf metadata "
                    "(a safetensors file made by another program?)"
                )
            try:
                meta_dict = json.loads(header_meta[METADATA_KEY])
            except json.JSONDecodeError as exc:
                raise fail(f"its metadata is not valid JSON ({exc})") from None
            except RecursionError:
                raise fail("its metadata is nested too deeply to be a napari-cellclf header") from None
            try:
                meta = ModelMeta.from_dict(meta_dict)
            except ModelFileError as exc:
                raise fail(f"invalid metadata: {exc}") from None
            if meta.architecture == FEATURES_ARCHITECTURE:
                return meta, _read_feature_tensors(
                    reader, meta, fail, load_weights, header_meta.get(CHECKSUM_KEY), meta_dict
                )
            expected = _expected_shapes(meta)
            names = set(reader.keys())
            missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
            if missing or unexpected:
                parts = []
                if missing:
                    parts.append(f"missing tensors {_short_list(missing)}")
                if unexpected:
                    parts.append(f"unexpected tensors {_short_list(unexpected)}")
                raise fail(f"the weights do not fit a '{meta.architecture}' model: {'; '.join(parts)}")
            for name, shape in expected.items():
                tensor_slice = reader.get_slice(name)
                found = tuple(tensor_slice.get_shape())
                if found != shape:
                    raise fail(f"tensor {name} has shape {list(found)}, the architecture needs {list(shape)}")
                dtype = tensor_slice.get_dtype()
                if dtype not in _FLOAT_DTYPES:
                    raise fail(f"tensor {name} has dtype {dtype}, expected floating point")
            if load_weights:
                stored = {name: reader.get_tensor(name) for name in expected}
                checksum = header_meta.get(CHECKSUM_KEY)
                if checksum is not None and checksum != weights_checksum(stored, meta_dict):
                    raise fail(
                        "the weights do not match the checksum saved with them: a tensor, "
                        "or the tile size or architecture in the header, was changed "
                        "after saving (a damaged or edited file)"
                    )
                for name, tensor in stored.items():
                    tensor = tensor.to(torch.float32)
                    if not torch.isfinite(tensor).all():
                        raise fail(f"tensor {name} holds NaN or infinite values")
                    tensors[name] = tensor
    except SafetensorError as exc:
        raise fail(f"not a valid safetensors file, or truncated/damaged ({exc})") from None
    except OSError as exc:
        raise fail(f"cannot read it ({exc})") from None
    return meta, tensors


def _short_list(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_model(path: str | Path, device: str = "cpu") -> tuple[nn.Module, ModelMeta]:
    """Model in eval mode on `device`, and its metadata. ModelFileError on any invalid file."""
    path = Path(path).expanduser()
    meta, tensors = _open_validated(path, load_weights=True)
    if meta.architecture == FEATURES_ARCHITECTURE:
        from .baseline import model_from_file

        return model_from_file(tensors, meta), meta
    model = _template(meta)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or any(not name.endswith(_UNSTORED) for name in missing):  # _open_validated checked
        raise ModelFileError(
            f"cannot load model {path}: tensors {_short_list(missing + unexpected)} do not fit"
        )
    if meta.extra.get("tta", False):
        model = DihedralTTA(model)
    model.eval()
    # Not model.prepare_for_device: that folds BatchNorm for inference, and a loaded model must
    # keep the layout its file has (to be saved again, exported, or trained further).
    return model.to(device=choose_device(device), memory_format=torch.channels_last), meta
