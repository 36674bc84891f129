"""Training as a generator of typed progress events. No Qt.

    gen = train(dataset, TrainConfig(...), stop=threading.Event())
    for event in gen: ...            # BatchProgress / EpochEnd / MemorisationWarning / RunFinished
    result = <the generator's return value>  (StopIteration.value; napari's thread_worker
             delivers it through `returned`; `run_training()` below does the loop for scripts)
- `stop.set()` from any thread ends training within one batch; the result then holds the best
  model seen so far (cancelled=True). Never raise on cancel.
- Several runs (`runs=N`) use seeds seed, seed+1, ...; all share one train/validation split (made
  with `seed`) so their validation accuracies compare like for like; they differ in initial
  weights, batch order and augmentation. The delivered model is their Ensemble (mean
  probability; combine="ensemble", the default) or the best run's (combine="best": highest
  validation accuracy, then loss). `History` keeps every run's curves and a summary (mean, std,
  min, max of validation accuracy) because accuracy varies run to run, and in `delivered` what
  was handed back with its own validation scores. tta=True wraps it in model.DihedralTTA.
- Budget: epochs=0 ("auto", the default) trains EPOCHS_AUTO epochs but at least MIN_STEPS and at most
  MAX_STEPS optimiser steps (`epochs_for`): 100 cells get ~100 epochs, 100,000 cells 4.
- Within a run the kept weights are the last epoch's (select="last", default): the cosine
  schedule ends at a learning rate of 0, and a small validation split is too noisy to pick an
  epoch by. select="best" keeps the epoch with the lowest validation loss (class-balanced like
  the training loss unless balance="none"). Early stopping (patience > 0, off by default) watches
  the same loss (with the cosine schedule, only in its second half).
- Memorisation (memorisation.py): validation balanced accuracy at chance level for
  `memorisation_epochs` epochs in a row (0 = off) -> MemorisationWarning event, a note in History
  and the message in history.runs[i]["memorisation"].
- Default recipe: the "batchnorm" network, AdamW (weight decay 0.05), cosine learning-rate decay
  over the run, label smoothing 0.1, batch 32, dihedral augmentation; lr_schedule="constant",
  weight_decay=0, label_smoothing=0 give plain Adam. balance="weights" (default) counts every
  class equally, right for painted labels whose ratio is arbitrary (class-weighted loss; when the
  classes differ more than MAX_CLASS_WEIGHT_RATIO-fold, balanced batches instead, as "sampler";
  history.delivered["balance"] says which); balance="none" maximises accuracy when the labels
  follow the true ratio.
- compare_baseline (default on): at the end, baseline.compare_on_split fits classical features
  on the same split; History.baseline holds it beside the CNN's numbers, and a warning says so
  when the CNN's validation balanced accuracy does not beat the best classical method.
- With seed set and device cpu, two runs give bit-identical weights: every random draw comes from
  one seeded torch.Generator; the global RNG is only borrowed (forked) for weight initialisation
  (so no layer may draw from it while training: the networks have no dropout).
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Callable, Generator, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._generators import drive
from .baseline import FEATURES_ARCHITECTURE
from .data import (
    NORMALIZATION_MODES,  # noqa: I001  (defined once, in data.py)
    Normalization,
    TileDataset,
    check_trainable,
    fit_normalization,
    split_train_val,
)
from .memorisation import WINDOW as MEMORISATION_WINDOW
from .memorisation import memorisation_message
from .model import (
    ARCHITECTURES,
    MIN_TILE_SIZE,
    DihedralTTA,
    Ensemble,
    build_model,
    choose_device,
    prepare_for_device,
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


@dataclass
class BatchProgress:
    run: int  # 0-based
    epoch: int  # 0-based
    batch: int  # 0-based, within the epoch
    n_batches: int
    loss: float
    n_runs: int = 1
    n_epochs: int = 1


@dataclass
class EpochEnd:
    run: int
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None  # None when there is no validation set
    val_accuracy: float | None
    is_best: bool
    n_runs: int = 1
    n_epochs: int = 1
    val_balanced_accuracy: float | None = None  # beside plain accuracy wherever it is shown


@dataclass
class MemorisationWarning:
    run: int
    epoch: int
    message: str


@dataclass
class RunFinished:
    run: int
    seed: int
    best_epoch: int  # -1 when cancelled before the first epoch ended
    best_val_accuracy: float | None
    stopped_early: bool
    cancelled: bool


Progress = Union[BatchProgress, EpochEnd, MemorisationWarning, RunFinished]


@dataclass
class History:
    # per run: seed, train_loss[], train_accuracy[], val_loss[], val_accuracy[],
    # val_balanced_accuracy[], best_epoch, best_val_accuracy, best_val_loss, epochs_completed,
    # stopped_early, cancelled, memorisation (message or None)
    runs: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The model handed back: {"kind": "run"|"ensemble", "runs": [...], "tta", "epochs",
    # "val_loss", "val_accuracy", "val_balanced_accuracy"} (validation numbers when there is one).
    delivered: dict = field(default_factory=dict)
    # baseline.compare_on_split on the same split, plus "cnn"; {} when not computed.
    baseline: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """{"n_runs", "best_val_accuracy": {"mean", "std", "min", "max"}, "best_run"}.
        std is the sample standard deviation (0.0 for a single run); all None without validation."""
        accuracies = [
            run["best_val_accuracy"] for run in self.runs if run.get("best_val_accuracy") is not None
        ]
        if accuracies:
            values = np.asarray(accuracies, dtype=float)
            stats = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "min": float(values.min()),
                "max": float(values.max()),
            }
        else:
            stats = {"mean": None, "std": None, "min": None, "max": None}
        return {"n_runs": len(self.runs), "best_val_accuracy": stats, "best_run": _best_run(self.runs)}

    def to_dict(self) -> dict:
        d = {"runs": copy.deepcopy(self.runs), "warnings": list(self.warnings), "summary": self.summary()}
        if self.delivered:
            d["delivered"] = copy.deepcopy(self.delivered)
        if self.baseline:
            d["baseline"] = copy.deepcopy(self.baseline)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        d = d or {}
        return cls(
            runs=copy.deepcopy(list(d.get("runs", []))),
            warnings=list(d.get("warnings", [])),
            delivered=copy.deepcopy(dict(d.get("delivered") or {})),
            baseline=copy.deepcopy(dict(d.get("baseline") or {})),
        )


def _best_run(runs: list[dict]) -> int | None:
    """Highest best validation accuracy, then lowest validation loss; without validation the
    lowest final training loss. Runs that never finished an epoch only when nothing else exists."""

    def key(item):
        _, run = item
        accuracy, loss = run.get("best_val_accuracy"), run.get("best_val_loss")
        train_loss = run.get("train_loss") or [math.inf]
        return (
            run.get("epochs_completed", 0) > 0,
            accuracy if accuracy is not None else -1.0,
            -(loss if loss is not None and math.isfinite(loss) else math.inf),
            -(train_loss[-1] if train_loss[-1] is not None else math.inf),
        )

    if not runs:
        return None
    return max(enumerate(runs), key=key)[0]


@dataclass
class TrainingResult:
    model: nn.Module  # best model, eval mode, on CPU
    normalization: Normalization
    history: History
    class_names: list[str]
    channel_names: list[str]
    tile_size: int
    config: TrainConfig
    cancelled: bool = False
    epochs: int | None = None  # epochs each run was planned for (config.epochs resolved)

    def meta(self, class_colors: list[str] | None = None, channel_indices: list[int] | None = None):
        """modelfile.ModelMeta ready for save_model."""
        from . import __version__
        from .model import unwrap
        from .modelfile import ModelMeta, default_class_colors

        inner, tta = unwrap(self.model)
        members = getattr(inner, "members", None)

        return ModelMeta(
            class_names=list(self.class_names),
            class_colors=list(class_colors)
            if class_colors is not None
            else default_class_colors(len(self.class_names)),
            channel_names=list(self.channel_names),
            tile_size=int(self.tile_size),
            architecture=self.config.architecture,
            normalization=self.normalization.to_dict(),
            channel_indices=None if channel_indices is None else [int(i) for i in channel_indices],
            history=self.history.to_dict(),
            seed=int(self.config.seed),
            package_version=__version__,
            extra={
                "train_config": asdict(self.config),
                "cancelled": self.cancelled,
                "tta": tta,
                "epochs": self.epochs,
                **({"baseline": copy.deepcopy(self.history.baseline)} if self.history.baseline else {}),
            },
            n_members=len(members) if members is not None else 1,
        )


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
        from .baseline import train_features

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
    normalization = fit_normalization(dataset.tiles[train_idx], mode=config.normalization)
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
        if x_val is not None:
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
    last_model = None
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
        delivered = {"kind": "ensemble", "runs": finished}
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


def epochs_for(config: TrainConfig, n_train: int) -> int:
    """The number of epochs a run trains: config.epochs, or for 0 / "auto" EPOCHS_AUTO epochs kept
    between MIN_STEPS and MAX_STEPS optimiser steps (and 2..MAX_AUTO_EPOCHS epochs)."""
    if config.epochs not in (0, "auto"):
        return int(config.epochs)
    steps_per_epoch = max(1, math.ceil(n_train / config.batch_size))
    steps = min(max(EPOCHS_AUTO * steps_per_epoch, MIN_STEPS), MAX_STEPS)
    return int(min(max(math.ceil(steps / steps_per_epoch), 2), MAX_AUTO_EPOCHS))


def _compare_with_baseline(dataset, train_idx, val_idx, seed, history) -> None:
    """history.baseline = baseline.compare_on_split(...) plus the CNN's own numbers, and a
    warning when the CNN's validation balanced accuracy does not beat the best classical one."""
    try:
        from . import baseline
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


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of the weights on the CPU, in the default (contiguous) layout."""
    return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()}


def _autocast_setup(device: torch.device):
    """bf16 autocast where the GPU supports it (no loss scaling needed), else fp16 + GradScaler."""
    if device.type != "cuda":
        return contextlib.nullcontext, torch.amp.GradScaler("cuda", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return (lambda: torch.autocast(device_type="cuda", dtype=dtype)), scaler


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        if not x.is_pinned():
            x = x.pin_memory()
        return x.to(device, non_blocking=True)
    return x.to(device)


def _train_one_run(
    *,
    run,
    seed,
    config,
    epochs,
    device,
    n_classes,
    tile_size,
    in_channels,
    x_train,
    y_train,
    x_val,
    y_val,
    loss_weights,
    val_weights,
    balanced_batches,
    stop,
    history,
):
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(config.architecture, in_channels, n_classes, tile_size)
    model = prepare_for_device(model, device)
    if config.weight_decay > 0:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    autocast, scaler = _autocast_setup(device)
    criterion = nn.CrossEntropyLoss(
        weight=None if loss_weights is None else loss_weights.to(device),
        label_smoothing=float(config.label_smoothing),
    )
    sample_weights = None
    if balanced_batches:
        counts = torch.bincount(y_train, minlength=n_classes).clamp(min=1).double()
        sample_weights = 1.0 / counts[y_train]

    record = {
        "seed": seed,
        "train_loss": [],
        "train_accuracy": [],
        "val_loss": [],
        "val_accuracy": [],
        "val_balanced_accuracy": [],
        "best_epoch": -1,
        "best_val_accuracy": None,
        "best_val_loss": None,
        "epochs_completed": 0,
        "stopped_early": False,
        "cancelled": False,
        "memorisation": None,
        "epochs_planned": int(epochs),
    }
    history.runs.append(record)
    n_train = len(y_train)
    n_batches = math.ceil(n_train / config.batch_size)
    total_steps = epochs * n_batches
    best_state, best_loss, since_best = None, math.inf, 0
    cancelled = stopped_early = False
    common = dict(n_runs=config.runs, n_epochs=epochs)

    for epoch in range(epochs):
        model.train()
        if sample_weights is not None:
            order = torch.multinomial(sample_weights, n_train, replacement=True, generator=generator)
        else:
            order = torch.randperm(n_train, generator=generator)
        loss_sum, correct = 0.0, 0
        for batch in range(n_batches):
            if stop.is_set():
                cancelled = True
                break
            idx = order[batch * config.batch_size : (batch + 1) * config.batch_size]
            xb = _to_device(x_train.index_select(0, idx), device)
            yb = _to_device(y_train.index_select(0, idx), device)
            xb = _augment(xb, config, generator)
            xb = xb.contiguous(memory_format=torch.channels_last)
            if config.lr_schedule == "cosine":
                step = epoch * n_batches + batch
                for group in optimizer.param_groups:
                    group["lr"] = config.learning_rate * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            with autocast():
                logits = model(xb)
            loss = criterion(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            batch_loss = float(loss.detach())
            loss_sum += batch_loss * len(idx)
            correct += int((logits.detach().argmax(1) == yb).sum())
            yield BatchProgress(
                run=run, epoch=epoch, batch=batch, n_batches=n_batches, loss=batch_loss, **common
            )
        if cancelled:
            break

        train_loss, train_accuracy = loss_sum / n_train, correct / n_train
        val = None
        if x_val is not None:
            val = _evaluate(model, x_val, y_val, val_weights, device, autocast, stop)
            if val is None:  # cancelled during validation: the epoch did not end
                cancelled = True
                break
        val_loss, val_accuracy, val_balanced = val if val is not None else (None, None, None)

        if val is None or config.select == "last":
            # The latest sane weights: without validation there is nothing else to go by, and
            # with "last" the schedule, not a noisy small validation set, decides (the cosine
            # decay ends at a learning rate of 0, where the weights have settled).
            is_best = math.isfinite(train_loss) and (val is None or math.isfinite(val_loss))
            improved = val is not None and math.isfinite(val_loss) and val_loss < best_loss
        else:
            is_best = improved = math.isfinite(val_loss) and val_loss < best_loss
        if improved:
            best_loss = val_loss
        if is_best:
            best_state = _cpu_state(model)
            record["best_epoch"] = epoch
            if val is not None:
                record["best_val_loss"], record["best_val_accuracy"] = val_loss, val_accuracy
        since_best = 0 if improved else since_best + 1
        for key, value in (
            ("train_loss", train_loss),
            ("train_accuracy", train_accuracy),
            ("val_loss", val_loss),
            ("val_accuracy", val_accuracy),
            ("val_balanced_accuracy", val_balanced),
        ):
            record[key].append(_finite_or_none(value))
        record["epochs_completed"] = epoch + 1
        yield EpochEnd(
            run=run,
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            is_best=is_best,
            val_balanced_accuracy=val_balanced,
            **common,
        )

        if val is not None and record["memorisation"] is None:
            val_counts = torch.bincount(y_val, minlength=n_classes).tolist()
            record["chance"] = 1.0 / sum(n > 0 for n in val_counts)
            message = memorisation_message(
                record["train_accuracy"],
                record["val_balanced_accuracy"],
                record["chance"],
                run=run,
                seed=seed,
                val_accuracy=record["val_accuracy"],
                val_counts=val_counts,
                window=config.memorisation_epochs,
            )
            if message is not None:
                record["memorisation"] = message
                history.warnings.append(message)
                yield MemorisationWarning(run=run, epoch=epoch, message=message)

        if not math.isfinite(train_loss):
            history.warnings.append(
                f"run {run + 1} (seed {seed}): the training loss became "
                f"{train_loss} at epoch {epoch + 1}; stopped. Lower the learning rate."
            )
            break
        # Under a cosine schedule the first half runs at a high, noisy learning rate and the gains
        # come late: early stopping then cut real-cell runs at epoch 7 of 20 (0.908 accuracy
        # instead of 0.93), so it only watches the second half.
        warming = config.lr_schedule == "cosine" and epoch + 1 < epochs // 2
        if val is not None and config.patience and since_best >= config.patience and not warming:
            stopped_early = True
            break

    record["stopped_early"], record["cancelled"] = stopped_early, cancelled
    yield RunFinished(
        run=run,
        seed=seed,
        best_epoch=record["best_epoch"],
        best_val_accuracy=record["best_val_accuracy"],
        stopped_early=stopped_early,
        cancelled=cancelled,
    )
    return {"best_state": best_state, "model": model, "cancelled": cancelled}


def _finite_or_none(value):
    return None if value is None or not math.isfinite(value) else float(value)


@torch.inference_mode()
def _evaluate(model, x, y, class_weights, device, autocast, stop):
    """(class-weighted loss, accuracy, balanced accuracy) on a held-out set; None if stopped."""
    model.eval()
    n_classes = len(class_weights)
    weights = class_weights.to(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    weight_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)
    for start in range(0, len(y), _EVAL_BATCH):
        if stop.is_set():
            return None
        xb = _to_device(x[start : start + _EVAL_BATCH], device).contiguous(memory_format=torch.channels_last)
        yb = _to_device(y[start : start + _EVAL_BATCH], device)
        with autocast():
            logits = model(xb)
        losses = F.cross_entropy(logits.float(), yb, reduction="none")
        loss_sum += (losses * weights[yb]).sum().double()
        weight_sum += weights[yb].sum().double()
        confusion += torch.bincount(yb * n_classes + logits.argmax(1), minlength=n_classes**2).view(
            n_classes, n_classes
        )
    confusion = confusion.cpu()
    per_class_total = confusion.sum(1)
    present = per_class_total > 0
    recall = confusion.diag()[present].double() / per_class_total[present].double()
    loss = float(loss_sum / weight_sum) if float(weight_sum) > 0 else math.nan
    return loss, float(confusion.diag().sum()) / len(y), float(recall.mean())


def _augment(xb: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """The training augmentation of one batch; every draw comes from `generator` (on the CPU)."""
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


def run_training(
    dataset: TileDataset,
    config: TrainConfig,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> TrainingResult:
    """Drive `train` to the end, passing each event to on_progress; return the result."""
    return drive(train(dataset, config, stop=stop), on_progress)
