"""Tiles where the answer is known, and small models trained on them once per test session:
blurred blobs (cells) on a dark background with Poisson noise, 32 px, one channel."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from napari_cellclf.data import TileDataset
from napari_cellclf.inference import Classifier
from napari_cellclf.training import TrainConfig, run_training

TILE = 32
EPOCHS = {"cells": 8, "noise": 6, "artefact": 20}
MARK = 400.0  # brightness of the planted corner mark (cells peak near 220)


def blob_tiles(rng: np.random.Generator, n: int, spots: bool = False) -> np.ndarray:
    """(n, 1, T, T) float32: 1-2 diffuse cells per tile; `spots` adds bright puncta in them."""
    yy, xx = np.mgrid[:TILE, :TILE]
    out = np.zeros((n, 1, TILE, TILE), np.float32)
    for i in range(n):
        image = np.full((TILE, TILE), 20.0)
        for _ in range(rng.integers(1, 3)):
            cy, cx = rng.uniform(4, TILE - 4, 2)
            radius = rng.uniform(4, 7)
            image += 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius * radius))
            if spots:
                for _ in range(4):
                    sy, sx = cy + rng.normal(0, radius / 2), cx + rng.normal(0, radius / 2)
                    image += 300 * np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / 2)
        out[i, 0] = rng.poisson(image)
    return out


def dataset(tiles: np.ndarray, labels: np.ndarray, class_names=("diffuse", "puncta")) -> TileDataset:
    n = len(labels)
    return TileDataset(
        tiles=np.asarray(tiles, np.float32),
        labels=np.asarray(labels, np.int64),
        groups=np.arange(n) % 8,
        positions=np.stack([np.arange(n) // 8, np.zeros(n, int)], 1),
        class_names=list(class_names),
        channel_names=["protein"],
    )


def kind_tiles(kind: str, n: int, seed: int) -> TileDataset:
    """'cells': puncta vs diffuse (learnable); 'artefact': identical cells, one class marked by a
    bright 2x2 mark in the top-left corner; 'noise': identical cells, labels at random."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    tiles = blob_tiles(rng, n)
    if kind == "cells":
        tiles = np.where(labels[:, None, None, None] == 1, blob_tiles(rng, n, spots=True), tiles)
    elif kind == "artefact":
        tiles[labels == 1, :, :2, :2] = MARK
    elif kind == "noise":
        labels = rng.permutation(labels)
    else:
        raise ValueError(kind)
    return dataset(tiles, labels)


@cache
def trained(kind: str) -> Classifier:
    """A Classifier of `training_result(kind)`'s model."""
    result = training_result(kind)
    return Classifier(result.model, result.meta(), device="cpu")


@cache
def training_result(kind: str):
    """A 'fast' CNN trained on 240 tiles of `kind` (a few seconds on a CPU; the corner mark
    takes ~20 epochs to be learnt fully, the cells and the noise far fewer)."""
    config = TrainConfig(
        epochs=EPOCHS[kind], architecture="fast", device="cpu", patience=0, batch_size=32, seed=0
    )
    # One thread: on a shared 2-core machine the default thread pool makes this tiny net ~40x
    # slower (threads waiting on each other); restored afterwards for the other tests.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_training(kind_tiles(kind, 240, seed=0), config)
    finally:
        torch.set_num_threads(threads)
    return result
