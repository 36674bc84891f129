"""Gradient x input attributions stitched over the original pixels. No Qt.

CONTRACT (stub by the lead; the attribution owner implements it):
- For each tile: d(logit of target class)/d(input) * input, on the normalised input the model saw.
- Target: the predicted class per tile (default) or a fixed class index.
- Batched like inference, cancellable, stitched with tiling.stitch_tile_maps into a map the size
  of the field ((H, W) summed over channels; (C, H, W) with per_channel=True).
"""
from __future__ import annotations

import threading
from typing import Generator

import numpy as np
import torch
from torch import nn

from .inference import Classifier, InferenceProgress


def gradient_x_input(model: nn.Module, inputs: torch.Tensor, target: int | torch.Tensor | None = None
                     ) -> torch.Tensor:
    """(N, C, T, T) normalised inputs -> (N, C, T, T) attributions for `target` (None: argmax)."""
    raise NotImplementedError


def explain_field(classifier: Classifier, image_cyx: np.ndarray, target: int | None = None,
                  stride: int | None = None, per_channel: bool = False,
                  stop: threading.Event | None = None
                  ) -> Generator[InferenceProgress, None, np.ndarray]:
    raise NotImplementedError


def explain_field_sync(classifier: Classifier, image_cyx: np.ndarray, **kwargs) -> np.ndarray: ...
