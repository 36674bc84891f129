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

The package, one module a seam:
- config.py   `TrainConfig`, the modes, `check_config` and the epoch budget (`epochs_for`);
- events.py   the progress events, `History` and `TrainingResult`;
- fit.py      `train` (split, normalisation, the runs, combining them, the baseline) and
              `run_training`;
- loop.py     one run: the epoch loop and its evaluation;
- augment.py  the batch augmentation.
"""

from .augment import _augment, _random_dihedral, _rotate
from .config import (
    BALANCE_MODES,
    COMBINE_MODES,
    EPOCHS_AUTO,
    LR_SCHEDULES,
    MAX_AUTO_EPOCHS,
    MAX_CLASS_WEIGHT_RATIO,
    MAX_STEPS,
    MIN_STEPS,
    SELECT_MODES,
    TrainConfig,
    check_config,
    epochs_for,
)
from .events import (
    BatchProgress,
    EpochEnd,
    History,
    MemorisationWarning,
    Progress,
    RunFinished,
    TrainingResult,
)
from .fit import run_training, train

__all__ = [
    "BALANCE_MODES",
    "COMBINE_MODES",
    "EPOCHS_AUTO",
    "LR_SCHEDULES",
    "MAX_AUTO_EPOCHS",
    "MAX_CLASS_WEIGHT_RATIO",
    "MAX_STEPS",
    "MIN_STEPS",
    "SELECT_MODES",
    "BatchProgress",
    "EpochEnd",
    "History",
    "MemorisationWarning",
    "Progress",
    "RunFinished",
    "TrainConfig",
    "TrainingResult",
    "_augment",
    "_random_dihedral",
    "_rotate",
    "check_config",
    "epochs_for",
    "run_training",
    "train",
]
