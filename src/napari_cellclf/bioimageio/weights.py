"""The network a package ships: the architecture file (model.py verbatim plus a softmax
wrapper), its state dict rebuilt from the model file, the test tiles and our reference
probabilities for them, and the check that the shipped wrapper reproduces those."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .common import N_TEST_TILES, WRAPPER_CALLABLE, BioimageioError, _sha256

_WRAPPER_SOURCE = '''

# ----------------------------------------------------------------------------------------------
# Added by napari-cellclf's bioimage.io export: the net above with softmax on its output, so that
# the package returns per-class probabilities. Rebuilt from the kwargs in rdf.yaml.
import torch as _cellclf_torch


class CellclfProbabilities(_cellclf_torch.nn.Module):
    """(batch, channel, y, x) normalised tiles -> (batch, class) probabilities."""

    def __init__(self, architecture: str, in_channels: int, n_classes: int, tile_size: int,
                 n_members: int = 1, tta: bool = False):
        super().__init__()
        ensemble = globals().get("build_ensemble")
        if ensemble is not None:
            net = ensemble(architecture, in_channels, n_classes, tile_size, n_members)
        elif n_members == 1:
            net = build_model(architecture, in_channels, n_classes, tile_size)
        else:
            raise ValueError("this architecture file has no ensembles (build_ensemble)")
        self.net = DihedralTTA(net) if tta else net

    def forward(self, x):
        return _cellclf_torch.softmax(self.net(x), dim=1)
'''


def architecture_source() -> str:
    """model.py plus the probability wrapper: a single file bioimageio.core can import alone."""
    from .. import model as model_module

    source = Path(model_module.__file__).read_text(encoding="utf-8")
    if re.search(r"^\s*from\s+\.", source, flags=re.MULTILINE):
        raise BioimageioError(
            "model.py imports from its own package, so it cannot be shipped as "
            "a stand-alone architecture file"
        )
    return source + _WRAPPER_SOURCE


def architecture_kwargs(meta) -> dict:
    """The wrapper's kwargs in rdf.yaml: what modelfile rebuilds the net from."""
    return {
        "architecture": meta.architecture,
        "in_channels": meta.in_channels,
        "n_classes": meta.n_classes,
        "tile_size": int(meta.tile_size),
        "n_members": int(getattr(meta, "n_members", 1) or 1),
        "tta": bool((meta.extra or {}).get("tta", False)),
    }


def _load_architecture(path: Path):
    """The wrapper class from the written architecture file (imported as its own module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"cellclf_export_{_sha256(path)[:16]}", path)
    if spec is None or spec.loader is None:
        raise BioimageioError(f"cannot import the architecture file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, WRAPPER_CALLABLE)


def _wrapped_state_dict(model_path: Path, meta, architecture_file: Path) -> tuple[dict, nn.Module]:
    """State dict of the wrapper rebuilt from the shipped file and kwargs, filled with the model
    file's tensors as stored (BatchNorm unfolded, as trained). The load is strict but for
    BatchNorm's step counters, which model files leave out: it proves that callable + kwargs
    rebuild exactly our net."""
    from safetensors.torch import load_file

    wrapper = _load_architecture(architecture_file)(**architecture_kwargs(meta))
    core = getattr(wrapper.net, "model", wrapper.net) if architecture_kwargs(meta)["tta"] else wrapper.net
    tensors = {name: t.to(torch.float32) for name, t in load_file(str(model_path)).items()}
    result = core.load_state_dict(tensors, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise BioimageioError(
            f"the shipped architecture does not rebuild this model (missing "
            f"{missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    wrapper.eval()
    return {name: t.detach().contiguous() for name, t in wrapper.state_dict().items()}, wrapper


# ------------------------------------------------------------------------------ test tiles


def sample_tiles(
    meta, field_cyx: np.ndarray | None = None, n: int = N_TEST_TILES, seed: int = 0
) -> np.ndarray:
    """(n, C, T, T) float32 raw tiles for the test tensors and the cover: foreground tiles spread
    over `field_cyx` when given, else reproducible smooth noise in the training intensity range."""
    tile, channels = int(meta.tile_size), meta.in_channels
    if field_cyx is not None:
        from ..tiling import extract_tiles, foreground_tiles, make_grid

        image = np.asarray(field_cyx)
        if image.ndim == 2 and channels == 1:
            image = image[np.newaxis]
        if image.ndim != 3 or image.shape[0] != channels:
            raise BioimageioError(
                f"the sample field must be (C, Y, X) with the model's {channels} "
                f"channel(s), got shape {image.shape}"
            )
        grid = make_grid(image.shape[1:], tile, border="drop")
        candidates = np.flatnonzero(foreground_tiles(image, grid))
        if len(candidates) == 0:
            candidates = np.arange(grid.n_tiles)
        pick = candidates[np.linspace(0, len(candidates) - 1, min(n, len(candidates))).astype(int)]
        return np.ascontiguousarray(extract_tiles(image, grid, pick), dtype=np.float32)
    rng = np.random.default_rng(seed)
    noise = rng.random((n, channels, tile, tile))
    # a 3x3 box blur, so tiles are not pure pixel noise
    padded = np.pad(noise, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    noise = np.mean(
        [padded[..., dy : dy + tile, dx : dx + tile] for dy in range(3) for dx in range(3)], axis=0
    )
    norm = meta.normalization
    if norm.get("mode", "dataset") == "dataset":
        low = np.asarray(norm["low"], dtype=np.float64).reshape(1, -1, 1, 1)
        high = np.asarray(norm["high"], dtype=np.float64).reshape(1, -1, 1, 1)
        span = np.where(high > low, high - low, 1.0)
        noise = low + noise * span
    else:
        noise = noise * 1000.0
    return noise.astype(np.float32)


def classifier_probabilities(model: nn.Module, meta, tiles: np.ndarray) -> np.ndarray:
    """Our reference: the Classifier in eager fp32 PyTorch on the CPU, as bioimageio.core runs
    the package (bf16 would be faster but misses bioimageio's 1e-3 test tolerance)."""
    from ..inference import Classifier

    return Classifier(model, meta, device="cpu", backend="eager", precision="fp32").predict_tiles(tiles)


def _check_wrapper(wrapper: nn.Module, meta, tiles: np.ndarray, reference: np.ndarray) -> None:
    """The shipped wrapper on our normalised tiles gives our probabilities."""
    from ..data import Normalization

    x = torch.from_numpy(Normalization.from_dict(meta.normalization).apply(tiles))
    with torch.no_grad():
        got = wrapper(x).numpy()
    if not np.allclose(got, reference, rtol=1e-4, atol=1e-5):
        raise BioimageioError(
            f"the exported network disagrees with napari-cellclf "
            f"(max difference {np.abs(got - reference).max():.2g})"
        )
