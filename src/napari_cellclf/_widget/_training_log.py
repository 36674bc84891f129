"""The Train panel's log in words: one line per finished run, the summary of a training, and
the epochs of a saved History rebuilt as EpochEnd events (a loaded model shows its curves). No Qt."""

from __future__ import annotations


def epochs_from_history(history) -> list:
    """EpochEnd events rebuilt from a saved History, so a loaded model shows its curves."""
    from ..training import EpochEnd

    if history is None:
        return []
    events = []
    for run, curves in enumerate(history.runs):
        train_loss = curves.get("train_loss") or []
        val_loss = curves.get("val_loss") or []
        val_acc = curves.get("val_accuracy") or []
        train_acc = curves.get("train_accuracy") or []
        for epoch, loss in enumerate(train_loss):
            train_accuracy = _at(train_acc, epoch)
            events.append(
                EpochEnd(
                    run=run,
                    epoch=epoch,
                    train_loss=float(loss),
                    train_accuracy=float("nan") if train_accuracy is None else train_accuracy,
                    val_loss=_at(val_loss, epoch),
                    val_accuracy=_at(val_acc, epoch),
                    is_best=epoch == curves.get("best_epoch"),
                    n_runs=len(history.runs),
                    n_epochs=len(train_loss),
                )
            )
    return events


def _at(values: list, epoch: int) -> float | None:
    value = values[epoch] if epoch < len(values) else None
    return None if value is None else float(value)


def run_text(event) -> str:
    acc = "n/a" if event.best_val_accuracy is None else f"{event.best_val_accuracy:.1%}"
    how = " (cancelled)" if event.cancelled else " (stopped early)" if event.stopped_early else ""
    return (
        f"Run {event.run + 1} (seed {event.seed}): best validation accuracy {acc} "
        f"at epoch {event.best_epoch + 1}{how}"
    )


def summary_text(history, cancelled: bool) -> str:
    summary = history.summary()
    prefix = "Cancelled: kept the best model so far. " if cancelled else ""
    acc = summary.get("best_val_accuracy") or {}
    if acc.get("mean") is None:
        return prefix + "Training finished (no validation tiles: accuracy unknown)."
    if summary.get("n_runs", 1) > 1:
        return (
            prefix + f"{summary['n_runs']} runs: best validation accuracy "
            f"{acc['mean']:.1%} ± {acc['std']:.1%} (min {acc['min']:.1%}, max {acc['max']:.1%}); "
            f"kept run {int(summary.get('best_run') or 0) + 1}."
        )
    return prefix + f"Best validation accuracy {acc['mean']:.1%}."
