"""bioimage.io model packages (format 0.5) from napari-cellclf model files, and back. No Qt.

Export (`export_bioimageio`, needs the `[bioimageio]` extra: bioimageio.spec and .core are
imported inside the functions that use them):
- weights as `pytorch_state_dict`: `weights.pt` holds only tensors (torch.save of a state dict,
  loadable with `torch.load(weights_only=True)`, which is how bioimageio.core reads it); the
  architecture is `cellclf_architecture.py` = our model.py verbatim (it imports only torch) plus
  a small `CellclfProbabilities` wrapper that rebuilds the net from the kwargs in rdf.yaml and
  applies softmax, so the package outputs per-class probabilities, not logits.
- preprocessing from the stored normalisation: dataset mode (x - low) / (high - low) per channel
  -> `scale_linear` along the channel axis; per_tile mode -> `scale_range` over (y, x) with the
  stored percentiles (per tile and channel, as we do).
- output `probabilities` with axes [batch, channel]; the channel names are the class names made
  valid lower-case identifiers (`channel_ids`); the original names are in config.cellclf.
- test input = raw tiles (from a field given by the caller, else reproducible noise in the
  training intensity range); test output = what our `inference.Classifier` says for them.
- the original cellclf model file travels along as an attachment (`cellclf_model.safetensors`,
  sha256 in rdf.yaml), so that import is exact and never unpickles anything.

Import (`import_bioimageio`, needs only PyYAML + safetensors): reads rdf.yaml from a folder or a
.zip, checks the attachment's sha256 and loads it with modelfile (same checks as any model file).
We chose the safetensors attachment over reading weights.pt back: torch.load, even with
weights_only=True, runs a (restricted) unpickler on a file someone else may have edited, while a
safetensors file is a JSON header and raw numbers, and it carries our full ModelMeta.
"""

from __future__ import annotations

import hashlib
import io as io_module
import re
import shutil
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from torch import nn

RDF_NAME = "rdf.yaml"
ARCHITECTURE_FILE = "cellclf_architecture.py"
WRAPPER_CALLABLE = "CellclfProbabilities"
WEIGHTS_FILE = "weights.pt"
CELLCLF_FILE = "cellclf_model.safetensors"
TEST_INPUT_FILE = "test_input.npy"
TEST_OUTPUT_FILE = "test_output.npy"
SAMPLE_INPUT_FILE = "sample_input.tif"  # for people (and imageio): the first test tile
SAMPLE_OUTPUT_FILE = "sample_output.tif"
COVER_FILE = "cover.png"
README_FILE = "README.md"
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
DEFAULT_LICENSE = "CC-BY-4.0"
N_TEST_TILES = 4
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


class BioimageioError(ValueError):
    """A package cannot be written or read; the message says which and why."""


@dataclass
class ExportResult:
    path: Path  # the folder or .zip written
    probabilities: np.ndarray  # our Classifier's output on the test input (= test output)
    test_input: np.ndarray
    notes: list[str] = field(default_factory=list)  # what the package could not carry exactly


# ------------------------------------------------------------------------------------ names


def channel_ids(names: list[str], prefix: str = "class") -> list[str]:
    """Unique lower-case Python identifiers for `names` (accents dropped, other characters -> _),
    as bioimage.io asks of ids: "Mitotic cell" -> "mitotic_cell", "2n" -> "class_2n"."""
    out: list[str] = []
    for name in names:
        text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
        text = re.sub(r"[^0-9a-zA-Z_]+", "_", text).strip("_").lower()
        if not text or not text.isidentifier():
            text = f"{prefix}_{text}" if text else prefix
        candidate, n = text, 2
        while candidate in out:
            candidate, n = f"{text}_{n}", n + 1
        out.append(candidate)
    return out


