"""Memorisation detector: warn when what the network learns does not carry over to new tiles. No Qt.

    message = memorisation_message(train_accuracy, val_balanced_accuracy, chance, run=0, seed=0)

called after every epoch with the curves so far (lists, one value per epoch; None for an epoch
without a value). It returns None, or one plain-language message.

The rule (chance level = validation balanced accuracy at most chance + MARGIN, widened on small
validation sets to 2.5 standard deviations of a random guess's balanced accuracy):
- memorising: in each of the last MEMORISING_WINDOW (3) epochs validation was at chance level
  while training accuracy was at least GAP above validation accuracy: the network fits the
  training tiles and nothing of it holds on new ones;
- learning nothing: validation was at chance level in each of the last WINDOW (6) epochs, whatever
  training did (the regularised recipe then typically answers one class for everything).
It fires at the first epoch where either holds. Both mean the labels do not follow anything the
network can see that also holds on the validation tiles: labels shuffled or mixed up, or classes
invisible in these channels.

Why this rule (calibrated on ../shared/data/mlcp_cellcycle with the default recipe: augmentation,
label smoothing 0.1, weight decay, class-weighted loss, 20 epochs, early stopping; numbers in
benchmarks/calibrate_memorisation.py and README): with shuffled labels the regularised network
does not memorise within 20 epochs; it collapses to one answer and validation balanced accuracy
sits at exactly chance from epoch 1 (training accuracy 0.5-30 %), so the old rule (training
accuracy >= 98 % in the first 3 epochs) never fired. Without augmentation, label smoothing and
weight decay the same (7 classes: 0.143 every epoch, early stopping at epoch 7). With true labels validation balanced accuracy
was at least chance + 0.16 already at epoch 1 (7 classes) and chance + 0.25 (interphase vs
mitotic). Without augmentation a small set is memorised (64 generated tiles with random labels,
tests/test_training.py): training accuracy climbs while validation stays at chance, the first
branch. The windows are long because a
network can start slowly: on generated puncta/diffuse tiles the 9-conv net sat at chance for 4-5
epochs with true labels before it learnt. WINDOW = 6 still fires before early stopping can end a
run (epoch 6 at the earliest with a constant learning rate, epoch 10 under the cosine schedule).
"""

from __future__ import annotations

import math
from typing import Sequence

WINDOW = 6  # epochs in a row at chance level -> "learning nothing"
MEMORISING_WINDOW = 3  # epochs in a row at chance level with training far above -> "memorising"
MARGIN = 0.10  # validation balanced accuracy up to chance + MARGIN counts as chance ...
NOISE_Z = 2.5  # ... or up to 2.5 standard deviations of a guess's balanced accuracy
GAP = 0.25  # training accuracy this far above validation accuracy = memorising


def _tail(values: Sequence | None, n: int) -> list[float] | None:
    """The last n values as floats, or None when fewer than n or any of them is unknown."""
    if values is None or len(values) < n:
        return None
    tail = list(values)[-n:]
    if any(v is None or not math.isfinite(float(v)) for v in tail):
        return None
    return [float(v) for v in tail]


def memorisation_message(
    train_accuracy: Sequence,
    val_balanced_accuracy: Sequence,
    chance: float,
    *,
    run: int,
    seed: int,
    val_accuracy: Sequence | None = None,
    val_counts: Sequence[int] | None = None,
    window: int = WINDOW,
    margin: float = MARGIN,
    gap: float = GAP,
) -> str | None:
    """The warning, or None. `run` is 0-based (the message says run + 1), `chance` is 1 / the
    number of classes in the validation tiles. `val_accuracy` (plain), when given, is what
    training accuracy is compared with (plain to plain: both splits hold the classes in the same
    proportions); without it, balanced accuracy. `val_counts` (validation tiles per class), when
    given, widens the margin on small validation sets to NOISE_Z standard deviations of the
    balanced accuracy of a random guess (see guess_spread). `window` is WINDOW (the memorising branch uses
    min(MEMORISING_WINDOW, window)); window <= 0 switches the detector off."""
    if window <= 0 or chance is None:
        return None
    if val_counts is not None:
        margin = max(margin, NOISE_Z * guess_spread(val_counts))
    if chance + margin >= 1.0:
        # So few validation tiles that even 100 % is within a guess's spread: the detector cannot
        # tell, and saying "stayed at chance" of a model that got every tile right is false (seen
        # in a cross-test with 1.000 balanced accuracy). The chance verdict (evaluation) says it.
        return None
    epoch = len(val_balanced_accuracy)
    short = min(MEMORISING_WINDOW, window)
    val = _tail(val_balanced_accuracy, short)
    train = _tail(train_accuracy, short)
    if val is None or train is None or max(val) > chance + margin:
        return None
    reference = _tail(val_accuracy, short) if val_accuracy is not None else None
    reference = reference if reference is not None else val
    if min(t - v for t, v in zip(train, reference)) >= gap:
        return (
            f"{_head(run, seed, epoch, short, val, chance)} while training accuracy reached "
            f"{train[-1]:.0%}: the network is memorising the training tiles instead of learning "
            "the classes. Check the labels (mixed up or shuffled?), add more varied training "
            "data, or keep augmentation on."
        )
    val = _tail(val_balanced_accuracy, window)
    if val is None or max(val) > chance + margin:
        return None
    return (
        f"{_head(run, seed, epoch, window, val, chance)} and training accuracy is "
        f"{train[-1]:.0%}: the network is learning nothing that carries over to new tiles. "
        "Check the labels (mixed up or shuffled?) and that the classes differ visibly in the "
        "chosen channels."
    )


def guess_spread(val_counts: Sequence[int]) -> float:
    """Standard deviation of the balanced accuracy of a guess that picks one of the K present
    classes at random for each tile: recall_k ~ Binomial(n_k, 1/K) / n_k, so
    var = (1/K^2) * (1/K)(1 - 1/K) * sum_k 1/n_k. Real cells: 0.023 (2 classes, 685 validation
    tiles), 0.039 (7 classes, 3 of them with 3-14 tiles); 90 painted tiles of 2 classes: 0.053."""
    counts = [int(n) for n in val_counts if int(n) > 0]
    k = len(counts)
    if k < 2:
        return 0.0
    p = 1.0 / k
    return math.sqrt(p * (1 - p) * sum(1.0 / n for n in counts)) / k


def _head(run: int, seed: int, epoch: int, window: int, val: list[float], chance: float) -> str:
    span = f"epochs {epoch - window + 1}-{epoch}" if window > 1 else f"epoch {epoch}"
    return (
        f"run {run + 1} (seed {seed}): validation accuracy (class-balanced) stayed at chance "
        f"level in {span} ({min(val):.0%}-{max(val):.0%}, chance {chance:.0%})"
    )
