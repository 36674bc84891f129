"""What a training run may be asked (`TrainConfig`), its checks and the epoch budget. No Qt."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..baseline import FEATURES_ARCHITECTURE
from ..data import (
    NORMALIZATION_MODES,
)
from ..memorisation import WINDOW as MEMORISATION_WINDOW
from ..model import (
    ARCHITECTURES,
    choose_device,
)

BALANCE_MODES = ("weights", "sampler", "none")
SELECT_MODES = ("last", "best")
COMBINE_MODES = ("ensemble", "best")
# epochs=0 ("auto"): EPOCHS_AUTO epochs, but never fewer than MIN_STEPS optimiser steps (small sets
# need many epochs to see enough batches) nor more than MAX_STEPS (huge sets need few epochs),
# and between 2 and MAX_AUTO_EPOCHS epochs. 30 rather than 15: on the real cells (1,900+ training
# cells, where the epoch count and not the floor decides) 15 epochs under-trained (README).
EPOCHS_AUTO = 30
MIN_STEPS = 300
MAX_STEPS = 10_000
MAX_AUTO_EPOCHS = 300
MAX_CLASS_WEIGHT_RATIO = 10.0  # balance="weights": rarest class at most 10x the most common
LR_SCHEDULES = ("constant", "cosine")
_EVAL_BATCH = 256


@dataclass
class TrainConfig:
    """The one home of the training defaults (CLI and widget read theirs from here)."""

    epochs: int = 0  # 0 (or "auto"): from the data set size, see epochs_for()
    batch_size: int = 32  # small labelled sets: more, noisier steps generalise better
    learning_rate: float = 1e-3
    architecture: str = "batchnorm"
    augment: bool = True  # 90° rotations + flips (always valid for micrographs)
    rotate_degrees: float = 0.0  # extra small arbitrary rotations (0 = off)
    shift_fraction: float = 0.0  # random sub-tile shifts up to this fraction of the tile
    intensity_jitter: float = 0.0  # per-tile, per-channel gain exp(U(-j, j)) (0 = off)
    balance: str = "weights"  # "weights" (class-weighted loss; "sampler" past 10x) | "sampler" | "none"
    val_fraction: float = 0.2
    patience: int = 0  # early stopping on validation loss; 0 = off
    select: str = "last"  # kept weights per run: "last" epoch | "best" validation loss
    seed: int = 0
    runs: int = 1
    combine: str = "ensemble"  # runs > 1: deliver the "ensemble" of all runs | the "best" run
    tta: bool = False  # deliver DihedralTTA(model): 8 transforms averaged, 8x cost
    compare_baseline: bool = True  # classical features on the same split (baseline.py)
    device: str = "auto"
    normalization: str = "dataset"  # "dataset" | "per_tile"
    memorisation_epochs: int = MEMORISATION_WINDOW  # epochs in a row at chance -> warning; 0 = off
    # Regularised recipe (what it bought on real cells: README "Results measured here").
    lr_schedule: str = "cosine"  # "cosine" (decay to 0 over `epochs`, per batch) | "constant"
    weight_decay: float = 0.05  # decoupled (AdamW); 0 = plain Adam
    label_smoothing: float = 0.1  # soft targets: fewer over-confident memorised tiles


def check_config(config: TrainConfig) -> None:
    """ValueError naming the TrainConfig field for any value training cannot use."""

    def need(ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise ValueError(f"TrainConfig.{name} {rule}, got {getattr(config, name)!r}")

    def is_int(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    need(
        config.epochs == "auto" or (is_int(config.epochs) and config.epochs >= 0),
        "epochs",
        "must be an integer >= 1, or 0 (or 'auto') to choose from the data set size",
    )
    need(is_int(config.batch_size) and config.batch_size >= 1, "batch_size", "must be an integer >= 1")
    need(
        isinstance(config.learning_rate, (int, float)) and 0 < config.learning_rate < 1,
        "learning_rate",
        "must be a number between 0 and 1",
    )
    need(
        config.architecture in ARCHITECTURES or config.architecture == FEATURES_ARCHITECTURE,
        "architecture",
        f"must be one of {(*ARCHITECTURES, FEATURES_ARCHITECTURE)}",
    )
    need(
        isinstance(config.rotate_degrees, (int, float)) and 0 <= config.rotate_degrees <= 180,
        "rotate_degrees",
        "must be between 0 and 180",
    )
    need(
        isinstance(config.shift_fraction, (int, float)) and 0 <= config.shift_fraction <= 0.5,
        "shift_fraction",
        "must be between 0 and 0.5",
    )
    need(
        isinstance(config.intensity_jitter, (int, float)) and 0 <= config.intensity_jitter <= 1,
        "intensity_jitter",
        "must be between 0 and 1",
    )
    need(config.select in SELECT_MODES, "select", f"must be one of {SELECT_MODES}")
    need(config.combine in COMBINE_MODES, "combine", f"must be one of {COMBINE_MODES}")
    need(config.balance in BALANCE_MODES, "balance", f"must be one of {BALANCE_MODES}")
    need(
        isinstance(config.val_fraction, (int, float)) and 0 <= config.val_fraction < 1,
        "val_fraction",
        "must be >= 0 and < 1",
    )
    need(is_int(config.patience) and config.patience >= 0, "patience", "must be an integer >= 0")
    # numpy's generators refuse negative seeds and torch's overflow past 2**64: one clear rule.
    last_seed = (
        config.seed + (config.runs - 1 if is_int(config.runs) and config.runs > 1 else 0)
        if is_int(config.seed)
        else -1
    )
    need(
        is_int(config.seed) and config.seed >= 0 and last_seed < 2**32,
        "seed",
        "must be a whole number from 0 to 4294967295 (runs use seed, seed+1, ...)",
    )
    need(is_int(config.runs) and config.runs >= 1, "runs", "must be an integer >= 1")
    need(
        config.normalization in NORMALIZATION_MODES, "normalization", f"must be one of {NORMALIZATION_MODES}"
    )
    need(
        is_int(config.memorisation_epochs) and config.memorisation_epochs >= 0,
        "memorisation_epochs",
        "must be an integer >= 0",
    )
    need(config.lr_schedule in LR_SCHEDULES, "lr_schedule", f"must be one of {LR_SCHEDULES}")
    need(
        isinstance(config.weight_decay, (int, float)) and 0 <= config.weight_decay < 1,
        "weight_decay",
        "must be >= 0 and < 1",
    )
    need(
        isinstance(config.label_smoothing, (int, float)) and 0 <= config.label_smoothing < 1,
        "label_smoothing",
        "must be >= 0 and < 1",
    )
    choose_device(config.device)  # ValueError for an unknown or absent device


def epochs_for(config: TrainConfig, n_train: int) -> int:
    """The number of epochs a run trains: config.epochs, or for 0 / "auto" EPOCHS_AUTO epochs kept
    between MIN_STEPS and MAX_STEPS optimiser steps (and 2..MAX_AUTO_EPOCHS epochs)."""
    if config.epochs not in (0, "auto"):
        return int(config.epochs)
    steps_per_epoch = max(1, math.ceil(n_train / config.batch_size))
    steps = min(max(EPOCHS_AUTO * steps_per_epoch, MIN_STEPS), MAX_STEPS)
    return int(min(max(math.ceil(steps / steps_per_epoch), 2), MAX_AUTO_EPOCHS))
