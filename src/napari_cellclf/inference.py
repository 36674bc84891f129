"""Per-tile class probabilities over whole fields, batched. No Qt.

- A `Classifier` wraps (model, meta) once: device, channels_last, eval mode, inference_mode, and a
  batch size sized to memory; CLI, widget and benchmark all use it, so the speed measured is the
  speed users get.
- `predict_field` is a generator (progress per batch, cancellable via `stop`) whose return value is
  a FieldPrediction; `predict_field_sync` runs it to the end.
- Input is a raw (C, Y, X) field with exactly the model's channels (else ValueError saying how many
  the model expects); normalisation from the model metadata is applied here.

Where the speed comes from (measured numbers: benchmarks/README.md):
- batches of tiles, channels_last, under inference_mode: oneDNN's blocked convolution kernels
  instead of one small NCHW call per tile. Batches are bounded by bytes of activations
  (CPU_ACTIVATION_BUDGET), not by count: very large batches make every layer output a fresh
  multi-megabyte allocation (page faults, cache misses) and get slower.
- on CPU, backend "onednn" (the default there, `_onednn.py`): each convolution fused with its
  ReLU and pool, weights packed once; checked against the plain model on a probe batch when the
  Classifier is made, and not used unless it agrees (or when the model has another shape).
- precision (precision.py): bf16 where the CPU has it and a probe agrees with fp32.
- backend "compile": torch.compile (freezing), opt-in; its compile time is paid on first use.
  Falls back to eager with a warning if it fails.
- CSV tables of the results: tables.py; which channels feed the model: channels.py.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Generator

import numpy as np
import torch
from torch import nn

from ._generators import drive, relay
from ._onednn import onednn_net
from .channels import model_channel_indices  # noqa: F401  (re-exported: old import path)
from .data import Normalization
from .io import check_finite
from .model import choose_device, prepare_for_device
from .modelfile import ModelMeta
from .tables import write_predictions_csv  # noqa: F401  (re-exported: old import path)
from .tiling import TileGrid, extract_tiles, foreground_tiles, make_grid, tile_values_to_map

# Bytes that the largest activation of one batch may take. Measured on a 2-core AVX-512 CPU
# (64 px tiles): 4 MiB (16 tiles) runs as fast as larger batches, and larger ones more often fall
# into glibc handing the freed activations back to the OS and page-faulting them in again on
# every batch (up to 25% slower); 2 MiB and below lose 5-30% to per-call overheads. On a GPU
# much larger batches keep the device busy.
CPU_ACTIVATION_BUDGET = 4 * 2**20
GPU_ACTIVATION_BUDGET = 512 * 2**20
MAX_BATCH_SIZE = 1024
BACKENDS = ("auto", "onednn", "eager", "compile")


@dataclass
class InferenceProgress:
    done: int  # tiles done
    total: int
    stage: str = "classify"  # "classify" | "explain"
    unit: ClassVar[str] = "tiles"  # what `done` counts, in words (progress text, readouts)


@dataclass
class FieldPrediction:
    grid: TileGrid
    indices: np.ndarray  # (N,) tile indices into grid that were classified (foreground)
    probabilities: np.ndarray  # (N, K) float32
    class_names: list[str]
    cancelled: bool = False  # stopped early: only the tiles done so far are in `indices`
    unit: ClassVar[str] = InferenceProgress.unit

    @property
    def predicted(self) -> np.ndarray:  # (N,) int 0..K-1
        return (
            np.argmax(self.probabilities, axis=1).astype(np.int64)
            if len(self.indices)
            else np.zeros(0, dtype=np.int64)
        )

    @property
    def confidence(self) -> np.ndarray:  # (N,) float max probability
        return (
            np.max(self.probabilities, axis=1).astype(np.float32)
            if len(self.indices)
            else np.zeros(0, dtype=np.float32)
        )

    def class_map(self) -> np.ndarray:
        """(H, W) uint8/uint16 label image: class k -> k+1, unclassified pixels 0."""
        dtype = np.uint8 if len(self.class_names) < 255 else np.uint16
        labels = (self.predicted + 1).astype(dtype)
        return tile_values_to_map(labels, self.grid, self.indices, fill=dtype(0)).astype(dtype)

    def confidence_map(self) -> np.ndarray:
        """(H, W) float32 confidence of each pixel's tile; 0 where unclassified."""
        return tile_values_to_map(self.confidence, self.grid, self.indices, fill=np.float32(0)).astype(
            np.float32
        )

    def table(self) -> dict[str, np.ndarray]:
        """Columns, one row per classified tile: index, row, col, y, x, class (1-based label value),
        class_name, confidence, p_<class name> per class. Usable as napari Labels `features`
        (pandas.DataFrame(table)) and as CSV rows. `index` numbers the tiles from 1 (grid tile
        n is index n + 1): the label value napari shows for the tile in the widget's classes
        layer, so a tile hovered there is found in the CSV by the same number."""
        indices = np.asarray(self.indices, dtype=np.int64)
        rows, cols = self.grid.row_col(indices)
        predicted = self.predicted
        names = np.array(self.class_names, dtype=object)
        columns: dict[str, np.ndarray] = {
            "index": indices + 1,
            "row": rows.astype(np.int64),
            "col": cols.astype(np.int64),
            "y": (rows * self.grid.stride).astype(np.int64),
            "x": (cols * self.grid.stride).astype(np.int64),
            "class": predicted + 1,
            "class_name": names[predicted] if len(predicted) else np.zeros(0, dtype=object),
            "confidence": self.confidence,
        }
        for k, name in enumerate(self.class_names):
            columns[f"p_{name}"] = self.probabilities[:, k].astype(np.float32)
        return columns


