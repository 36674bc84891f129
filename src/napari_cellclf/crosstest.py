"""Cross-dataset generalisation: train on each dataset, test on every other one. No Qt.

    results = crosstest({"A": dataset_a, "B": dataset_b}, TrainConfig(...), runs=3)
    write_crosstest(results, "out/")   ->  out/crosstest.csv, out/crosstest.png

- For each training dataset and run r (seed = config.seed + r, one model per run) the model is
  tested on its own held-out validation split (the split training made, test = "<name>" with
  split "held-out") and on the whole of every other dataset (split "all": none of it was seen).
- Classes are matched by name. Tiles of a class the trained model does not know cannot be scored;
  they are left out of that test and the result says so in `notes` (and the CSV's `missing`
  column). A class the model knows but the test dataset lacks is noted too (balanced accuracy and
  chance are then over the classes the test data holds).
- Metrics per (train, test, run): accuracy, balanced accuracy and chance (1 / classes present in
  the test tiles), from evaluation.classification_metrics.
- crosstest.png: the matrix of median balanced accuracy over runs (rows = trained on, columns =
  tested on), colour scale from chance to 1, each cell also showing the median accuracy.
All datasets need the same channels (count) and tile size -> ValueError otherwise.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._generators import drive
from .data import TileDataset, split_train_val
from .evaluation import classification_metrics
from .runs_report import write_figure, write_text

CSV_COLUMNS = (
    "train",
    "test",
    "run",
    "seed",
    "split",
    "n",
    "accuracy",
    "balanced_accuracy",
    "chance",
    "missing",
)


@dataclass
class CrosstestStep:
    """Yielded before each training: which dataset, which run (1-based) of how many."""

    train: str
    run: int
    n_runs: int
    index: int  # 1-based count of trainings so far
    n_trainings: int


@dataclass
class CrosstestResults:
    names: list[str]  # datasets, in the order given
    rows: list[dict] = field(default_factory=list)  # one per (train, test, run): CSV_COLUMNS
    notes: list[str] = field(default_factory=list)  # classes missing on either side, in words
    cancelled: bool = False

    def matrix(self, metric: str = "balanced_accuracy") -> np.ndarray:
        """(n, n) medians over runs; rows = trained on, columns = tested on; NaN when untested."""
        out = np.full((len(self.names), len(self.names)), np.nan)
        for i, train in enumerate(self.names):
            for j, test in enumerate(self.names):
                values = [
                    r[metric]
                    for r in self.rows
                    if r["train"] == train and r["test"] == test and r[metric] is not None
                ]
                if values:
                    out[i, j] = float(np.median(values))
        return out

    def chance(self) -> float | None:
        values = [r["chance"] for r in self.rows if r["chance"] is not None]
        return float(min(values)) if values else None

    def to_dict(self) -> dict:
        """JSON-ready, for ModelMeta.extra["crosstest"]."""

        def plain(matrix):
            return [[None if np.isnan(v) else float(v) for v in row] for row in matrix]

        return {
            "names": list(self.names),
            "rows": [dict(r) for r in self.rows],
            "notes": list(self.notes),
            "cancelled": self.cancelled,
            "median_balanced_accuracy": plain(self.matrix("balanced_accuracy")),
            "median_accuracy": plain(self.matrix("accuracy")),
            "chance": self.chance(),
        }


def _check(datasets: dict[str, TileDataset]) -> None:
    if len(datasets) < 2:
        raise ValueError(f"a cross-test needs at least two datasets, got {len(datasets)}")
    names = list(datasets)
    first = datasets[names[0]]
    for name in names[1:]:
        other = datasets[name]
        if len(other.channel_names) != len(first.channel_names):
            raise ValueError(
                f"dataset {name!r} has {len(other.channel_names)} channel(s) "
                f"({', '.join(other.channel_names)}) but {names[0]!r} has "
                f"{len(first.channel_names)} ({', '.join(first.channel_names)})"
            )
        if other.tile_size != first.tile_size:
            raise ValueError(
                f"dataset {name!r} has {other.tile_size} px tiles but {names[0]!r} has {first.tile_size} px"
            )


def _metrics(truth: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> dict:
    if len(truth) == 0:
        return {"accuracy": None, "balanced_accuracy": None, "chance": None}
    m = classification_metrics(truth, predicted, class_names)
    return {"accuracy": m.accuracy, "balanced_accuracy": m.balanced_accuracy, "chance": m.chance}


def _relabel(test: TileDataset, class_names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(mask of scorable tiles, their labels in the model's class order, unknown class names)."""
    to_model = np.array(
        [class_names.index(n) if n in class_names else -1 for n in test.class_names], dtype=np.int64
    )
    mapped = to_model[test.labels] if len(test.labels) else np.zeros(0, np.int64)
    counts = test.class_counts()
    unknown = [n for n in test.class_names if n not in class_names and counts[n] > 0]
    return mapped >= 0, mapped[mapped >= 0], unknown