def _resource_name(text: str) -> str:
    """bioimage.io names allow letters, digits, '_+- ()'."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^0-9A-Za-z_+\- ()]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()[:128] or "napari-cellclf classifier"


# ----------------------------------------------------------------------------- architecture


def architecture_source() -> str:
    """model.py plus the probability wrapper: a single file bioimageio.core can import alone."""
    from . import model as model_module

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
        from .tiling import extract_tiles, foreground_tiles, make_grid

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
    from .inference import Classifier

    return Classifier(model, meta, device="cpu", backend="eager", precision="fp32").predict_tiles(tiles)


# ------------------------------------------------------------------------------ description


def _preprocessing(meta, v0_5) -> tuple[list, list[str]]:
    """scale_linear / scale_range steps from the stored normalisation, and notes."""
    norm = meta.normalization
    notes: list[str] = []
    steps: list = [v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))]
    if norm.get("mode", "dataset") == "dataset":
        low = [float(v) for v in norm["low"]]
        high = [float(v) for v in norm["high"]]
        gain, offset = [], []
        for lo, hi in zip(low, high):
            g = 1.0 / (hi - lo) if hi > lo else 1.0  # a flat channel is only shifted, as we do
            gain.append(g)
            offset.append(-lo * g)
        if any(g != 1.0 for g in gain) or any(o != 0.0 for o in offset):
            steps.append(
                v0_5.ScaleLinearDescr(
                    kwargs=v0_5.ScaleLinearAlongAxisKwargs(
                        axis=v0_5.AxisId("channel"), gain=gain, offset=offset
                    )
                )
            )
    else:
        low_p, high_p = (float(p) for p in norm.get("percentiles", (1.0, 99.8)))
        if high_p <= 1.0:
            raise BioimageioError(f"bioimage.io needs an upper percentile above 1, this model uses {high_p}")
        steps.append(
            v0_5.ScaleRangeDescr(
                kwargs=v0_5.ScaleRangeKwargs(
                    axes=[v0_5.AxisId("y"), v0_5.AxisId("x")],
                    min_percentile=low_p,
                    max_percentile=high_p,
                    eps=1e-12,
                )
            )
        )
        notes.append(
            "per-tile normalisation: bioimage.io's scale_range divides by (high - low + eps); "
            "napari-cellclf leaves a tile channel whose percentiles coincide unscaled, so such "
            "(almost empty) tiles can get other probabilities"
        )
    return steps, notes


def _space_axes(meta, v0_5) -> list:
    """y and x of the tile, with the training pixel size (in µm) when the model knows it."""
    from .pixelsize import in_micrometres

    size_um = in_micrometres(getattr(meta, "pixel_size", None))
    return [
        v0_5.SpaceInputAxis(
            id=v0_5.AxisId(name),
            size=int(meta.tile_size),
            unit="micrometer" if size_um else None,
            scale=size_um[i] if size_um else 1.0,
        )
        for i, name in enumerate(("y", "x"))
    ]


def _training_details(meta, v0_5):
    config = (meta.extra or {}).get("train_config") or {}
    norm = meta.normalization
    if norm.get("mode", "dataset") == "dataset":
        how = "per channel (x - low) / (high - low) with low/high from the training tiles"
    else:
        how = f"per tile and channel, percentiles {norm.get('percentiles')}"
    augment = "90 degree rotations and flips" if config.get("augment", True) else "none"
    if config.get("rotate_degrees"):
        augment += f", small rotations up to {config['rotate_degrees']} degrees"
    regularisation = []
    if config.get("weight_decay"):
        regularisation.append(f"decoupled weight decay {config['weight_decay']}")
    if config.get("label_smoothing"):
        regularisation.append(f"label smoothing {config['label_smoothing']}")
    kwargs: dict[str, Any] = {"training_preprocessing": f"Normalisation: {how}. Augmentation: {augment}."}
    if config:
        kwargs.update(
            training_epochs=config.get("epochs"),
            training_batch_size=config.get("batch_size"),
            initial_learning_rate=config.get("learning_rate"),
            learning_rate_schedule=config.get("lr_schedule"),
            loss_function="torch.nn.CrossEntropyLoss",
            optimizer="torch.optim.AdamW" if config.get("weight_decay") else "torch.optim.Adam",
            regularization=", ".join(regularisation) or None,
        )
    return v0_5.TrainingDetails(**{k: v for k, v in kwargs.items() if v is not None})


def _trust_summary(meta) -> dict:
    """What the model file knows about how far to trust it: per run the held-out accuracy beside
    balanced accuracy and chance, memorisation messages, training warnings, and the results
    other commands stored in `extra` (evaluation, baseline, crosstest)."""
    history = meta.history or {}
    out: dict = {"chance": 1.0 / meta.n_classes}
    runs = []
    for run in history.get("runs") or []:
        best = run.get("best_epoch", -1)
        balanced = run.get("val_balanced_accuracy") or []
        runs.append(
            {
                "seed": run.get("seed"),
                "epochs_completed": run.get("epochs_completed"),
                "best_epoch": best,
                "val_accuracy": run.get("best_val_accuracy"),
                "val_balanced_accuracy": balanced[best] if 0 <= best < len(balanced) else None,
                "memorisation": run.get("memorisation"),
            }
        )
    if runs:
        out["runs"] = runs
        summary = history.get("summary") or {}
        if summary.get("best_run") is not None:
            out["best_run"] = summary["best_run"]
    if history.get("warnings"):
        out["warnings"] = list(history["warnings"])
    for key in ("evaluation", "baseline", "crosstest"):
        if (meta.extra or {}).get(key) is not None:
            out[key] = meta.extra[key]
    return out


def _cellclf_config(meta) -> dict:
    return {
        "model_file": CELLCLF_FILE,
        "class_names": list(meta.class_names),
        "class_colors": list(meta.class_colors),
        "channel_names": list(meta.channel_names),
        "tile_size": int(meta.tile_size),
        "architecture": meta.architecture,
        "normalization": dict(meta.normalization),
        "pixel_size": getattr(meta, "pixel_size", None),
        "package_version": meta.package_version,
    }


# ------------------------------------------------------------------------------------ export


def export_bioimageio(
    model_path: str | Path,
    out: str | Path,
    *,
    field_cyx: np.ndarray | None = None,
    name: str | None = None,
    authors: list[str] | None = None,
    license: str = DEFAULT_LICENSE,
    description: str | None = None,
    github_user: str | None = None,
    validate: bool = True,
) -> ExportResult:
    """Write a bioimage.io 0.5 model package for the cellclf model file `model_path` to `out`
    (a folder, made if missing and then empty; or a path ending in .zip).

    `field_cyx`: a raw (C, Y, X) field whose foreground tiles become the test input and cover.
    `authors`: names (default "napari-cellclf user"); `license`: an SPDX id; `github_user`: the
    maintainer, which bioimage.io wants before an upload.
    The package description is validated by bioimageio.spec while it is built (`validate`
    additionally loads the written package back). BioimageioError for anything unrepresentable;
    ImportError naming the extra when bioimageio.spec is missing."""
    try:
        import importlib

        from bioimageio.spec import (
            ValidationContext,
            save_bioimageio_package,
            save_bioimageio_package_as_folder,
        )

        # Any: pydantic validates and coerces each field at run time (str -> Sha256, Path, ...).
        v0_5: Any = importlib.import_module("bioimageio.spec.model.v0_5")
    except ImportError as exc:
        raise ImportError(
            "bioimage.io export needs bioimageio.spec and bioimageio.core: "
            "pip install 'napari-cellclf[bioimageio]'"
        ) from exc
    from . import __version__
    from .modelfile import load_model

    model_path = Path(model_path).expanduser()
    out = Path(out).expanduser()
    as_zip = out.suffix.lower() == ".zip"
    if as_zip and out.is_dir():
        raise BioimageioError(f"{out} is a folder; a .zip output must be a file path")
    if as_zip:
        from ._files import check_output_path

        check_output_path(out, inputs=[model_path])
    if not as_zip and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BioimageioError(f"{out} exists and is not an empty folder; choose a new folder or a .zip")
    if not (out.parent.is_dir()):
        raise BioimageioError(f"folder {out.parent} does not exist")
    model, meta = load_model(model_path, device="cpu")
    model.eval()
    from .model import ARCHITECTURES

    if meta.architecture not in ARCHITECTURES:
        raise BioimageioError(
            f"{model_path}: a '{meta.architecture}' model cannot be exported to "
            f"bioimage.io (only the CNNs: {', '.join(ARCHITECTURES)})"
        )

    tiles = sample_tiles(meta, field_cyx)
    probabilities = classifier_probabilities(model, meta, tiles)
    class_ids = channel_ids(meta.class_names)
    input_channel_ids = channel_ids(meta.channel_names, prefix="channel")

    with tempfile.TemporaryDirectory(prefix="cellclf-bioimageio-") as tmp:
        stage = Path(tmp)
        shutil.copyfile(model_path, stage / CELLCLF_FILE)
        (stage / ARCHITECTURE_FILE).write_text(architecture_source(), encoding="utf-8")
        state, wrapper = _wrapped_state_dict(model_path, meta, stage / ARCHITECTURE_FILE)
        torch.save(state, stage / WEIGHTS_FILE)
        _check_wrapper(wrapper, meta, tiles, probabilities)
        np.save(stage / TEST_INPUT_FILE, tiles)
        np.save(stage / TEST_OUTPUT_FILE, probabilities)
        tifffile.imwrite(stage / SAMPLE_INPUT_FILE, tiles[0])
        tifffile.imwrite(stage / SAMPLE_OUTPUT_FILE, probabilities[:1])
        _write_cover(stage / COVER_FILE, tiles, probabilities, meta)
        preprocessing, notes = _preprocessing(meta, v0_5)
        trust = _trust_summary(meta)
        title = _resource_name(name or f"cellclf {' vs '.join(meta.class_names)}")
        text = description or (
            f"Classifies {meta.tile_size} px tiles of fluorescence microscopy "
            f"({', '.join(meta.channel_names)}) into "
            f"{', '.join(meta.class_names)}; trained with napari-cellclf."
        )
        (stage / README_FILE).write_text(
            _readme(meta, title, text, trust, notes, class_ids), encoding="utf-8"
        )

        with ValidationContext(root=stage, file_name=RDF_NAME, perform_io_checks=True):
            try:
                descr = v0_5.ModelDescr(
                    name=title,
                    description=text[:1024],
                    authors=[v0_5.Author(name=a) for a in (authors or ["napari-cellclf user"])],
                    cite=[
                        v0_5.CiteEntry(
                            text="napari: a multi-dimensional image viewer for Python "
                            "(napari-cellclf is a napari plugin)",
                            url="https://napari.org",
                        )
                    ],
                    license=license,
                    maintainers=[v0_5.Maintainer(github_user=github_user)] if github_user else [],
                    documentation=v0_5.FileDescr(source=README_FILE),
                    covers=[v0_5.FileDescr(source=COVER_FILE)],
                    tags=[
                        "classification",
                        "fluorescence-light-microscopy",
                        "2d",
                        "pytorch",
                        "napari-cellclf",
                        "cells",
                    ],
                    attachments=[v0_5.FileDescr(source=CELLCLF_FILE, sha256=_sha256(stage / CELLCLF_FILE))],
                    inputs=[
                        v0_5.InputTensorDescr(
                            id=v0_5.TensorId(INPUT_ID),
                            description=f"raw tiles, channels {', '.join(meta.channel_names)}",
                            axes=[
                                v0_5.BatchAxis(),
                                v0_5.ChannelAxis(channel_names=input_channel_ids),
                                *_space_axes(meta, v0_5),
                            ],
                            test_tensor=v0_5.FileDescr(source=TEST_INPUT_FILE),
                            sample_tensor=v0_5.FileDescr(source=SAMPLE_INPUT_FILE),
                            data=v0_5.IntervalOrRatioDataDescr(type="float32"),
                            preprocessing=preprocessing,
                        )
                    ],
                    outputs=[
                        v0_5.OutputTensorDescr(
                            id=v0_5.TensorId(OUTPUT_ID),
                            description="per-class probabilities (softmax); classes: "
                            + ", ".join(meta.class_names)[:80],
                            axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=class_ids)],
                            test_tensor=v0_5.FileDescr(source=TEST_OUTPUT_FILE),
                            sample_tensor=v0_5.FileDescr(source=SAMPLE_OUTPUT_FILE),
                            data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                        )
                    ],
                    weights=v0_5.WeightsDescr(
                        pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
                            source=WEIGHTS_FILE,
                            sha256=_sha256(stage / WEIGHTS_FILE),
                            architecture=v0_5.ArchitectureFromFileDescr(
                                source=ARCHITECTURE_FILE,
                                sha256=_sha256(stage / ARCHITECTURE_FILE),
                                callable=WRAPPER_CALLABLE,
                                kwargs=architecture_kwargs(meta),
                            ),
                            pytorch_version=torch.__version__.split("+")[0],
                        )
                    ),
                    config=v0_5.Config(
                        bioimageio=v0_5.BioimageioConfig(
                            architecture_type="CNN classifier",
                            architecture_description=_architecture_text(meta),
                            modality="fluorescence microscopy",
                            task="classification",
                            model_parameter_count=int(sum(p.numel() for p in model.parameters())),
                            training=_training_details(meta, v0_5),
                            bias_risks_limitations=v0_5.BiasRisksLimitations(
                                limitations=_limitations(meta, notes)
                            ),
                            cellclf_trust=trust,
                        ),
                        cellclf=_cellclf_config(meta) | {"exported_by": f"napari-cellclf {__version__}"},
                    ),
                )
            except Exception as exc:  # pydantic.ValidationError: say what did not fit
                raise BioimageioError(f"the model cannot be described for bioimage.io: {exc}") from exc
            if as_zip:
                written = Path(save_bioimageio_package(descr, output_path=out))
            else:
                written = Path(save_bioimageio_package_as_folder(descr, output_path=out))
    if validate:
        from bioimageio.spec import load_model_description

        loaded = load_model_description(written / RDF_NAME if not as_zip else written, perform_io_checks=True)
        if (
            getattr(loaded, "validation_summary", None) is not None
            and loaded.validation_summary.status == "failed"
        ):
            raise BioimageioError(
                f"the written package does not validate: {loaded.validation_summary.format()}"
            )
    return ExportResult(path=written, probabilities=probabilities, test_input=tiles, notes=notes)


def _check_wrapper(wrapper: nn.Module, meta, tiles: np.ndarray, reference: np.ndarray) -> None:
    """The shipped wrapper on our normalised tiles gives our probabilities."""
    from .data import Normalization

    x = torch.from_numpy(Normalization.from_dict(meta.normalization).apply(tiles))
    with torch.no_grad():
        got = wrapper(x).numpy()
    if not np.allclose(got, reference, rtol=1e-4, atol=1e-5):
        raise BioimageioError(
            f"the exported network disagrees with napari-cellclf "
            f"(max difference {np.abs(got - reference).max():.2g})"
        )


def _architecture_text(meta) -> str:
    members = int(getattr(meta, "n_members", 1) or 1)
    text = (
        f"napari-cellclf '{meta.architecture}' tile CNN (3x3 conv + ReLU blocks with 2x2 "
        f"max-pooling, dense head), {meta.tile_size} px tiles, {meta.in_channels} channel(s), "
        f"{meta.n_classes} classes, softmax output"
    )
    if members > 1:
        text += f"; ensemble of {members} members, output = mean of their probabilities"
    return text


def _limitations(meta, notes: list[str]) -> str:
    lines = [
        f"Trained on {meta.tile_size} px tiles of {', '.join(meta.channel_names)}; other "
        "channels, stainings or magnifications are outside what it has seen."
    ]
    pixel = getattr(meta, "pixel_size", None)
    if pixel:
        lines.append(
            f"Training pixel size {pixel['y']:g} x {pixel['x']:g} {pixel.get('unit') or ''}: "
            "images at another pixel size should be resampled first."
        )
    lines += notes
    return " ".join(lines)


def _readme(meta, title: str, text: str, trust: dict, notes: list[str], class_ids: list[str]) -> str:
    norm = meta.normalization
    lines = [
        f"# {title}",
        "",
        text,
        "",
        "## Input",
        "",
        f"- raw tiles `(batch, channel, y, x)`, {meta.tile_size} x {meta.tile_size} px, channels: "
        f"{', '.join(meta.channel_names)}",
        f"- normalisation (done by the package's preprocessing): {norm.get('mode', 'dataset')} mode",
    ]
    pixel = getattr(meta, "pixel_size", None)
    if pixel:
        lines.append(f"- training pixel size: {pixel['y']:g} x {pixel['x']:g} {pixel.get('unit') or ''}")
    lines += ["", "## Output", "", "Per-class probabilities `(batch, class)`, summing to 1:", ""]
    lines += [f"- `{cid}`: {name}" for cid, name in zip(class_ids, meta.class_names)]
    lines += ["", "## Validation", ""]
    runs = trust.get("runs") or []
    if any(r.get("val_accuracy") is not None for r in runs):
        lines += [
            "Held-out validation tiles (never trained on), best epoch of each training run; "
            f"chance is {trust['chance']:.3f} (1 / {meta.n_classes} classes):",
            "",
            "| run | seed | accuracy | balanced accuracy | epochs |",
            "| --- | --- | --- | --- | --- |",
        ]
        for i, run in enumerate(runs):
            lines.append(
                f"| {i}{' (kept)' if trust.get('best_run') == i else ''} | {run['seed']} | "
                f"{_number(run['val_accuracy'])} | {_number(run['val_balanced_accuracy'])} | "
                f"{run['epochs_completed']} |"
            )
        lines += [f"- run {i}: {r['memorisation']}" for i, r in enumerate(runs) if r.get("memorisation")]
    else:
        lines.append("This model file carries no held-out validation results.")
    for key in ("evaluation", "baseline", "crosstest"):
        if trust.get(key) is not None:
            lines += ["", f"Stored {key} results: `config.bioimageio.cellclf_trust.{key}` in rdf.yaml."]
    for warning in trust.get("warnings") or []:
        lines.append(f"- training warning: {warning}")
    lines += [
        "",
        "To validate on your own data: label some tiles, run `cellclf evaluate`, and compare "
        "balanced accuracy with chance (1 / number of classes).",
        "",
        "## Limitations",
        "",
        _limitations(meta, notes),
        "",
        "## Reproduce in napari-cellclf",
        "",
        f"`cellclf import PACKAGE --out model.safetensors` gives back the original model file "
        f"(`{CELLCLF_FILE}`, attached).",
    ]
    return "\n".join(lines) + "\n"


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _write_cover(path: Path, tiles: np.ndarray, probabilities: np.ndarray, meta) -> None:
    """2:1 cover: up to four test tiles (first channel) with the predicted class."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n = min(4, len(tiles))
    figure = Figure(figsize=(6, 3), dpi=100)
    for i in range(4):
        axis = figure.add_axes((i / 4 + 0.01, 0.12, 0.23, 0.7))
        axis.set_axis_off()
        if i >= n:
            continue
        plane = tiles[i, 0].astype(np.float64)
        low, high = np.percentile(plane, (1, 99.5))
        axis.imshow(
            np.clip((plane - low) / (high - low if high > low else 1.0), 0, 1), cmap="magma", vmin=0, vmax=1
        )
        k = int(np.argmax(probabilities[i]))
        axis.set_title(
            f"{_short(meta.class_names[k])}\np={probabilities[i, k]:.2f}",
            fontsize=9,
            color=meta.class_colors[k],
        )
    figure.text(0.5, 0.93, "napari-cellclf tile classifier", ha="center", fontsize=11, color="white")
    figure.patch.set_facecolor("#262930")
    buffer = io_module.BytesIO()
    figure.savefig(buffer, format="png", facecolor=figure.get_facecolor())
    path.write_bytes(buffer.getvalue())


