"""One training run: the epoch loop, its evaluation and the device/precision plumbing. No Qt."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..memorisation import memorisation_message
from ..model import (
    build_model,
    prepare_for_device,
)
from .augment import _augment
from .config import (
    _EVAL_BATCH,
)
from .events import (
    BatchProgress,
    EpochEnd,
    MemorisationWarning,
    RunFinished,
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
    unscaled=0,
):
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(config.architecture, in_channels, n_classes, tile_size)
    model = prepare_for_device(model, device)
    optimizer: torch.optim.Optimizer
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
            xb = _augment(xb, config, generator, unscaled)
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

        # (val_loss is None exactly when there was no validation.)
        if val_loss is None or config.select == "last":
            # The latest sane weights: without validation there is nothing else to go by, and
            # with "last" the schedule, not a noisy small validation set, decides (the cosine
            # decay ends at a learning rate of 0, where the weights have settled).
            is_best = math.isfinite(train_loss) and (val_loss is None or math.isfinite(val_loss))
            improved = val_loss is not None and math.isfinite(val_loss) and val_loss < best_loss
        else:
            is_best = improved = math.isfinite(val_loss) and val_loss < best_loss
        if improved and val_loss is not None:
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