def crosstest_steps(
    datasets: dict[str, TileDataset], config, runs: int = 1, stop: threading.Event | None = None
):
    """Generator: yields a CrosstestStep before each training, then that training's progress
    events; returns CrosstestResults. `crosstest` drives it."""
    from .inference import Classifier
    from .training import check_config, train

    _check(datasets)
    check_config(config)
    if isinstance(runs, bool) or int(runs) != runs or runs < 1:
        raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
    stop = stop if stop is not None else threading.Event()
    names = list(datasets)
    results = CrosstestResults(names=names)
    for train_name in names:
        source = datasets[train_name]
        known = [n for n, c in source.class_counts().items() if c > 0]
        for test_name in names:
            if test_name == train_name:
                continue
            test_counts = datasets[test_name].class_counts()
            lacking = [n for n in known if test_counts.get(n, 0) == 0]
            extra = [
                f"{n} ({test_counts[n]})"
                for n in datasets[test_name].class_names
                if n not in known and test_counts[n] > 0
            ]
            if extra:
                results.notes.append(
                    f"{test_name} has tiles of class(es) {', '.join(extra)} that "
                    f"{train_name} has none of: left out of {train_name} -> "
                    f"{test_name}"
                )
            if lacking:
                results.notes.append(
                    f"{test_name} has no tiles of class(es) "
                    f"{', '.join(lacking)} (known from {train_name}): "
                    f"{train_name} -> {test_name} is scored on the other classes"
                )
    for train_name in names:
        source = datasets[train_name]
        for run in range(int(runs)):
            seed = int(config.seed) + run
            run_config = dataclasses.replace(config, seed=seed, runs=1)
            yield CrosstestStep(
                train=train_name,
                run=run + 1,
                n_runs=int(runs),
                index=names.index(train_name) * int(runs) + run + 1,
                n_trainings=len(names) * int(runs),
            )
            result = yield from train(source, run_config, stop=stop)
            if result.cancelled:
                results.cancelled = True
                return results
            classifier = Classifier(result.model, result.meta(), device=config.device)
            _, val_idx = split_train_val(source, config.val_fraction, seed=seed)
            for test_name in names:
                if test_name == train_name:
                    test, split = source.subset(val_idx), "held-out"
                else:
                    test, split = datasets[test_name], "all"
                scorable, truth, unknown = _relabel(test, list(result.class_names))
                tiles = test.tiles[scorable]
                predicted = classifier.predict_tiles(tiles).argmax(1) if len(tiles) else np.zeros(0, np.int64)
                metrics = _metrics(truth, predicted, list(result.class_names))
                results.rows.append(
                    {
                        "train": train_name,
                        "test": test_name,
                        "run": run + 1,
                        "seed": seed,
                        "split": split,
                        "n": int(len(truth)),
                        **metrics,
                        "missing": ";".join(unknown),
                    }
                )
    return results


def crosstest(
    datasets: dict[str, TileDataset],
    config,
    runs: int = 1,
    on_progress: Callable | None = None,
    stop: threading.Event | None = None,
) -> CrosstestResults:
    """Train `runs` models on each dataset and test each on every dataset (see module doc)."""
    return drive(crosstest_steps(datasets, config, runs=runs, stop=stop), on_progress)


def crosstest_csv_text(results: CrosstestResults) -> str:
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in results.rows:
        writer.writerow(
            {
                k: (
                    "" if row.get(k) is None else f"{row[k]:.6g}" if isinstance(row.get(k), float) else row[k]
                )
                for k in CSV_COLUMNS
            }
        )
    return buffer.getvalue()


def crosstest_figure(results: CrosstestResults) -> Figure:
    """Median balanced accuracy matrix (colour from chance to 1), median accuracy in small print."""
    balanced, plain = results.matrix("balanced_accuracy"), results.matrix("accuracy")
    chance = results.chance()
    low = chance if chance is not None else 0.0
    n = len(results.names)
    size = 1.6 + 1.1 * n
    # Room for the row names beside the matrix ("mlcp_cellcycle:brightfield" was cut off).
    names_width = 0.075 * max((len(str(name)) for name in results.names), default=0)
    figure = Figure(figsize=(size + 1.2 + names_width, size + names_width / 2), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    image = ax.imshow(np.where(np.isnan(balanced), low, balanced), cmap="viridis", vmin=low, vmax=1.0)
    for i in range(n):
        for j in range(n):
            if np.isnan(balanced[i, j]):
                ax.text(j, i, "-", ha="center", va="center", color="white")
                continue
            shade = (balanced[i, j] - low) / max(1e-9, 1.0 - low)
            color = "black" if shade > 0.6 else "white"
            ax.text(
                j,
                i,
                f"{balanced[i, j]:.2f}",
                ha="center",
                va="center",
                color=color,
                fontsize=11,
                fontweight="bold",
            )
            if not np.isnan(plain[i, j]):
                ax.text(
                    j, i + 0.28, f"acc {plain[i, j]:.2f}", ha="center", va="center", color=color, fontsize=7
                )
    ax.set_xticks(range(n), results.names, rotation=30, ha="right")
    ax.set_yticks(range(n), results.names)
    ax.set_xlabel("tested on (diagonal: own held-out split)")
    ax.set_ylabel("trained on")
    runs = max((r["run"] for r in results.rows), default=0)
    ax.set_title(f"median balanced accuracy over {runs} run(s)", fontsize=9)
    bar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(f"balanced accuracy (chance {low:.2f} .. 1)" if chance is not None else "balanced accuracy")
    figure.tight_layout()
    return figure


def write_crosstest(results: CrosstestResults, out_dir: str | Path) -> dict[str, Path]:
    """DIR/crosstest.csv and DIR/crosstest.png (DIR is created); {"csv", "png"}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "csv": write_text(crosstest_csv_text(results), out_dir / "crosstest.csv"),
        "png": write_figure(crosstest_figure(results), out_dir / "crosstest.png"),
    }
