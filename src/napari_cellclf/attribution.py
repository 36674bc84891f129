"""Gradient x input attributions stitched over the original pixels. No Qt.

- For each tile: d(logit of target class)/d(input) * input, on the normalised input the model saw.
- Target: the predicted class per tile (default) or a fixed class index.
- Batched like inference (same tiles, same normalisation, same batch size), cancellable, stitched
  with tiling.stitch_tile_maps into a map the size of the field ((H, W) summed over channels;
  (C, H, W) with per_channel=True).

Only the input gradient is asked of autograd (torch.autograd.grad with inputs=x), so weight
gradients are never computed: one attribution batch is a forward pass plus an input-gradient
backward pass. On CPU the Classifier's oneDNN network does both with fused, pre-packed
convolutions (the backward of a convolution is a convolution with the flipped kernel, and each
ReLU's mask is applied on the 4x smaller pooled gradient where a max pool follows), so
explaining costs ~2.5x classifying (2-core AVX-512 CPU, 64 px tiles; benchmarks/README.md).
"""
from __future__ import annotations

import threading
from typing import Generator

import numpy as np
import torch
from torch import nn

from ._generators import drive
from .inference import Classifier, InferenceProgress
from .tiling import stitch_tile_maps


def gradient_x_input(model: nn.Module, inputs: torch.Tensor, target: int | torch.Tensor | None = None
                     ) -> torch.Tensor:
    """(N, C, T, T) normalised inputs -> (N, C, T, T) attributions for `target` (None: argmax).

    `target` is one class index for every tile, or an (N,) tensor of per-tile indices. The
    model's mode (eval/train) and its parameters' requires_grad flags are left as they are."""
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be (N, C, T, T), got shape {tuple(inputs.shape)}")
    # A tensor made under inference_mode cannot enter autograd; a plain copy can.
    x = inputs.clone() if inputs.is_inference() else inputs.detach()
    x.requires_grad_(True)
    with torch.inference_mode(False), torch.enable_grad():
        logits = model(x)
        n_classes = logits.shape[1]
        if target is None:
            chosen = logits.detach().argmax(dim=1)
        elif isinstance(target, torch.Tensor):
            chosen = target.to(device=logits.device, dtype=torch.long).reshape(-1)
            if chosen.numel() != len(x):
                raise ValueError(f"target has {chosen.numel()} entries for {len(x)} tiles")
        else:
            chosen = torch.full((len(x),), _check_class(target, n_classes), dtype=torch.long,
                                device=logits.device)
        if chosen.numel() and (int(chosen.min()) < 0 or int(chosen.max()) >= n_classes):
            raise ValueError(f"target classes must be in 0..{n_classes - 1}")
        selected = logits.gather(1, chosen[:, None]).sum()
        (gradient,) = torch.autograd.grad(selected, x)
    return (gradient * x).detach()


def _check_class(target, n_classes: int) -> int:
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) \
            or not 0 <= int(target) < n_classes:
        raise ValueError(f"target must be a class index in 0..{n_classes - 1} (or None for each "
                         f"tile's predicted class), got {target!r}")
    return int(target)


def explain_field(classifier: Classifier, image_cyx: np.ndarray, target: int | None = None,
                  stride: int | None = None, per_channel: bool = False,
                  stop: threading.Event | None = None
                  ) -> Generator[InferenceProgress, None, np.ndarray]:
    """Gradient x input of every tile of the field (border='pad', every pixel covered),
    stitched into an (H, W) float32 map (channels summed) or (C, H, W) with per_channel.

    Yields InferenceProgress(stage="explain") once before the first batch and after each batch;
    `stop` is checked between batches, and a stopped run returns the map of the tiles done so
    far (zero elsewhere)."""
    if target is not None:
        target = _check_class(target, len(classifier.class_names))
    prepared = classifier.prepare_field(image_cyx, stride)
    grid, indices = prepared.grid, prepared.indices
    total = len(indices)
    size = grid.tile_size
    shape = (total, classifier.in_channels, size, size) if per_channel else (total, size, size)
    maps = np.zeros(shape, dtype=np.float32)
    done = 0
    yield InferenceProgress(0, total, stage="explain")
    while done < total:
        if stop is not None and stop.is_set():
            break
        which = indices[done:done + classifier.batch_size]
        inputs = classifier.to_tensor(prepared.tiles(which))
        attributions = gradient_x_input(classifier.gradient_model, inputs, target)
        if not per_channel:
            attributions = attributions.sum(dim=1)
        maps[done:done + len(which)] = attributions.cpu().numpy()
        done += len(which)
        yield InferenceProgress(done, total, stage="explain")
    return stitch_tile_maps(maps[:done], grid, indices[:done])


def explain_field_sync(classifier: Classifier, image_cyx: np.ndarray, **kwargs) -> np.ndarray:
    return drive(explain_field(classifier, image_cyx, **kwargs))
