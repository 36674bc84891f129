"""`train`: split, normalise, run the runs, combine them, compare with the baseline. No Qt."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Generator

import numpy as np
import torch
from torch import nn

from .._generators import drive
from ..baseline import FEATURES_ARCHITECTURE
from ..data import (
    TileDataset,
    check_trainable,
    fit_normalization,
    split_train_val,
)
from ..model import (
    DihedralTTA,
    Ensemble,
    build_model,
    choose_device,
    prepare_for_device,
)
from ..tiling import MIN_TILE_SIZE
from .config import (
    MAX_CLASS_WEIGHT_RATIO,
    TrainConfig,
    check_config,
    epochs_for,
)
from .events import (
    History,
    Progress,
    TrainingResult,
)
from .loop import _cpu_state, _evaluate, _train_one_run


def _check_dataset(dataset: TileDataset) -> None:
    check_trainable(dataset)
    tiles = dataset.tiles
    if tiles.ndim != 4 or tiles.shape[-1] != tiles.shape[-2]:
        raise ValueError(f"tiles must be an (N, C, T, T) array of square tiles, got shape {tiles.shape}")
    if tiles.shape[-1] < MIN_TILE_SIZE:
        raise ValueError(f"tile size {tiles.shape[-1]} px is too small for the CNN (minimum {MIN_TILE_SIZE})")
    if tiles.shape[1] != len(dataset.channel_names):
        raise ValueError(
            f"tiles have {tiles.shape[1]} channels but {len(dataset.channel_names)} channel names were given"
        )
    if len(dataset.labels) != len(tiles):
        raise ValueError(f"{len(dataset.labels)} labels for {len(tiles)} tiles")


def train(
    dataset: TileDataset, config: TrainConfig, stop: threading.Event | None = None
) -> Generator[Progress, None, TrainingResult]:
    """Validates the dataset first (data.check_trainable -> ValueError before any work).
    architecture "features": classical features, not a CNN (baseline.train_features)."""
    check_config(config)
    if config.architecture == FEATURES_ARCHITECTURE:
        from ..baseline import train_features

        return (yield from train_features(dataset, config, stop=stop))
    _check_dataset(dataset)
    stop = stop if stop is not None else threading.Event()
    device = choose_device(config.device)
    n_classes = len(dataset.class_names)
    tile_size = int(dataset.tiles.shape[-1])
    history = History()

    train_idx, val_idx = split_train_val(dataset, config.val_fraction, seed=config.seed)
    train_idx, val_idx = np.asarray(train_idx, dtype=np.int64), np.asarray(val_idx, dtype=np.int64)
    if len(train_idx) == 0:
        raise ValueError("the validation split left no tiles for training; lower val_fraction or add data")
    if config.val_fraction > 0 and len(val_idx) == 0:
        history.warnings.append(
            "no validation tiles could be set aside (too little data): the model "
            "is kept from the last epoch and its accuracy is unknown"
        )
    train_counts = np.bincount(dataset.labels[train_idx], minlength=n_classes)
    untrained = [name for name, n in zip(dataset.class_names, train_counts) if n == 0]
    if untrained:
        history.warnings.append(
            f"no training tiles for class(es) {', '.join(untrained)} after the "
            "validation split: the model cannot learn them"
        )

    # Statistics from the training part only: validation must look like unseen data.
    normalization = fit_normalization(
        dataset.tiles[train_idx], mode=config.normalization, unscaled=dataset.unscaled_channels
    )
    x_train = torch.from_numpy(
        np.ascontiguousarray(normalization.apply(dataset.tiles[train_idx]), dtype=np.float32)
    )
    y_train = torch.from_numpy(dataset.labels[train_idx].astype(np.int64))
    x_val = (
        torch.from_numpy(np.ascontiguousarray(normalization.apply(dataset.tiles[val_idx]), dtype=np.float32))
        if len(val_idx)
        else None
    )
    y_val = torch.from_numpy(dataset.labels[val_idx].astype(np.int64)) if len(val_idx) else None
    if device.type == "cuda":
        # Page-locked host memory lets batch copies overlap with compute (non_blocking).
        x_train, y_train = x_train.pin_memory(), y_train.pin_memory()
        if x_val is not None and y_val is not None:
            x_val, y_val = x_val.pin_memory(), y_val.pin_memory()

    # Class-balanced loss: weight n / (K * n_k) so every class counts as much as the others, but
    # never more than MAX_CLASS_WEIGHT_RATIO times the most common class: on the 7 real cell-cycle
    # classes (9 anaphase training cells beside 500 G1) uncapped weights of 56x made the network
    # give up G1/S/G2 (0.31 accuracy, 0.49 balanced, vs 0.88 / 0.52 unweighted).
    class_weights = torch.tensor(
        [len(train_idx) / (n_classes * n) if n else 0.0 for n in train_counts], dtype=torch.float32
    )
    positive = class_weights[class_weights > 0]
    capped = bool(len(positive)) and float(positive.max()) > float(positive.min()) * MAX_CLASS_WEIGHT_RATIO
    if len(positive):
        class_weights = class_weights.clamp(max=float(positive.min()) * MAX_CLASS_WEIGHT_RATIO)
    # Where the cap binds, capped weights leave the rarest classes under-counted; balanced batches
    # (drawn with replacement, unweighted loss) count them fully without huge loss weights: on the
    # 7 classes 0.827 balanced accuracy against 0.766 with capped weights (README).
    balance = "sampler" if config.balance == "weights" and capped else config.balance
    loss_weights = class_weights if balance == "weights" else None
    val_weights = class_weights if config.balance != "none" else torch.ones(n_classes)

    epochs = epochs_for(config, len(train_idx))
    in_channels = int(dataset.tiles.shape[1])
    best_states: list[dict | None] = []
    last_model: nn.Module | None = None
    cancelled = False
    for run in range(config.runs):
        seed = int(config.seed) + run
        outcome = yield from _train_one_run(
            run=run,
            seed=seed,
            config=config,
            epochs=epochs,
            device=device,
            n_classes=n_classes,
            tile_size=tile_size,
            in_channels=in_channels,
            x_train=x_train,
            y_train=y_train,
            x_val=x_val,
            y_val=y_val,
            loss_weights=loss_weights,
            val_weights=val_weights,
            balanced_batches=balance == "sampler",
            stop=stop,
            history=history,
            unscaled=dataset.unscaled_channels,
        )
        best_states.append(outcome["best_state"])
        last_model = outcome["model"]
        if outcome["cancelled"]:
            cancelled = True
            break

    def rebuild(state):
        member = build_model(config.architecture, in_channels, n_classes, tile_size)
        member.load_state_dict(state)
        return member.eval()

    best_run = history.summary()["best_run"]
    state = best_states[best_run]
    if state is None:
        # No epoch was ever kept (cancelled before the first one ended, or the loss was never
        # finite): hand back the weights as they are, and say so.
        assert last_model is not None  # check_config: runs >= 1, so one run has ended
        state = _cpu_state(last_model)
        history.warnings.append(
            "training was cancelled before the first epoch ended: the model is barely trained and "
            "its accuracy is unknown"
            if cancelled
            else "no epoch gave a finite loss: the model is the last weights and is probably useless"
        )
    # The ensemble takes every run that finished (a cancelled run's half-trained weights would
    # drag the average down), or the best run alone when fewer than two finished.
    finished = [
        i
        for i, (record, kept) in enumerate(zip(history.runs, best_states))
        if kept is not None and not record["cancelled"]
    ]
    if config.runs > 1 and config.combine == "ensemble" and len(finished) >= 2:
        model: nn.Module = Ensemble([rebuild(best_states[i]) for i in finished]).eval()
        delivered: dict[str, object] = {"kind": "ensemble", "runs": finished}
    else:
        model = rebuild(state)
        delivered = {"kind": "run", "runs": [int(best_run)]}
    if config.tta:
        model = DihedralTTA(model).eval()
    delivered["tta"] = bool(config.tta)
    delivered["epochs"] = int(epochs)
    delivered["balance"] = balance  # the mode used: "weights" may have become "sampler"
    if x_val is not None and not stop.is_set():
        evaluated = _evaluate(
            prepare_for_device(model, torch.device("cpu")),
            x_val,
            y_val,
            val_weights,
            torch.device("cpu"),
            contextlib.nullcontext,
            stop,
        )
        if evaluated is not None:
            delivered["val_loss"], delivered["val_accuracy"], delivered["val_balanced_accuracy"] = evaluated
    history.delivered = delivered
    result = TrainingResult(
        model=model,
        normalization=normalization,
        history=history,
        class_names=list(dataset.class_names),
        channel_names=list(dataset.channel_names),
        tile_size=tile_size,
        config=config,
        cancelled=cancelled,
        epochs=int(epochs),
    )
    if config.compare_baseline and x_val is not None and not cancelled:
        _compare_with_baseline(dataset, train_idx, val_idx, config.seed, history)
    return result


def _compare_with_baseline(dataset, train_idx, val_idx, seed, history) -> None:
    """history.baseline = baseline.compare_on_split(...) plus the CNN's own numbers, and a
    warning when the CNN's validation balanced accuracy does not beat the best classical one."""
    try:
        from .. import baseline
    except ImportError:
        return
    try:
        comparison = baseline.compare_on_split(dataset, train_idx, val_idx, seed=seed)
    except ValueError as exc:  # e.g. a class with too few tiles for the classical fit
        history.baseline = {"error": str(exc)}
        return
    comparison = dict(comparison)
    delivered = history.delivered or {}
    cnn_acc, cnn = delivered.get("val_accuracy"), delivered.get("val_balanced_accuracy")
    comparison["cnn"] = {"accuracy": cnn_acc, "balanced_accuracy": cnn}
    history.baseline = comparison
    if "skipped" in comparison or comparison.get("best") not in comparison.get("methods", {}):
        return
    comparison["sentence"] = baseline.comparison_sentence(cnn_acc, cnn, comparison)
    classical = comparison["methods"][comparison["best"]]["balanced_accuracy"]
    if cnn is not None and cnn <= classical:
        history.warnings.append(
            f"The CNN does not beat classical features on its validation split. {comparison['sentence']}"
        )


def run_training(
    dataset: TileDataset,
    config: TrainConfig,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> TrainingResult:
    """Drive `train` to the end, passing each event to on_progress; return the result."""
    return drive(train(dataset, config, stop=stop), on_progress)
