"""Run-to-run variance report and model provenance: N runs give N rows, plots are real PNGs,
`model_info` carries per-run memorisation and the data/split summary."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from napari_cellclf.data import TileDataset
from napari_cellclf.modelfile import load_model, save_model
from napari_cellclf.provenance import add_provenance, format_info, model_info
from napari_cellclf.runs_report import CSV_COLUMNS, runs_figure, write_runs_report
from napari_cellclf.training import History, TrainConfig, run_training

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def blob_tiles(n_per_class=24, tile=16, seed=0) -> TileDataset:
    """Dim versus bright blobs: learnable in an epoch or two."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:tile, 0:tile]
    blob = np.exp(-((yy - tile / 2) ** 2 + (xx - tile / 2) ** 2) / (2 * (tile / 5) ** 2))
    tiles = [rng.poisson(20 + (60 if k else 200) * blob)[None] for k in (0, 1) for _ in range(n_per_class)]
    n = 2 * n_per_class
    return TileDataset(
        tiles=np.stack(tiles).astype(np.float32),
        labels=np.repeat([0, 1], n_per_class),
        groups=np.arange(n) % 6,
        positions=np.zeros((n, 2), np.int64),
        class_names=["dim", "bright"],
        channel_names=["ch0"],
        sources=[f"field {g}" for g in range(6)],
    )


@pytest.fixture(scope="module")
def trained():
    dataset = blob_tiles()
    config = TrainConfig(epochs=3, architecture="fast", device="cpu", seed=5, runs=3, batch_size=16)
    return dataset, config, run_training(dataset, config)


def test_n_runs_give_n_rows_and_both_plots(trained, tmp_path):
    _, _, result = trained
    paths = write_runs_report(result.history, tmp_path / "report")
    with open(paths["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(r["run"]) for r in rows] == [1, 2, 3] and [int(r["seed"]) for r in rows] == [5, 6, 7]
    for row, run in zip(rows, result.history.runs):
        best = run["best_epoch"]
        assert int(row["best_epoch"]) == best + 1
        assert float(row["val_accuracy"]) == pytest.approx(run["val_accuracy"][best], abs=1e-5)
        assert float(row["val_balanced_accuracy"]) == pytest.approx(
            run["val_balanced_accuracy"][best], abs=1e-5
        )
        assert float(row["chance"]) == pytest.approx(0.5)
    for key in ("box", "curves"):
        assert paths[key].read_bytes().startswith(PNG_MAGIC) and paths[key].stat().st_size > 5000
    # the dict form stored in a model file gives the same table
    again = write_runs_report(result.history.to_dict(), tmp_path / "again")
    assert again["csv"].read_text() == paths["csv"].read_text()


def test_box_plot_draws_into_a_given_figure_with_one_point_per_run(trained):
    _, _, result = trained
    figure = Figure()
    assert runs_figure(result.history, figure=figure, colors=("#000000", "#ffffff")) is figure
    points = [c for c in figure.axes[0].collections if len(c.get_offsets())]
    assert sum(len(c.get_offsets()) for c in points) == 2 * 3  # accuracy and balanced, 3 runs


def test_empty_history_still_writes_files(tmp_path):
    paths = write_runs_report(History(), tmp_path)
    assert paths["csv"].read_text().strip() == ",".join(CSV_COLUMNS)
    assert paths["box"].read_bytes().startswith(PNG_MAGIC)


def test_model_file_records_data_split_runs_and_memorisation(trained, tmp_path):
    dataset, config, result = trained
    meta = add_provenance(
        result.meta(),
        dataset,
        config,
        crosstest={"names": ["a", "b"], "median_balanced_accuracy": [[1.0, 0.5], [0.6, 0.9]]},
    )
    path = save_model(tmp_path / "m.safetensors", result.model, meta)
    _, loaded = load_model(path)
    info = model_info(loaded)
    json.dumps(info)  # JSON-ready
    assert info["data"]["classes"] == {"dim": 24, "bright": 24} and info["data"]["tile_size"] == 16
    assert info["data"]["n_sources"] == 6
    split = info["split"]
    assert split["seed"] == 5 and split["n_train"] + split["n_val"] + split["dropped"] == 48
    assert sum(split["val"].values()) == split["n_val"] > 0
    assert info["seeds"] == [5, 6, 7] and len(info["runs"]) == 3
    assert info["memorisation"] == [run["memorisation"] for run in result.history.runs]
    assert info["crosstest"]["names"] == ["a", "b"]
    text = format_info(info)
    assert "run 3 (seed 7)" in text and "split (seed 5)" in text and "cross-test" in text