# ------------------------------------------------------------------------------------ import


def import_bioimageio(package: str | Path, out: str | Path) -> Path:
    """Write the cellclf model file carried by a package made by `export_bioimageio` (a folder,
    its rdf.yaml, or a .zip) to `out`; returns the saved path. The attachment's sha256 is checked
    against rdf.yaml and the file is then validated like any model file. BioimageioError when the
    package was not made by napari-cellclf or was altered."""
    from ._files import atomic_write, check_output_path
    from .modelfile import ModelFileError, load_model, model_file_path

    package = Path(package).expanduser()
    target = check_output_path(model_file_path(out), inputs=[package])
    rdf, read = _open_package(package)
    cellclf = (rdf.get("config") or {}).get("cellclf") or {}
    file_name = cellclf.get("model_file")
    if not file_name:
        raise BioimageioError(
            f"{package} was not exported by napari-cellclf (rdf.yaml has no "
            "config.cellclf.model_file); only such packages can be imported"
        )
    listed = {
        str(a.get("source")): a.get("sha256") for a in rdf.get("attachments") or [] if isinstance(a, dict)
    }
    if file_name not in listed or "/" in file_name or "\\" in file_name:
        raise BioimageioError(f"{package}: {file_name!r} is not a listed attachment")
    payload = read(file_name)
    digest = hashlib.sha256(payload).hexdigest()
    if listed[file_name] and listed[file_name] != digest:
        raise BioimageioError(
            f"{package}: {file_name} does not match its sha256 in rdf.yaml (the package was altered)"
        )
    with tempfile.TemporaryDirectory(prefix="cellclf-import-") as tmp:
        staged = Path(tmp) / CELLCLF_FILE
        staged.write_bytes(payload)
        try:
            load_model(staged, device="cpu")  # every check a model file gets, before writing
        except ModelFileError as exc:
            raise BioimageioError(f"{package}: the attached model file is invalid: {exc}") from None

    # The very bytes exported: weights exactly as trained (a loaded model may be folded for speed).
    def write(handle) -> None:
        handle.write(payload)

    return atomic_write(target, write)


