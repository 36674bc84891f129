"""`cellclf report`, and the CLI's metrics printouts from evaluation.py (accuracy beside balanced
accuracy and chance, the verdict, repeated when a not-better-than-chance model classifies)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import tifffile

from evaluation_support import kind_tiles, training_result
from napari_cellclf.cli import main
from napari_cellclf.modelfile import save_model


def write_folders(root: Path, kind: str, n: int, seed: int) -> Path:
    data = kind_tiles(kind, n, seed=seed)
    for i, (tile, label) in enumerate(zip(data.tiles, data.labels)):
        folder = root / data.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / f"{i:03d}.tif", tile[0].astype(np.uint16))
    return root


def saved(tmp_path: Path, kind: str) -> Path:
    result = training_result(kind)
    return save_model(tmp_path / f"{kind}.safetensors", result.model, result.meta())


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_report_command_writes_the_report(tmp_path, capsys):
    model = saved(tmp_path, "cells")
    data = write_folders(tmp_path / "data", "cells", 48, seed=11)
    status, out, err = run(capsys, "report", model, data, "--out", tmp_path / "rep", "--device", "cpu")
    assert status == 0, err
    for name in ("report.html", "metrics.json", "confusion.png", "gallery.png"):
        assert (tmp_path / "rep" / name).is_file()
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["n"] == 48 and metrics["better_than_chance"] is True
    assert "balanced accuracy" in out and "chance" in out
    HTMLParser().feed((tmp_path / "rep" / "report.html").read_text())
    status, _, err = run(capsys, "report", model, data, "--out", data / "inside", "--device", "cpu")
    assert status == 2 and "inside DATA" in err


def test_evaluate_and_predict_say_when_a_model_is_not_better_than_chance(tmp_path, capsys):
    model = saved(tmp_path, "noise")
    data = write_folders(tmp_path / "data", "noise", 64, seed=12)
    status, out, err = run(capsys, "evaluate", model, data, "--device", "cpu")
    assert status == 0, err
    assert "balanced accuracy" in out and "chance" in out
    assert "not clearly better than chance" in out.lower()
    status, out, _ = run(capsys, "evaluate", model, data, "--json", "--device", "cpu")
    report = json.loads(out)
    assert report["better_than_chance"] is False and report["verdict"]


def test_train_records_the_verdict_and_predict_repeats_it(tmp_path, capsys):
    data = write_folders(tmp_path / "data", "noise", 160, seed=13)
    model = tmp_path / "noise.safetensors"
    status, out, err = run(
        capsys,
        "train",
        data,
        "--out",
        model,
        "--tile-size",
        "32",
        "--epochs",
        "2",
        "--arch",
        "fast",
        "--device",
        "cpu",
    )
    assert status == 0, err
    assert "balanced accuracy" in out and "chance" in out
    from napari_cellclf.modelfile import read_meta

    record = read_meta(model).extra["evaluation"]
    assert record["better_than_chance"] is False and record["verdict"]
    # Its own training folder: only the validation split is scored, the same tiles as recorded.
    status, out, err = run(capsys, "evaluate", model, data, "--json", "--device", "cpu")
    assert status == 0, err
    report = json.loads(out)
    assert "validation split only" in err and report["split"] == "validation"
    assert report["n"] == record["n"] < 160 and report["confusion"] == record["confusion"]
    status, out, _ = run(capsys, "evaluate", model, data, "--json", "--all-samples", "--device", "cpu")
    assert json.loads(out)["n"] == 160
    field = tmp_path / "field.tif"
    tifffile.imwrite(field, kind_tiles("noise", 4, seed=14).tiles[:, 0].reshape(128, 32).astype(np.uint16))
    status, out, err = run(capsys, "predict", model, field, "--device", "cpu")
    assert status == 0, err
    assert err.count("not clearly better than chance") >= 1 and "do not rely" in err
