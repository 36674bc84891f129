"""Per-tile class probabilities over whole fields, batched. No Qt.

- A `Classifier` wraps (model, meta) once: device, channels_last, eval mode, inference_mode, and a
  batch size sized to memory; CLI, widget and benchmark all use it, so the speed measured is the
  speed users get.
- `predict_field` is a generator (progress per batch, cancellable via `stop`) whose return value is
  a FieldPrediction; `predict_field_sync` runs it to the end.
- Input is a raw (C, Y, X) field with exactly the model's channels (else ValueError saying how many
  the model expects); normalisation from the model metadata is applied here.

Where the speed comes from (2-core AVX-512 CPU, 64 px tiles; benchmarks/README.md):
- batches of tiles, channels_last, under inference_mode: oneDNN's blocked convolution kernels
  instead of one small NCHW call per tile (3.1x the one-tile loop). Batches are bounded by bytes
  of activations, not by count: very large batches make every layer output a fresh
  multi-megabyte allocation (page faults, cache misses) and get *slower*.
- on CPU, backend "onednn" (the default there): the network re-expressed as oneDNN calls, each
  convolution fused with its ReLU and its weights packed once into oneDNN's blocked layout: the
  kernels torch.compile emits on CPU with freezing, ready in milliseconds instead of ~10 s of
  compilation (+8%: 3.3x the one-tile loop, 68% of the fp32 matmul ceiling). It is checked
  against the plain model on a probe batch when the Classifier is made, and not used unless
  it agrees (or when the model has another shape).
- backend "compile": torch.compile (freezing), opt-in; measured no faster than "onednn" here,
  and its compile time is paid on first use. Falls back to eager with a warning if it fails.
- tile extraction (strided views, one copy per batch) and normalising the field once cost ~1%.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io as io_module
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Generator

import numpy as np
import torch
from torch import nn

from ._generators import drive
from ._files import atomic_write
from .channels import model_channel_indices  # noqa: F401  (re-exported: old import path)
from .data import Normalization
from .io import check_finite
from .model import choose_device, prepare_for_device
from .modelfile import ModelMeta
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
    done: int          # tiles done
    total: int
    stage: str = "classify"   # "classify" | "explain"


@dataclass
class FieldPrediction:
    grid: TileGrid
    indices: np.ndarray         # (N,) tile indices into grid that were classified (foreground)
    probabilities: np.ndarray   # (N, K) float32
    class_names: list[str]
    cancelled: bool = False     # stopped early: only the tiles done so far are in `indices`

    @property
    def predicted(self) -> np.ndarray:    # (N,) int 0..K-1
        return np.argmax(self.probabilities, axis=1).astype(np.int64) if len(self.indices) \
            else np.zeros(0, dtype=np.int64)

    @property
    def confidence(self) -> np.ndarray:   # (N,) float max probability
        return np.max(self.probabilities, axis=1).astype(np.float32) if len(self.indices) \
            else np.zeros(0, dtype=np.float32)

    def class_map(self) -> np.ndarray:
        """(H, W) uint8/uint16 label image: class k -> k+1, unclassified pixels 0."""
        dtype = np.uint8 if len(self.class_names) < 255 else np.uint16
        labels = (self.predicted + 1).astype(dtype)
        return tile_values_to_map(labels, self.grid, self.indices, fill=dtype(0)).astype(dtype)

    def confidence_map(self) -> np.ndarray:
        """(H, W) float32 confidence of each pixel's tile; 0 where unclassified."""
        return tile_values_to_map(self.confidence, self.grid, self.indices,
                                  fill=np.float32(0)).astype(np.float32)

    def table(self) -> dict[str, np.ndarray]:
        """Columns, one row per classified tile: index, row, col, y, x, class (1-based label value),
        class_name, confidence, p_<class name> per class. Usable as napari Labels `features`
        (pandas.DataFrame(table)) and as CSV rows."""
        indices = np.asarray(self.indices, dtype=np.int64)
        rows, cols = self.grid.row_col(indices)
        predicted = self.predicted
        names = np.array(self.class_names, dtype=object)
        columns: dict[str, np.ndarray] = {
            "index": indices,
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
    indices: np.ndarray         # tiles to process (all, or the foreground ones)
    field: np.ndarray           # (C, Y, X): normalised float32 (dataset mode) or raw (per-tile)
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

    def __init__(self, model: nn.Module, meta: ModelMeta, device: str = "auto",
                 batch_size: int | None = None, backend: str = "auto",
                 precision: str | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.meta = meta
        self.device = choose_device(device)
        self.model = prepare_for_device(model, self.device).eval()
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
        self._net: nn.Module = self.model          # what classifies (and explains, see below)
        self._compile_pending = backend == "compile"
        if backend in ("auto", "onednn") and self.device.type == "cpu":
            net = _onednn_net(self.model, self.in_channels, self.tile_size, self.batch_size)
            if net is not None:
                self._net, self.backend = net, "onednn"
        if backend == "onednn" and self.backend != "onednn":
            warnings.warn("the oneDNN backend does not apply here (not a CPU, no oneDNN, or a "
                          "model of another shape); running the model in eager PyTorch",
                          RuntimeWarning, stacklevel=2)
        self._fp32_net = self._net
        self.set_precision(precision)

    @classmethod
    def from_file(cls, path, device: str = "auto", batch_size: int | None = None,
                  backend: str = "auto", precision: str | None = None) -> "Classifier":
        from .modelfile import load_model
        model, meta = load_model(path, device="cpu")
        return cls(model, meta, device=device, batch_size=batch_size, backend=backend,
                   precision=precision)

    def set_precision(self, precision: str | None = None, probe=None) -> str:
        """Choose fp32 or bf16 (precision.py: "auto" = bf16 where the hardware has it and a
        probe batch agrees with fp32; None = $CELLCLF_PRECISION or "auto"). `probe`: normalised
        (N, C, T, T) tiles to decide on (default: a seeded synthetic batch). Returns the choice,
        also in `self.precision`, with the evidence in `self.precision_report`."""
        from . import precision as precision_module
        net, gradient_net, report = precision_module.select(self, precision, probe)
        self._net = self._fp32_net if net is None else net
        self._gradient_net = gradient_net
        self._dense_plan = None
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

        hooks = [m.register_forward_hook(record) for m in self.model.modules()
                 if next(m.children(), None) is None]
        try:
            probe = torch.zeros(1, self.in_channels, self.tile_size, self.tile_size,
                                device=self.device).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                self.model(probe)
        finally:
            for hook in hooks:
                hook.remove()
        return max(largest, 4 * self.in_channels * self.tile_size ** 2)

    def _batch_size_for_memory(self) -> int:
        budget = CPU_ACTIVATION_BUDGET if self.device.type == "cpu" else GPU_ACTIVATION_BUDGET
        return int(np.clip(budget // self.activation_bytes_per_tile(), 1, MAX_BATCH_SIZE))

    # --------------------------------------------------------------------------------- forward

    def _compile(self) -> None:
        self._compile_pending = False
        try:
            # freezing: weights become constants that inductor pre-packs for oneDNN (inference).
            compiled = torch.compile(self.model, dynamic=False, options={"freezing": True})
            probe = torch.zeros(self.batch_size, self.in_channels, self.tile_size, self.tile_size,
                                device=self.device).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                compiled(probe)          # compile now, so that a failure is caught here
            self._net, self.backend = compiled, "compile"
        except Exception as exc:      # no C++ compiler, unsupported platform...: eager works
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); "
                          "running the model uncompiled", RuntimeWarning, stacklevel=3)

    def to_tensor(self, tiles: np.ndarray) -> torch.Tensor:
        """Normalised (N, C, T, T) float32 tiles -> channels_last tensor on the model's device."""
        tensor = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()   # page-locked: the copy overlaps with GPU work
        return tensor.to(self.device, non_blocking=True).contiguous(
            memory_format=torch.channels_last)

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
                logits = self.model(inputs)     # odd last batch: don't recompile for its shape
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
        expected = (f"model expects {self.in_channels} channel{'s' if self.in_channels != 1 else ''}"
                    f" ({', '.join(self.channel_names)})")
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

    def prepare_field(self, image_cyx: np.ndarray, stride: int | None = None,
                      foreground_only: bool = False, foreground_channel: int = 0
                      ) -> PreparedField:
        """Check the field, lay the tile grid (border='pad', every pixel covered), choose the
        tiles and normalise the field once (dataset-mode normalisation is per pixel, so
        normalising the field equals normalising every tile, without re-doing overlaps)."""
        image = self.check_field(image_cyx)
        grid = make_grid(image.shape[1:], self.tile_size, stride, border="pad")
        if foreground_only:
            if not 0 <= foreground_channel < image.shape[0]:
                raise ValueError(f"foreground_channel {foreground_channel} is out of range for "
                                 f"an image with {image.shape[0]} channels")
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
            raise ValueError(f"tiles must be (N, {', '.join(map(str, shape))}) for this model "
                             f"({', '.join(self.channel_names)}; {self.tile_size} px), "
                             f"got shape {tiles.shape}")
        out = np.empty((len(tiles), len(self.class_names)), dtype=np.float32)
        for start in range(0, len(tiles), self.batch_size):
            batch = self.normalization.apply(tiles[start:start + self.batch_size])
            out[start:start + len(batch)] = self._probabilities(batch)
        return out

    def predict_field(self, image_cyx: np.ndarray, stride: int | None = None,
                      foreground_only: bool = False, stop: threading.Event | None = None,
                      foreground_channel: int = 0, dense: bool | None = None
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

    def predict_prepared(self, prepared: PreparedField, stop: threading.Event | None = None,
                         dense: bool | None = None
                         ) -> Generator[InferenceProgress, None, FieldPrediction]:
        """predict_field for a field already checked and normalised (streaming.py feeds bands
        of a large image through here)."""
        total = len(prepared.indices)
        yield InferenceProgress(0, total)
        from . import dense as dense_module
        if dense is not False and dense_module.applies(self, prepared.grid.stride):
            run = dense_module.predict_dense(self, prepared, stop)
            while True:
                try:
                    done, _ = next(run)
                except StopIteration as finished:
                    probabilities, done = finished.value
                    break
                yield InferenceProgress(done, total)
            return FieldPrediction(prepared.grid, prepared.indices[:done], probabilities,
                                   list(self.class_names), done < total)
        if dense and prepared.grid.stride < self.tile_size:
            warnings.warn("dense evaluation does not apply to this model or stride; "
                          "evaluating tile by tile", RuntimeWarning, stacklevel=2)
        probabilities = np.zeros((total, len(self.class_names)), dtype=np.float32)
        done, cancelled = 0, False
        while done < total:
            if stop is not None and stop.is_set():
                cancelled = True
                break
            which = prepared.indices[done:done + self.batch_size]
            probabilities[done:done + len(which)] = self._probabilities(prepared.tiles(which))
            done += len(which)
            yield InferenceProgress(done, total)
        return FieldPrediction(prepared.grid, prepared.indices[:done], probabilities[:done],
                               list(self.class_names), cancelled)

    def predict_field_sync(self, image_cyx: np.ndarray, **kwargs) -> FieldPrediction:
        return drive(self.predict_field(image_cyx, **kwargs))


# ---------------------------------------------------------------------------------------------
# oneDNN fast path (CPU)

def _pack_weight(weight: torch.Tensor, padding: list[int], input_shape) -> torch.Tensor:
    """Convolution weight reordered once into oneDNN's blocked layout (any batch size works)."""
    return torch._C._nn.mkldnn_reorder_conv2d_weight(
        weight.to_mkldnn(), padding, [1, 1], [1, 1], 1, list(input_shape))


class _FusedConv:
    """A stride-1 Conv2d, the ReLU after it when there is one, and the max pool after that when
    there is one, as one step: the convolution and ReLU are one oneDNN call."""

    def __init__(self, conv: nn.Conv2d, relu: bool, input_shape: tuple[int, ...],
                 pool: nn.MaxPool2d | None = None, dtype: torch.dtype = torch.float32):
        weight = conv.weight.detach().to(dtype).contiguous()
        (kh, kw), (ph, pw) = conv.kernel_size, conv.padding
        self.relu = relu
        self.padding = [ph, pw]
        self.bias = None if conv.bias is None else conv.bias.detach().to(dtype).contiguous()
        self.weight = _pack_weight(weight, self.padding, input_shape)
        # The input gradient of a stride-1 convolution is the convolution of the output gradient
        # with the kernel flipped and its in/out channels swapped, padded by k - 1 - p.
        self.back_padding = [kh - 1 - ph, kw - 1 - pw]
        self.back_weight = _pack_weight(weight.transpose(0, 1).flip(2, 3).contiguous(),
                                        self.back_padding,
                                        (input_shape[0], conv.out_channels, *input_shape[2:]))
        self.pool = pool
        if pool is not None:
            stride = pool.kernel_size if pool.stride is None else pool.stride
            self.pool_args = [_pair(pool.kernel_size), _pair(stride), _pair(pool.padding),
                              _pair(pool.dilation), bool(pool.ceil_mode)]

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, [1, 1], [1, 1], 1,
            "relu" if self.relu else "none", [], "")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        output = self.convolve(x)
        return output if self.pool is None else self.pool(output)

    def convolve_back(self, grad: torch.Tensor) -> torch.Tensor:
        """Gradient with respect to the convolution's input, given the one of its output."""
        return torch.ops.mkldnn._convolution_pointwise(
            grad.contiguous(memory_format=torch.channels_last), self.back_weight, None,
            self.back_padding, [1, 1], [1, 1], 1, "none", [], "")


class _FusedConvFunction(torch.autograd.Function):
    """Autograd for a fused step: the input gradient only (weights stay fixed: attribution)."""

    @staticmethod
    def forward(ctx, x, step: _FusedConv):
        ctx.step = step
        output = step.convolve(x)
        if step.pool is None:
            ctx.save_for_backward(output)
            return output
        pooled, indices = torch.ops.aten.max_pool2d_with_indices(output, *step.pool_args)
        ctx.save_for_backward(output, pooled, indices)
        return pooled

    @staticmethod
    def backward(ctx, grad):
        step = ctx.step
        if step.pool is None:
            (output,) = ctx.saved_tensors
            if step.relu:
                grad = torch.ops.aten.threshold_backward(grad, output, 0)
        else:
            output, pooled, indices = ctx.saved_tensors
            # ReLU's mask is applied before un-pooling, on the smaller pooled gradient: the pool
            # hands each window's gradient to the window's maximum, which is > 0 exactly when
            # the pooled value is, so masking before or after un-pooling gives the same result.
            grad = torch.ops.aten.threshold_backward(grad, pooled, 0)
            grad = torch.ops.aten.max_pool2d_with_indices_backward(
                grad, output, *step.pool_args, indices)
        return step.convolve_back(grad), None


class _OneDNNNet(nn.Module):
    """The model as a sequence of fused oneDNN steps and the model's own other layers."""

    def __init__(self, steps: list):
        super().__init__()
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        track = torch.is_grad_enabled() and x.requires_grad
        for step in self.steps:
            if isinstance(step, _FusedConv):
                x = _FusedConvFunction.apply(x, step) if track else step(x)
            else:
                x = step(x)
        return x


# Layers the oneDNN network runs as they are (besides the convolutions it fuses).
_PLAIN_LAYERS = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                 nn.Flatten, nn.Linear, nn.Dropout, nn.Identity)


def _leaf_sequence(module: nn.Module) -> list[nn.Module] | None:
    """The layers in the order a chain of Sequentials runs them; None for anything else."""
    children = list(module.children())
    if not children:
        return [module]
    if not isinstance(module, nn.Sequential) and \
            not all(isinstance(child, nn.Sequential) for child in children):
        return None
    layers: list[nn.Module] = []
    for child in children:
        sub = _leaf_sequence(child)
        if sub is None:
            return None
        layers += sub
    return layers


def _onednn_net(model: nn.Module, in_channels: int, tile_size: int, batch_size: int,
                dtype: torch.dtype = torch.float32) -> _OneDNNNet | None:
    """The oneDNN version of `model`, or None when it does not apply or does not agree with the
    model (outputs and input gradients are compared on a random probe batch). With dtype
    torch.bfloat16 the weights are packed in bf16 and the net takes and returns bf16 tensors;
    it is not compared here (precision.py's probe rule decides whether bf16 may be used)."""
    if not (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return None
    layers = _leaf_sequence(model)
    if layers is None:
        return None
    try:
        steps: list = []
        x = torch.zeros(1, in_channels, tile_size, tile_size)
        with torch.inference_mode():
            i = 0
            while i < len(layers):
                layer = layers[i]
                if isinstance(layer, nn.Conv2d):
                    if not _fusable(layer):
                        return None
                    relu = _is_layer(layers, i + 1, nn.ReLU)
                    pool = layers[i + 2] if relu and _is_layer(layers, i + 2, nn.MaxPool2d) \
                        and not layers[i + 2].return_indices else None
                    used = layers[i:i + 1 + relu + (pool is not None)]
                    steps.append(_FusedConv(layer, relu, (batch_size, *x.shape[1:]), pool, dtype))
                    for module in used:
                        x = module(x)
                    i += len(used)
                elif isinstance(layer, _PLAIN_LAYERS):
                    if dtype != torch.float32 and next(layer.parameters(), None) is not None:
                        with torch.inference_mode(False):    # weights autograd may use
                            steps.append(copy.deepcopy(layer).to(dtype))
                    else:
                        steps.append(layer)
                    x = layer(x)
                    i += 1
                else:
                    return None
        net = _OneDNNNet(steps)
        if dtype != torch.float32:
            return net
        return net if _agrees(net, model, in_channels, tile_size) else None
    except (RuntimeError, TypeError, ValueError, AttributeError, NotImplementedError):
        return None       # a PyTorch build whose oneDNN ops differ: eager is always there


def _is_layer(layers: list[nn.Module], i: int, kind: type) -> bool:
    return i < len(layers) and isinstance(layers[i], kind)


def _pair(value) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * 2


def _fusable(conv: nn.Conv2d) -> bool:
    return (conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and all(p <= k - 1 for p, k in zip(conv.padding, conv.kernel_size))
            and conv.weight.dtype == torch.float32)


def _agrees(net: nn.Module, model: nn.Module, in_channels: int, tile_size: int) -> bool:
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(3, in_channels, tile_size, tile_size, generator=generator)
    probe = probe.contiguous(memory_format=torch.channels_last)
    outputs, gradients = [], []
    for candidate in (model, net):
        x = probe.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = candidate(x)
            (gradient,) = torch.autograd.grad(logits[:, 0].sum(), x)
        outputs.append(logits.detach())
        gradients.append(gradient)

    def close(fast: torch.Tensor, reference: torch.Tensor) -> bool:
        scale = float(reference.abs().max())
        return bool(torch.allclose(fast, reference, rtol=1e-3, atol=1e-4 * scale + 1e-7))

    return close(outputs[1], outputs[0]) and close(gradients[1], gradients[0])


def write_predictions_csv(path, table: dict[str, np.ndarray], source: str | None = None) -> None:
    """CSV with a header; an optional leading `source` column (file name); atomic write.

    A `source` column already in the table also comes first. The file appears complete or not
    at all: rows go to a temporary file in the same folder, which then replaces `path`."""
    path = Path(path)
    columns = {key: np.asarray(values) for key, values in table.items()}
    lengths = {key: len(values) for key, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"table columns differ in length: {lengths}")
    n_rows = next(iter(lengths.values()), 0)
    if source is not None:
        columns.pop("source", None)
        columns = {"source": np.full(n_rows, str(source), dtype=object), **columns}
    elif "source" in columns:
        columns = {"source": columns.pop("source"), **columns}

    def write(binary) -> None:
        text = io_module.TextIOWrapper(binary, newline="", encoding="utf-8")
        writer = csv.writer(text)
        writer.writerow(list(columns))
        writer.writerows(zip(*(_csv_column(values) for values in columns.values())))
        text.flush()
        text.detach()          # the atomic writer closes the file itself

    atomic_write(path, write)


def _csv_column(values: np.ndarray) -> list[str]:
    if values.dtype.kind == "f":
        return [format(float(v), ".6g") for v in values]
    if values.dtype.kind == "b":
        return ["true" if v else "false" for v in values]
    return [str(v) for v in values.tolist()]