def _open_package(package: Path):
    """(rdf dict, read(name) -> bytes) for a folder, an rdf.yaml or a .zip."""
    import yaml

    if not package.exists():
        raise BioimageioError(f"{package}: no such file or folder")
    if package.is_dir():
        root = package

        def read(name: str) -> bytes:
            path = root / name
            if not path.is_file():
                raise BioimageioError(f"{package}: {name} is missing")
            return path.read_bytes()
    elif package.suffix.lower() in (".yaml", ".yml"):
        root = package.parent
        rdf_text = package.read_bytes()

        def read(name: str) -> bytes:
            if name == RDF_NAME:
                return rdf_text
            path = root / name
            if not path.is_file():
                raise BioimageioError(f"{package}: {name} is missing")
            return path.read_bytes()
    elif zipfile.is_zipfile(package):
        with zipfile.ZipFile(package) as archive:
            contents = {info.filename: info for info in archive.infolist()}
            rdf_names = [n for n in contents if n.endswith(RDF_NAME) or n.endswith("bioimageio.yaml")]
            if not rdf_names:
                raise BioimageioError(f"{package}: the archive holds no rdf.yaml")

        def read(name: str) -> bytes:
            with zipfile.ZipFile(package) as archive:
                try:
                    return archive.read(name)
                except KeyError:
                    raise BioimageioError(f"{package}: {name} is missing from the archive") from None

        rdf_bytes = read(sorted(rdf_names, key=len)[0])
        return _parse_rdf(rdf_bytes, package, yaml), read
    else:
        raise BioimageioError(f"{package}: not a folder, rdf.yaml or .zip bioimage.io package")
    return _parse_rdf(read(RDF_NAME), package, yaml), read


