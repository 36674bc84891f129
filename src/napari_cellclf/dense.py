"""Dense class maps: the network evaluated fully convolutionally over the field. No Qt.

With overlapping tiles (stride < tile size) the per-tile path re-runs every convolution on every
pixel once per tile that covers it: stride 16 on 64 px tiles is 16x the work of stride 64. The
convolutional part of the net ("features": 3x3 'same' convolutions, ReLU, batch norm in eval mode,
2x2 pools) is translation-equivariant, so here it runs once over the field, in large blocks, and
each tile's feature window (tile size / 8 on a side) is cut out of the result and sent through
the model's own head (adaptive pool, dense layers), which is small (~2 % of a tile's FLOPs).

Exactness. Blocks overlap by a halo that covers the receptive field of the features, so the
result does not depend on the block size (up to float rounding). It differs from per-tile
evaluation at one place: in per-tile mode each convolution's zero 'same' padding sits at the
TILE border, so the pixels near a tile's edge see zeros; here they see the neighbouring pixels,
as they do inside the tile. Only the field border is zero-padded in both. This is a different
(and arguably better: no artificial edges) evaluation of the same network, not a rounding
error; tests/test_dense.py and benchmarks/bench_scale.py measure it (stated tolerance:
DENSE_ARGMAX_AGREEMENT of tiles get the same class and the mean absolute probability difference
is below DENSE_MEAN_TOLERANCE on a trained model; among tiles that per-tile evaluation calls
with confidence >= DENSE_CONFIDENT; a randomly initialised net, whose outputs hinge
on every pixel, disagrees more). `Classifier.predict_field(dense=False)` keeps the exact
per-tile evaluation, and it stays the path for stride == tile size.

Applies when: stride < tile size, dataset-mode normalisation (per-tile normalisation differs
per tile), a model that is a chain of Sequentials whose feature layers are the ones above,
tile size and stride multiples of the pooling factor (8 for the built-in nets). Else None and
the caller uses per-tile evaluation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Generator

import numpy as np
import torch
from torch import nn

# Stated tolerance vs per-tile evaluation, for a trained model: mean |p_dense - p_tile| over tiles
# and classes, and the share of tiles keeping their class among those per-tile evaluation
# calls with confidence >= DENSE_CONFIDENT (near-ties flip with any change of the input).
DENSE_MEAN_TOLERANCE = 0.05
DENSE_ARGMAX_AGREEMENT = 0.98
DENSE_CONFIDENT = 0.75
BLOCK_PIXELS = 640  # side of a block's output region (px), before the halo

_HEAD_START = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)
_POINTWISE = (nn.ReLU, nn.BatchNorm2d, nn.Dropout, nn.Identity, nn.LeakyReLU, nn.GELU, nn.SiLU)


@dataclass
class DensePlan:
    features: list  # callables run on (1, C, h, w) blocks
    head: list  # callables run on (N, Cf, t, t) feature windows
    factor: int  # total downsampling of the features (8 for the built-in nets)
    halo: int  # input pixels each block needs beyond its output region
    dtype: torch.dtype  # dtype the features run in (bf16 for a bf16 oneDNN net)
    autocast: tuple | None  # (device_type, dtype) for an autocast net, else None

    def run(self, steps: list, x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x


def _split(layers: list) -> int | None:
    for i, layer in enumerate(layers):
        if isinstance(layer, _HEAD_START):
            return i
    return None


def _geometry(layers: list[nn.Module]) -> tuple[int, int] | None:
    """(pooling factor, receptive-field radius in input px) of the feature layers, or None."""
    factor, radius = 1, 0
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            k, p = layer.kernel_size, layer.padding
            if (
                isinstance(p, str)
                or layer.stride != (1, 1)
                or layer.dilation != (1, 1)
                or layer.padding_mode != "zeros"
                or any(kk % 2 == 0 for kk in k)
                or tuple(p) != tuple(kk // 2 for kk in k)
            ):
                return None
            radius += max(k) // 2 * factor
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            kernel = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
            stride = layer.stride if layer.stride is not None else kernel
            stride = stride if isinstance(stride, int) else stride[0]
            padding = layer.padding if isinstance(layer.padding, int) else max(layer.padding)
            if kernel != stride or padding != 0 or layer.ceil_mode:
                return None
            radius += (kernel - 1) * factor
            factor *= kernel
        elif isinstance(layer, nn.BatchNorm2d):
            if layer.training:
                return None
        elif not isinstance(layer, _POINTWISE):
            return None
    return factor, radius


def plan_for(classifier) -> DensePlan | None:
    """How to evaluate the classifier's current net densely, or None when it cannot be."""
    from ._onednn import _FusedConv, _leaf_sequence, _OneDNNNet
    from .precision import AutocastNet, CastNet

    if getattr(classifier, "backend", "") == "compile" or hasattr(classifier.model, "members"):
        return None
    if classifier.normalization.mode != "dataset":
        return None
    layers = _leaf_sequence(classifier.model)
    if layers is None:
        return None
    cut = _split(layers)
    if cut is None or cut == 0:
        return None
    geometry = _geometry(layers[:cut])
    if geometry is None:
        return None
    factor, radius = geometry
    halo = -(-radius // factor) * factor

    net, dtype, autocast = classifier._net, torch.float32, None
    # The wrapper's settings read before `net` is rebound (mypy narrows item by item).
    if isinstance(net, CastNet):
        dtype = net.dtype
        net = net.net
    elif isinstance(net, AutocastNet):
        autocast = (net.device_type, net.dtype)
        net = net.net
    if isinstance(net, _OneDNNNet):
        steps = list(net.steps)
        step_cut = _split(steps)
        if step_cut is None or not all(isinstance(s, (_FusedConv, nn.Module)) for s in steps):
            return None
        return DensePlan(steps[:step_cut], steps[step_cut:], factor, halo, dtype, autocast)
    if net is not classifier.model:
        return None
    return DensePlan(layers[:cut], layers[cut:], factor, halo, dtype, autocast)


def applies(classifier, stride: int) -> bool:
    plan = classifier.dense_plan
    return (
        plan is not None
        and stride < classifier.tile_size
        and stride % plan.factor == 0
        and classifier.tile_size % plan.factor == 0
    )


def _padded_field(prepared) -> np.ndarray:
    """The normalised field reflect-padded to the extent of its tiles, as extract_tiles pads the
    border tiles (tiling._tile_with_reflect is defined as that whole-field np.pad)."""
    grid = prepared.grid
    height, width = grid.image_shape
    full_h = max(height, (grid.rows - 1) * grid.stride + grid.tile_size)
    full_w = max(width, (grid.cols - 1) * grid.stride + grid.tile_size)
    field = np.asarray(prepared.field, dtype=np.float32)
    if (full_h, full_w) == (height, width):
        return field
    return np.pad(field, ((0, 0), (0, full_h - height), (0, full_w - width)), mode="reflect")


def predict_dense(
    classifier, prepared, stop=None, block_pixels: int | None = None
) -> Generator[tuple[int, int], None, tuple[np.ndarray, int]]:
    """Probabilities of prepared.indices (row-major tile order), evaluated densely.

    The feature map is computed in strips of block_pixels rows (each strip in blocks of
    block_pixels columns, every block with its halo); after each strip the head classifies the
    tiles whose feature windows are complete, so progress comes in tile order and a stop keeps
    a prefix. Yields (done, total); returns ((N, K) float32 probabilities, done)."""
    plan = classifier.dense_plan
    grid, size, stride = prepared.grid, classifier.tile_size, prepared.grid.stride
    field = _padded_field(prepared)
    full_h, full_w = field.shape[1:]
    f, t, step = plan.factor, size // plan.factor, stride // plan.factor
    block = max(f, (block_pixels or BLOCK_PIXELS) // f * f)
    indices = np.asarray(prepared.indices, dtype=np.int64)
    order = np.argsort(indices, kind="stable")
    if not np.array_equal(order, np.arange(len(indices))):
        raise ValueError("dense evaluation needs tile indices in increasing order")
    rows, cols = grid.row_col(indices)
    ends = rows * stride + size  # bottom pixel row (exclusive) of each tile
    total = len(indices)
    out = np.zeros((total, len(classifier.class_names)), dtype=np.float32)
    features: torch.Tensor | None = None
    head_batch = max(classifier.batch_size, 256)
    context = (
        torch.autocast(device_type=plan.autocast[0], dtype=plan.autocast[1])
        if plan.autocast
        else contextlib.nullcontext()
    )
    done = 0
    with torch.inference_mode(), context:
        for y0 in range(0, full_h, block):
            if stop is not None and stop.is_set():
                break
            y1 = min(full_h, y0 + block)
            in_y0, in_y1 = max(0, y0 - plan.halo), min(full_h, y1 + plan.halo)
            for x0 in range(0, full_w, block):
                x1 = min(full_w, x0 + block)
                in_x0, in_x1 = max(0, x0 - plan.halo), min(full_w, x1 + plan.halo)
                inputs = classifier.to_tensor(field[None, :, in_y0:in_y1, in_x0:in_x1]).to(plan.dtype)
                result = plan.run(plan.features, inputs)[0]
                if features is None:
                    features = torch.empty(
                        (result.shape[0], full_h // f, full_w // f), dtype=result.dtype, device=result.device
                    )
                oy, ox = (y0 - in_y0) // f, (x0 - in_x0) // f
                features[:, y0 // f : y1 // f, x0 // f : x1 // f] = result[
                    :, oy : oy + (y1 - y0) // f, ox : ox + (x1 - x0) // f
                ]
            ready = int(np.searchsorted(ends, y1, side="right")) if y1 < full_h else total
            assert features is not None  # the first band of every block row sets it
            windows = features.unfold(1, t, step).unfold(2, t, step)  # (Cf, R, C, t, t)
            while done < ready:
                part = slice(done, min(ready, done + head_batch))
                chosen = windows[:, torch.from_numpy(rows[part]), torch.from_numpy(cols[part])]
                chosen = chosen.permute(1, 0, 2, 3).contiguous(memory_format=torch.channels_last)
                logits = plan.run(plan.head, chosen)
                out[part] = torch.softmax(logits.float(), dim=1).cpu().numpy()
                done = part.stop
            yield done, total
    return out[:done], done
