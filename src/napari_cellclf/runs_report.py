"""Run-to-run variance report of a multi-run training: a table and two figures. No Qt.

    write_runs_report(history, "report/")  ->  report/runs.csv, report/runs.png, report/curves.png

- `history` is a training.History or its dict form (ModelMeta.history): one entry per run with
  seed, per-epoch curves, best_epoch (the epoch whose weights the run kept).
- runs.csv: one row per run: run (1-based), seed, best_epoch (1-based, empty if none),
  epochs_completed, val_accuracy / val_balanced_accuracy / train_accuracy at the kept epoch,
  chance (1 / classes present in validation, when known), stopped_early, memorisation (message
  or empty).
- runs.png: box plot of validation accuracy and balanced accuracy over the runs with every run
  drawn as a point, chance as a dashed line (the method's run-to-run figure).
- curves.png: every run's per-epoch training and validation accuracy.
Figures are matplotlib.figure.Figure objects rendered with the Agg canvas (no pyplot state);
`runs_figure` returns one a Qt canvas can show.
"""

from __future__ import annotations

import csv
import io as _io
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._files import atomic_write

CSV_COLUMNS = (
    "run",
    "seed",
    "best_epoch",
    "epochs_completed",
    "val_accuracy",
    "val_balanced_accuracy",
    "train_accuracy",
    "chance",
    "stopped_early",
    "memorisation",
)
TRAIN_COLOR = "#56b4e9"
VAL_COLOR = "#e69f00"
BALANCED_COLOR = "#009e73"


def _runs_of(history) -> list[dict]:
    if history is None:
        return []
    if hasattr(history, "runs"):
        return list(history.runs)
    if isinstance(history, dict):
        return list(history.get("runs", []))
    raise TypeError(f"expected a training.History or its dict form, got {type(history).__name__}")


def _at(values, index):
    if values is None or index is None or not 0 <= index < len(values):
        return None
    value = values[index]
    return None if value is None or not math.isfinite(value) else float(value)


def runs_table(history, chance: float | None = None) -> list[dict]:
    """One dict per run with the CSV_COLUMNS (values as Python numbers, None when unknown)."""
    rows = []
    for i, run in enumerate(_runs_of(history)):
        best = run.get("best_epoch", -1)
        best = best if isinstance(best, int) and best >= 0 else None
        rows.append(
            {
                "run": i + 1,
                "seed": run.get("seed"),
                "best_epoch": None if best is None else best + 1,
                "epochs_completed": run.get("epochs_completed", len(run.get("train_accuracy") or [])),
                "val_accuracy": _at(run.get("val_accuracy"), best),
                "val_balanced_accuracy": _at(run.get("val_balanced_accuracy"), best),
                "train_accuracy": _at(run.get("train_accuracy"), best),
                "chance": run.get("chance", chance),
                "stopped_early": bool(run.get("stopped_early", False)),
                "memorisation": run.get("memorisation"),
            }
        )
    return rows


def runs_csv_text(history, chance: float | None = None) -> str:
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in runs_table(history, chance):
        writer.writerow({key: _csv_value(row[key]) for key in CSV_COLUMNS})
    return buffer.getvalue()


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _chance_of(rows: list[dict], chance: float | None) -> float | None:
    if chance is not None:
        return float(chance)
    known = [row["chance"] for row in rows if row.get("chance") is not None]
    return float(known[0]) if known else None


def _style(ax, fg: str | None, bg: str | None) -> None:
    if bg is not None:
        ax.set_facecolor(bg)
    if fg is not None:
        ax.tick_params(colors=fg)
        ax.xaxis.label.set_color(fg)
        ax.yaxis.label.set_color(fg)
        ax.title.set_color(fg)
        for spine in ax.spines.values():
            spine.set_color(fg)
            spine.set_alpha(0.5)