@dataclass
class PreparedField:
    """A field checked against the model and normalised once, ready to be cut into batches."""

    grid: TileGrid
    indices: np.ndarray  # tiles to process (all, or the foreground ones)
    field: np.ndarray  # (C, Y, X): normalised float32 (dataset mode) or raw (per-tile)
    normalization: Normalization

    def tiles(self, which: np.ndarray) -> np.ndarray:
        """(n, C, T, T) normalised float32 tiles for tile indices `which`."""
        tiles = extract_tiles(self.field, self.grid, which)
        if self.normalization.mode == "per_tile":
            return self.normalization.apply(tiles)
        return np.ascontiguousarray(tiles, dtype=np.float32)


class Classifier:
    """The model, prepared once for fast batched inference on one device.

    backend: "auto" (oneDNN on CPU when the model fits it, else eager PyTorch), "onednn"
    (warns and uses eager when it cannot), "eager", or "compile" (torch.compile on the first
    batch, falling back to eager with a warning if compilation fails). The wrapped model is moved
    and converted in place (device, channels_last, eval mode); the oneDNN backend keeps its own
    packed copy of the weights, so make a new Classifier after changing them."""

    def __init__(
        self,
        model: nn.Module,
        meta: ModelMeta,
        device: str = "auto",
        batch_size: int | None = None,
        backend: str = "auto",
        precision: str | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.meta = meta
        self.device = choose_device(device)
        # eval() first: prepare_for_device folds BatchNorm only in eval mode, and without the
        # fold a model handed over in training mode (build_model's default) missed the oneDNN
        # backend and ran eager, as bench_engine.py's did.
        self.model = prepare_for_device(model.eval(), self.device)
        self.normalization = Normalization.from_dict(meta.normalization)
        self.class_names = list(meta.class_names)
        self.channel_names = list(meta.channel_names)
        self.tile_size = int(meta.tile_size)
        self.in_channels = len(self.channel_names)
        if batch_size is None:
            batch_size = self._batch_size_for_memory()
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = int(batch_size)

        self.backend = "eager"
        # what classifies (a module, or torch.compile's callable)
        self._net: nn.Module | Callable[..., Any] = self.model
        self._compile_pending = backend == "compile"
        if backend in ("auto", "onednn") and self.device.type == "cpu":
            net = onednn_net(self.model, self.in_channels, self.tile_size, self.batch_size)
            if net is not None:
                self._net, self.backend = net, "onednn"
        if backend == "onednn" and self.backend != "onednn":
            warnings.warn(
                "the oneDNN backend does not apply here (not a CPU, no oneDNN, or a "
                "model of another shape); running the model in eager PyTorch",
                RuntimeWarning,
                stacklevel=2,
            )
        self._fp32_net = self._net
        self.set_precision(precision)

    @classmethod
    def from_file(
        cls,
        path,
        device: str = "auto",
        batch_size: int | None = None,
        backend: str = "auto",
        precision: str | None = None,
    ) -> "Classifier":
        from .modelfile import load_model

        model, meta = load_model(path, device="cpu")
        return cls(model, meta, device=device, batch_size=batch_size, backend=backend, precision=precision)

    def set_precision(self, precision: str | None = None, probe=None) -> str:
        """Choose fp32 or bf16 (precision.py: "auto" = bf16 where the hardware has it and a
        probe batch agrees with fp32; None = $CELLCLF_PRECISION or "auto"). `probe`: normalised
        (N, C, T, T) tiles to decide on (default: a seeded synthetic batch). Returns the choice,
        also in `self.precision`, with the evidence in `self.precision_report`."""
        from . import precision as precision_module

        net, gradient_net, report = precision_module.select(self, precision, probe)
        self._net = self._fp32_net if net is None else net
        self._gradient_net = gradient_net
        self._dense_plan: Any = None  # dense.DensePlan, False (cannot), None (not asked)
        self.precision_report = report
        self.precision = report.precision
        return self.precision

    @property
    def dense_plan(self):
        """How dense.py evaluates this net over whole fields (None: it cannot; per-tile then)."""
        if self._dense_plan is None:
            from .dense import plan_for

            self._dense_plan = plan_for(self) or False
        return self._dense_plan or None

    @property
    def gradient_model(self) -> nn.Module:
        """A module equal to the model that autograd can differentiate with respect to its input
        (the oneDNN network when in use: its convolutions bring their own input gradient; its
        bf16 version when the probe allowed bf16 attribution)."""
        if self._gradient_net is not None:
            return self._gradient_net
        return self._fp32_net if self.backend == "onednn" else self.model

    # ---------------------------------------------------------------------------------- sizing

    def activation_bytes_per_tile(self) -> int:
        """Bytes of the largest layer output for one tile (measured with one forward pass)."""
        largest = 0

        def record(module, inputs, output) -> None:
            nonlocal largest
            if isinstance(output, torch.Tensor):
                largest = max(largest, output.element_size() * output.numel())

        hooks = [
            m.register_forward_hook(record) for m in self.model.modules() if next(m.children(), None) is None
        ]
        try:
            probe = torch.zeros(
                1, self.in_channels, self.tile_size, self.tile_size, device=self.device
            ).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                self.model(probe)
        finally:
            for hook in hooks:
                hook.remove()
        return max(largest, 4 * self.in_channels * self.tile_size**2)

    def _batch_size_for_memory(self) -> int:
        budget = CPU_ACTIVATION_BUDGET if self.device.type == "cpu" else GPU_ACTIVATION_BUDGET
        return int(np.clip(budget // self.activation_bytes_per_tile(), 1, MAX_BATCH_SIZE))

    # --------------------------------------------------------------------------------- forward

    def _compile(self) -> None:
        self._compile_pending = False
        try:
            # freezing: weights become constants that inductor pre-packs for oneDNN (inference).
            compiled = torch.compile(self.model, dynamic=False, options={"freezing": True})
            probe = torch.zeros(
                self.batch_size, self.in_channels, self.tile_size, self.tile_size, device=self.device
            ).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                compiled(probe)  # compile now, so that a failure is caught here
            self._net, self.backend = compiled, "compile"
        except Exception as exc:  # no C++ compiler, unsupported platform...: eager works
            warnings.warn(
                f"torch.compile failed ({type(exc).__name__}: {exc}); running the model uncompiled",
                RuntimeWarning,
                stacklevel=3,
            )

    def to_tensor(self, tiles: np.ndarray) -> torch.Tensor:
        """Normalised (N, C, T, T) float32 tiles -> channels_last tensor on the model's device."""
        tensor = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()  # page-locked: the copy overlaps with GPU work
        return tensor.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)

    def _autocast(self):
        """Mixed precision on CUDA (bf16 where supported, else fp16): probabilities only need
        a few digits; attribution stays in fp32 for its gradients."""
        if self.device.type != "cuda" or self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def _probabilities(self, tiles: np.ndarray) -> np.ndarray:
        """Normalised tiles (one batch) -> (n, K) float32 probabilities."""
        if self._compile_pending:
            self._compile()
        inputs = self.to_tensor(tiles)
        with torch.inference_mode(), self._autocast():
            if self.backend == "compile" and len(inputs) != self.batch_size:
                logits = self.model(inputs)  # odd last batch: don't recompile for its shape
            else:
                logits = self._net(inputs)
            probabilities = torch.softmax(logits.float(), dim=1)
        return probabilities.cpu().numpy()

    # ------------------------------------------------------------------------------ public API

    def check_field(self, image_cyx: np.ndarray) -> np.ndarray:
        """The field as a (C, Y, X) array with the model's channels, else a clear ValueError."""
        image = np.asarray(image_cyx)
        if image.ndim == 2 and self.in_channels == 1:
            image = image[np.newaxis]
        expected = (
            f"model expects {self.in_channels} channel{'s' if self.in_channels != 1 else ''}"
            f" ({', '.join(self.channel_names)})"
        )
        if image.ndim != 3:
            raise ValueError(f"{expected} as a (C, Y, X) image; got an image of shape {image.shape}")
        if image.shape[0] != self.in_channels:
            hint = ""
            if image.shape[-1] == self.in_channels:
                hint = " (channels may be on the last axis: move them first, to (C, Y, X))"
            raise ValueError(f"{expected}, image has {image.shape[0]}{hint}")
        if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
            raise ValueError(f"image must be numeric, got dtype {image.dtype}")
        check_finite(image, "the image", self.channel_names, error=ValueError)
        return image

    def prepare_field(
        self,
        image_cyx: np.ndarray,
        stride: int | None = None,
        foreground_only: bool = False,
        foreground_channel: int = 0,
    ) -> PreparedField:
        """Check the field, lay the tile grid (border='pad', every pixel covered), choose the
        tiles and normalise the field once (dataset-mode normalisation is per pixel, so
        normalising the field equals normalising every tile, without re-doing overlaps)."""
        image = self.check_field(image_cyx)
        grid = make_grid(image.shape[1:], self.tile_size, stride, border="pad")
        if foreground_only:
            if not 0 <= foreground_channel < image.shape[0]:
                raise ValueError(
                    f"foreground_channel {foreground_channel} is out of range for "
                    f"an image with {image.shape[0]} channels"
                )
            indices = np.flatnonzero(foreground_tiles(image, grid, channel=foreground_channel))
        else:
            indices = np.arange(grid.n_tiles)
        field = image if self.normalization.mode == "per_tile" else self.normalization.apply(image)
        return PreparedField(grid, indices.astype(np.int64), field, self.normalization)

    def predict_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """(N, C, T, T) raw tiles -> (N, K) probabilities (normalisation applied)."""
        tiles = np.asarray(tiles)
        shape = (self.in_channels, self.tile_size, self.tile_size)
        if tiles.ndim != 4 or tiles.shape[1:] != shape:
            raise ValueError(
                f"tiles must be (N, {', '.join(map(str, shape))}) for this model "
                f"({', '.join(self.channel_names)}; {self.tile_size} px), "
                f"got shape {tiles.shape}"
            )
        out = np.empty((len(tiles), len(self.class_names)), dtype=np.float32)
        for start in range(0, len(tiles), self.batch_size):
            batch = self.normalization.apply(tiles[start : start + self.batch_size])
            out[start : start + len(batch)] = self._probabilities(batch)
        return out

    def predict_field(
        self,
        image_cyx: np.ndarray,
        stride: int | None = None,
        foreground_only: bool = False,
        stop: threading.Event | None = None,
        foreground_channel: int = 0,
        dense: bool | None = None,
    ) -> Generator[InferenceProgress, None, FieldPrediction]:
        """Tiles with the model's tile size (border='pad' so the whole field is covered).

        `dense` (None = when it applies): with stride < tile size, run the convolutions once over
        the field instead of once per overlapping tile (dense.py: up to ~10x faster at stride
        tile/4; tiles' border pixels then see their neighbours instead of zero padding, see
        dense.DENSE_ARGMAX_AGREEMENT). False: per-tile, exactly as the model sees single tiles.

        Yields InferenceProgress once before the first batch and after every batch; `stop` is
        checked between batches, and a stopped run returns the tiles done so far with
        `cancelled=True`. `foreground_only` skips tiles that are background in
        `foreground_channel` (tiling.foreground_tiles)."""
        prepared = self.prepare_field(image_cyx, stride, foreground_only, foreground_channel)
        return (yield from self.predict_prepared(prepared, stop, dense))

    def predict_prepared(
        self, prepared: PreparedField, stop: threading.Event | None = None, dense: bool | None = None
    ) -> Generator[InferenceProgress, None, FieldPrediction]:
        """predict_field for a field already checked and normalised (streaming.py feeds bands
        of a large image through here)."""
        total = len(prepared.indices)
        yield InferenceProgress(0, total)
        from . import dense as dense_module

        if dense is not False and dense_module.applies(self, prepared.grid.stride):
            run = dense_module.predict_dense(self, prepared, stop)
            probabilities, done = yield from relay(run, lambda event: InferenceProgress(event[0], total))
            return FieldPrediction(
                prepared.grid, prepared.indices[:done], probabilities, list(self.class_names), done < total
            )
        if dense and prepared.grid.stride < self.tile_size:
            warnings.warn(
                "dense evaluation does not apply to this model or stride; evaluating tile by tile",
                RuntimeWarning,
                stacklevel=2,
            )
        probabilities = np.zeros((total, len(self.class_names)), dtype=np.float32)
        done, cancelled = 0, False
        while done < total:
            if stop is not None and stop.is_set():
                cancelled = True
                break
            which = prepared.indices[done : done + self.batch_size]
            probabilities[done : done + len(which)] = self._probabilities(prepared.tiles(which))
            done += len(which)
            yield InferenceProgress(done, total)
        return FieldPrediction(
            prepared.grid, prepared.indices[:done], probabilities[:done], list(self.class_names), cancelled
        )

    def predict_field_sync(self, image_cyx: np.ndarray, **kwargs) -> FieldPrediction:
        return drive(self.predict_field(image_cyx, **kwargs))
