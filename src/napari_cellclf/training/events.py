"""The typed progress events a training yields, its History and its result. No Qt."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Union

import numpy as np
from torch import nn

from ..data import (
    Normalization,
)
from .config import (
    TrainConfig,
)


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
            stats: dict[str, float | None] = {
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
        from .. import __version__
        from ..model import unwrap
        from ..modelfile import ModelMeta, default_class_colors

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
