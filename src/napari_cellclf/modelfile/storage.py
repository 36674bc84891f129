"""Saving and loading the one `.safetensors` file: atomic write with a weights checksum, and a
load that validates header, metadata, every tensor name, shape and dtype before building the
net."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize_safetensors
from torch import nn

from .._files import atomic_write
from ..baseline import FEATURES_ARCHITECTURE
from ..model import DihedralTTA, build_ensemble, choose_device, unwrap
from .meta import ModelFileError, ModelMeta

SUFFIX = ".safetensors"
METADATA_KEY = "cellclf"
# Beside the metadata: SHA-256 over every tensor and the header values that decide the tensors'
# shapes only loosely (the tile size: 56 px and 30,000 px give the same weights). Files written
# before it existed have none and still load.
CHECKSUM_KEY = "cellclf.weights_sha256"
_SHAPE_KEYS = ("architecture", "tile_size", "n_members")
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_UNSTORED = "num_batches_tracked"  # BatchNorm's step counter: an integer, unused in eval


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
    from .. import baseline

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
    from .. import baseline

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
        from ..baseline import model_from_file

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
    return _to_channels_last(model, choose_device(device)), meta


def _to_channels_last(model: nn.Module, device: torch.device) -> nn.Module:
    # Module.to takes memory_format at run time; torch's type stubs list only device/dtype/tensor.
    to: Any = model.to
    return to(device=device, memory_format=torch.channels_last)
