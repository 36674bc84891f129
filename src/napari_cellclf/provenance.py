"""What a model file records about how it was made, and `model_info` to read it back. No Qt.

Written into ModelMeta.extra under named keys (PLAN.md):
- "data": data_summary(dataset): classes with tile counts, channels, tile size, number of
  sources and the first few of them, stride.
- "split": split_summary(dataset, train_idx, val_idx): train/validation tiles per class and the
  seed and fraction the split was made with (training's split_train_val is deterministic).
- "baseline" (classical comparison), "evaluation" (metrics dict) and "crosstest" (matrix) when
  they were computed, by whoever computed them.
Per-run results (seeds, curves, best epoch, memorisation) live in ModelMeta.history.

model_info(meta) gathers all of it into one JSON-ready dict (what `cellclf info MODEL --json`
prints); format_info(info) is the plain-text version.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

MAX_SOURCES_LISTED = 20


def data_summary(dataset) -> dict:
    counts = dataset.class_counts()
    sources = [str(s) for s in dataset.sources]
    return {
        "classes": {name: int(n) for name, n in counts.items()},
        "n_tiles": int(len(dataset)),
        "channels": list(dataset.channel_names),
        "tile_size": int(dataset.tile_size),
        "stride": int(dataset.stride),
        "n_sources": len(sources),
        "sources": sources[:MAX_SOURCES_LISTED],
        "sources_truncated": len(sources) > MAX_SOURCES_LISTED,
    }


def split_summary(
    dataset,
    train_idx: ArrayLike,
    val_idx: ArrayLike,
    *,
    seed: int | None = None,
    val_fraction: float | None = None,
) -> dict:
    k = len(dataset.class_names)
    labels = np.asarray(dataset.labels)
    train = np.bincount(labels[np.asarray(train_idx, dtype=np.int64)], minlength=k)
    val = np.bincount(labels[np.asarray(val_idx, dtype=np.int64)], minlength=k)
    return {
        "seed": seed,
        "val_fraction": val_fraction,
        "train": {name: int(train[i]) for i, name in enumerate(dataset.class_names)},
        "val": {name: int(val[i]) for i, name in enumerate(dataset.class_names)},
        "n_train": int(train.sum()),
        "n_val": int(val.sum()),
        "dropped": int(len(dataset) - train.sum() - val.sum()),
    }


def add_provenance(
    meta,
    dataset,
    config=None,
    *,
    baseline: dict | None = None,
    evaluation: dict | None = None,
    crosstest: dict | None = None,
):
    """Fill meta.extra["data"], ["split"] (re-made exactly as training made it, from config's
    val_fraction and seed) and the optional comparisons; returns meta."""
    from .data import split_train_val

    meta.extra["data"] = data_summary(dataset)
    if config is not None:
        train_idx, val_idx = split_train_val(dataset, config.val_fraction, seed=config.seed)
        meta.extra["split"] = split_summary(
            dataset, train_idx, val_idx, seed=int(config.seed), val_fraction=float(config.val_fraction)
        )
    for key, value in (("baseline", baseline), ("evaluation", evaluation), ("crosstest", crosstest)):
        if value is not None:
            meta.extra[key] = value
    return meta


def _clean(value):
    """JSON-ready: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def model_info(meta) -> dict:
    """Everything the file says about the model, JSON-ready. "memorisation": one entry per run,
    None or the detector's message."""
    from .runs_report import runs_table

    history = meta.history or {}
    runs = list(history.get("runs", []))
    extra = dict(meta.extra or {})
    info = {
        "classes": list(meta.class_names),
        "channels": list(meta.channel_names),
        "channel_indices": meta.channel_indices,
        "tile_size": int(meta.tile_size),
        "architecture": meta.architecture,
        "n_members": int(getattr(meta, "n_members", 1) or 1),
        "normalization": meta.normalization.get("mode") if isinstance(meta.normalization, dict) else None,
        "seed": meta.seed,
        "package_version": meta.package_version,
        "format_version": meta.format_version,
        "data": extra.get("data"),
        "split": extra.get("split"),
        "train_config": extra.get("train_config"),
        "seeds": [run.get("seed") for run in runs],
        "runs": runs_table(history),
        "summary": history.get("summary"),
        "memorisation": [run.get("memorisation") for run in runs],
        "warnings": list(history.get("warnings", [])),
        "baseline": extra.get("baseline"),
        "evaluation": extra.get("evaluation"),
        "crosstest": extra.get("crosstest"),
    }
    if getattr(meta, "pixel_size", None) is not None:
        info["pixel_size"] = meta.pixel_size
    return _clean(info)


def _percent(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_info(info: dict) -> str:
    """model_info as a few readable lines."""
    lines = [
        f"classes: {', '.join(info['classes'])}",
        f"channels: {', '.join(info['channels'])}; tile {info['tile_size']} px; "
        f"architecture {info['architecture']}"
        + (f" x{info['n_members']} (ensemble)" if info.get("n_members", 1) > 1 else ""),
    ]
    data = info.get("data")
    if data:
        lines.append(
            "data: "
            + ", ".join(f"{k} {n}" for k, n in data["classes"].items())
            + f" ({data['n_tiles']} tiles from {data['n_sources']} source(s))"
        )
    split = info.get("split")
    if split:
        lines.append(
            "split (seed {}): train ".format(split.get("seed"))
            + ", ".join(f"{k} {n}" for k, n in split["train"].items())
            + "; validation "
            + ", ".join(f"{k} {n}" for k, n in split["val"].items())
        )
    for row in info.get("runs", []):
        line = (
            f"run {row['run']} (seed {row['seed']}): best epoch {row['best_epoch'] or '-'}, "
            f"validation accuracy {_percent(row['val_accuracy'])}, balanced "
            f"{_percent(row['val_balanced_accuracy'])}"
        )
        if row.get("chance") is not None:
            line += f" (chance {row['chance']:.3f})"
        lines.append(line)
        if row.get("memorisation"):
            lines.append(f"  memorisation: {row['memorisation']}")
    summary = (info.get("summary") or {}).get("best_val_accuracy") or {}
    if summary.get("mean") is not None and len(info.get("runs", [])) > 1:
        lines.append(
            f"validation accuracy over runs: mean {summary['mean']:.3f}, sd "
            f"{summary['std']:.3f}, range {summary['min']:.3f}-{summary['max']:.3f}"
        )
    baseline = info.get("baseline")
    if isinstance(baseline, dict) and baseline.get("best"):
        lines.append(f"classical baseline: best {baseline['best']}")
    crosstest = info.get("crosstest")
    if isinstance(crosstest, dict) and crosstest.get("names"):
        lines.append(
            "cross-test (median balanced accuracy, rows trained on, columns tested on "
            + ", ".join(crosstest["names"])
            + "):"
        )
        for name, row in zip(crosstest["names"], crosstest.get("median_balanced_accuracy", [])):
            lines.append(f"  {name}: " + " ".join(_percent(v) for v in row))
    for warning in info.get("warnings", []):
        if warning not in [r.get("memorisation") for r in info.get("runs", [])]:
            lines.append(f"warning: {warning}")
    return "\n".join(lines)