def _parse_rdf(raw: bytes, package: Path, yaml) -> dict:
    try:
        rdf = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BioimageioError(f"{package}: rdf.yaml is not valid YAML ({exc})") from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise BioimageioError(f"{package}: rdf.yaml does not describe a bioimage.io model")
    return rdf


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ bioimageio.core


def run_bioimageio_test(package: str | Path):
    """bioimageio.core's own test of the package (the `bioimageio test` command): returns its
    ValidationSummary (`.status` is "passed" when the package runs and reproduces its test output)."""
    from bioimageio.core import test_model

    return test_model(str(package))


def predict_with_bioimageio(package: str | Path, tiles: np.ndarray) -> np.ndarray:
    """(N, K) probabilities that bioimageio.core computes for raw (N, C, T, T) tiles."""
    from bioimageio.core import create_prediction_pipeline, load_model_description
    from bioimageio.core.digest_spec import create_sample_for_model

    descr = load_model_description(str(package))
    pipeline = create_prediction_pipeline(descr, devices=["cpu"])
    sample = create_sample_for_model(descr, inputs={INPUT_ID: np.asarray(tiles, dtype=np.float32)})
    members: Any = pipeline.predict_sample_without_blocking(sample).members
    return np.asarray(members[OUTPUT_ID].data, dtype=np.float32)
