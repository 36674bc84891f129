"""Training as a generator of typed progress events. No Qt.

CONTRACT (stub by the lead; the training owner implements it):
    gen = train(dataset, TrainConfig(...), stop=threading.Event())
    for event in gen: ...            # BatchProgress / EpochEnd / MemorisationWarning / RunFinished
    result = <the generator's return value>  (StopIteration.value; napari's thread_worker
             delivers it through `returned`; `run_training()` below does the loop for scripts)
- `stop.set()` from any thread ends training within one batch; the result then holds the best
  model seen so far (cancelled=True). Never raise on cancel.
- Several runs (`runs=N`) use seeds seed, seed+1, ...; the returned model is the best run's (by
  validation accuracy, then loss); `History` keeps every run's curves and a summary (mean, std,
  min, max of best validation accuracy) because accuracy varies run to run.
- Memorisation: training accuracy >= 0.98 within the first `memorisation_epochs` epochs while
  validation accuracy <= chance + 0.15 -> MemorisationWarning event and a note in History.
- With seed set and device cpu, two runs give bit-identical weights.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Generator, Union

from torch import nn

from .data import Normalization, TileDataset


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    architecture: str = "original"
    augment: bool = True              # 90° rotations + flips (always valid for micrographs)
    rotate_degrees: float = 0.0       # extra small arbitrary rotations (0 = off)
    balance: str = "weights"          # "weights" (class-weighted loss) | "sampler" | "none"
    val_fraction: float = 0.2
    patience: int = 5                 # early stopping on validation loss; 0 = off
    seed: int = 0
    runs: int = 1
    device: str = "auto"
    normalization: str = "dataset"    # "dataset" | "per_tile"
    memorisation_epochs: int = 3


@dataclass
class BatchProgress:
    run: int            # 0-based
    epoch: int          # 0-based
    batch: int          # 0-based, within the epoch
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
    val_loss: float | None        # None when there is no validation set
    val_accuracy: float | None
    is_best: bool
    n_runs: int = 1
    n_epochs: int = 1


@dataclass
class MemorisationWarning:
    run: int
    epoch: int
    message: str


@dataclass
class RunFinished:
    run: int
    seed: int
    best_epoch: int
    best_val_accuracy: float | None
    stopped_early: bool
    cancelled: bool


Progress = Union[BatchProgress, EpochEnd, MemorisationWarning, RunFinished]


@dataclass
class History:
    runs: list[dict] = field(default_factory=list)   # per run: seed, train_loss[], train_accuracy[], val_loss[], val_accuracy[], best_epoch, memorisation
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """{"n_runs", "best_val_accuracy": {"mean", "std", "min", "max"}, "best_run"}."""
        raise NotImplementedError

    def to_dict(self) -> dict: ...

    @classmethod
    def from_dict(cls, d: dict) -> "History": ...


@dataclass
class TrainingResult:
    model: nn.Module                  # best model, eval mode, on CPU
    normalization: Normalization
    history: History
    class_names: list[str]
    channel_names: list[str]
    tile_size: int
    config: TrainConfig
    cancelled: bool = False

    def meta(self, class_colors: list[str] | None = None, channel_indices: list[int] | None = None):
        """modelfile.ModelMeta ready for save_model."""
        raise NotImplementedError


def train(dataset: TileDataset, config: TrainConfig, stop: threading.Event | None = None
          ) -> Generator[Progress, None, TrainingResult]:
    """Validates the dataset first (data.check_trainable -> ValueError before any work)."""
    raise NotImplementedError


def run_training(dataset: TileDataset, config: TrainConfig,
                 on_progress: Callable[[Progress], None] | None = None,
                 stop: threading.Event | None = None) -> TrainingResult:
    """Drive `train` to the end, passing each event to on_progress; return the result."""
    raise NotImplementedError
