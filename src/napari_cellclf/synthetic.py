"""Realistic synthetic fluorescence fields (numpy + scikit-image). No Qt.

CONTRACT (stub by the lead; the sample-data owner implements it):
Two channels: 0 = nuclear stain, 1 = cytoplasmic protein. Cells of varying shape, size and
brightness; Poisson plus read noise; uneven background. phenotype="puncta": the protein forms
bright aggregates in most cells; "diffuse": it stays spread through the cytoplasm. Deterministic
for a given seed. Used by sample_data/make_sample_data.py and by tests (small sizes, fast).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHANNEL_NAMES = ("nuclei", "protein")
CLASS_NAMES = ("Control", "Aggregates")   # label values 1 and 2; diffuse = Control


@dataclass
class SyntheticField:
    image: np.ndarray        # (2, H, W) uint16
    labels: np.ndarray       # (H, W) uint8 class label image: 0 background, 1 Control (diffuse) cell, 2 Aggregates cell
    cells: np.ndarray        # (H, W) int32 instance labels (0 background)
    pixel_size: float        # µm per pixel
    phenotype: str


def make_field(phenotype: str = "puncta", shape: tuple[int, int] = (1024, 1024), seed: int = 0,
               cell_radius: float = 18.0, density: float = 1.0, pixel_size: float = 0.325
               ) -> SyntheticField:
    raise NotImplementedError