def runs_figure(
    history, chance: float | None = None, figure: Figure | None = None, colors: tuple[str, str] | None = None
) -> Figure:
    """Box plot of the runs' validation accuracy and balanced accuracy, every run a point.

    Pass `figure` (e.g. the one behind a FigureCanvasQTAgg) to draw into it, `colors` =
    (background, text) to match a theme. Returns the figure."""
    rows = runs_table(history, chance)
    chance = _chance_of(rows, chance)
    bg, fg = colors if colors is not None else (None, None)
    if figure is None:
        figure = Figure(figsize=(4.2, 3.4), dpi=120)
        FigureCanvasAgg(figure)
    figure.clear()
    if bg is not None:
        figure.set_facecolor(bg)
    ax = figure.add_subplot(1, 1, 1)
    _style(ax, fg, bg)
    series = [
        ("validation\naccuracy", [r["val_accuracy"] for r in rows], VAL_COLOR),
        ("validation\nbalanced accuracy", [r["val_balanced_accuracy"] for r in rows], BALANCED_COLOR),
    ]
    rng = np.random.default_rng(0)  # fixed jitter: the same history draws the same plot
    for position, (_label, values, color) in enumerate(series, start=1):
        values = [v for v in values if v is not None]
        if not values:
            continue
        ax.boxplot(
            [values],
            positions=[position],
            widths=0.5,
            showfliers=False,
            medianprops={"color": fg or "black"},
            boxprops={"color": fg or "black"},
            whiskerprops={"color": fg or "black"},
            capprops={"color": fg or "black"},
        )
        x = position + rng.uniform(-0.12, 0.12, len(values))
        ax.scatter(x, values, color=color, s=22, zorder=3, edgecolors="black", linewidths=0.4)
    ax.set_xticks([1, 2], [s[0] for s in series])
    ax.set_xlim(0.4, 2.6)
    if chance is not None:
        ax.axhline(chance, color=fg or "grey", linestyle="--", linewidth=1)
        ax.text(2.58, chance, f"chance {chance:.2f}", ha="right", va="bottom", fontsize=7, color=fg or "grey")
    values = [v for _, vs, _ in series for v in vs if v is not None]
    low = min(values + ([chance] if chance is not None else [])) if values else 0.0
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_ylabel("at the kept epoch")
    ax.set_title(
        f"{len(rows)} run{'s' if len(rows) != 1 else ''} (seeds "
        f"{', '.join(str(r['seed']) for r in rows[:6])}{' ...' if len(rows) > 6 else ''})",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def curves_figure(history, chance: float | None = None) -> Figure:
    """Every run's per-epoch training accuracy and validation (plain and balanced) accuracy."""
    runs = _runs_of(history)
    chance = _chance_of(runs_table(history, chance), chance)
    figure = Figure(figsize=(6.4, 3.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True)
    for run in runs:
        for ax, key, color in (
            (axes[0], "train_accuracy", TRAIN_COLOR),
            (axes[1], "val_accuracy", VAL_COLOR),
            (axes[1], "val_balanced_accuracy", BALANCED_COLOR),
        ):
            values = run.get(key) or []
            points = [(e + 1, v) for e, v in enumerate(values) if v is not None]
            if points:
                ax.plot(*zip(*points), color=color, alpha=0.6, linewidth=1, marker=".", markersize=3)
        best = run.get("best_epoch", -1)
        value = _at(run.get("val_accuracy"), best if isinstance(best, int) else None)
        if value is not None:
            axes[1].plot(
                [best + 1],
                [value],
                marker="o",
                color=VAL_COLOR,
                markersize=5,
                markeredgecolor="black",
                linewidth=0,
            )
    axes[0].set_title("training accuracy", fontsize=9)
    axes[1].set_title("validation: accuracy (orange), balanced (green)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_ylim(-0.02, 1.02)
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
    axes[0].set_ylabel("accuracy")
    figure.suptitle(f"{len(runs)} run(s); circles: the epoch each run kept", fontsize=9)
    figure.tight_layout()
    return figure


def png_bytes(figure: Figure) -> bytes:
    buffer = _io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def write_figure(figure: Figure, path: str | Path) -> Path:
    data = png_bytes(figure)
    return atomic_write(path, lambda handle: handle.write(data))


def write_text(text: str, path: str | Path) -> Path:
    data = text.encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data))


def write_runs_report(history, out_dir: str | Path, chance: float | None = None) -> dict[str, Path]:
    """DIR/runs.csv, DIR/runs.png, DIR/curves.png (DIR is created); {"csv", "box", "curves"}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "csv": write_text(runs_csv_text(history, chance), out_dir / "runs.csv"),
        "box": write_figure(runs_figure(history, chance), out_dir / "runs.png"),
        "curves": write_figure(curves_figure(history, chance), out_dir / "curves.png"),
    }
