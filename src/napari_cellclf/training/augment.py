"""The training augmentation (dihedral flips/rotations, small rotations and shifts) on batches. No Qt."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import (
    TrainConfig,
)


def _augment(
    xb: torch.Tensor, config: TrainConfig, generator: torch.Generator, unscaled: int = 0
) -> torch.Tensor:
    """The training augmentation of one batch; every draw comes from `generator` (on the CPU).
    The last `unscaled` channels (the cell-mask channel: 0/1, not an intensity) move with the
    image but get no intensity jitter."""
    n = len(xb)
    if config.augment:
        xb = _random_dihedral(xb, torch.randint(0, 8, (n,), generator=generator))
    if config.rotate_degrees > 0 or config.shift_fraction > 0:
        angles = (torch.rand(n, generator=generator) * 2 - 1) * config.rotate_degrees
        # affine_grid works in [-1, 1] coordinates: a shift of f * tile is 2 f there.
        shifts = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * config.shift_fraction)
        xb = _rotate(xb, angles, shifts)
    if config.intensity_jitter > 0:
        gains = torch.exp(
            (torch.rand(n, xb.shape[1], 1, 1, generator=generator) * 2 - 1) * config.intensity_jitter
        )
        if unscaled:
            gains[:, xb.shape[1] - unscaled :] = 1.0
        xb = xb * gains.to(device=xb.device, dtype=xb.dtype)
    return xb


def _random_dihedral(x: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
    """Each tile gets one of the 8 rotations/reflections of the square (ops in 0..7, on the CPU):
    tiles are grouped by op so the whole batch costs at most 8 cheap tensor ops."""
    out = torch.empty_like(x)
    for op in range(8):
        chosen = (ops == op).nonzero().flatten()
        if len(chosen) == 0:
            continue
        chosen = chosen.to(x.device)
        part = x.index_select(0, chosen)
        if op & 4:
            part = part.flip(-1)
        out[chosen] = torch.rot90(part, op & 3, dims=(-2, -1))
    return out


def _rotate(x: torch.Tensor, degrees: torch.Tensor, shifts: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate each tile by its own angle about its centre, then shift it by (dx, dy) in affine_grid
    coordinates (2 = the tile's width); bilinear, reflected borders."""
    radians = degrees.to(device=x.device, dtype=x.dtype) * (math.pi / 180)
    cos, sin = torch.cos(radians), torch.sin(radians)
    if shifts is None:
        dx = dy = torch.zeros_like(cos)
    else:
        shifts = shifts.to(device=x.device, dtype=x.dtype)
        dx, dy = shifts[:, 0], shifts[:, 1]
    theta = torch.stack([torch.stack([cos, -sin, dx], 1), torch.stack([sin, cos, dy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
