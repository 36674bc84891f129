"""The CNNs (PyTorch) and device choice. No Qt.

CONTRACT (stub by the lead; the model owner implements it):
- "original": the method's net — 3x3 'same' conv + ReLU blocks 16/16/16 | pool | 32/32/32 | pool |
  64/64/64 | pool, dense 512, dense 50, logits over classes (softmax applied by callers/loss).
  Pooling depth follows the tile size (no pool that would go below 2 px); large tiles end in an
  adaptive pool so the dense head stays small. "fast": a smaller variant for quick interactive use.
- Models take float32 (N, C, T, T) normalised tiles and return (N, K) logits.
"""
from __future__ import annotations

import torch
from torch import nn

ARCHITECTURES = ("original", "fast")
MIN_TILE_SIZE = 16


def build_model(architecture: str, in_channels: int, n_classes: int, tile_size: int) -> nn.Module:
    """ValueError for unknown architecture, tile_size < 16, in_channels < 1, n_classes < 2."""
    raise NotImplementedError


def choose_device(requested: str = "auto") -> torch.device:
    """"auto" -> cuda if available else (mps if available) else cpu; "cpu"/"cuda"/"cuda:1"/"gpu"
    honoured; asking for cuda without one -> ValueError with a clear message."""
    raise NotImplementedError


def prepare_for_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to device; channels_last memory format (fast on CPU and CUDA); eval mode untouched."""
    raise NotImplementedError


def forward_flops(model: nn.Module, in_channels: int, tile_size: int) -> int:
    """Multiply-adds x 2 of one forward pass on one tile (conv + linear layers), for benchmarks."""
    raise NotImplementedError
