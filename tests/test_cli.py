"""The `cellclf` command line, end to end on small synthetic data.

One model is trained (module fixture) on 32 px tiles cut from synthetic puncta/diffuse fields and
reused by evaluate/predict/explain; bad input must end as one `cellclf: error:` line, exit 2.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_cellclf
from napari_cellclf import synthetic
from napari_cellclf.cli import main
from napari_cellclf.io import read_image
from napari_cellclf.modelfile import load_model

TILE = 32
FIELD = (256, 256)
CELL_RADIUS = 9.0
PIXEL_SIZE = 0.5
# Synthetic label values (1 Control, 2 Aggregates) -> class folder names.
CLASS_OF_VALUE = {1: "Control", 2: "Aggregates"}


def write_cyx(path: Path, image: np.ndarray, pixel_size: float | None = None) -> Path:
    kwargs = {}
    if pixel_size:
        kwargs = {"resolution": (1 / pixel_size, 1 / pixel_size)}
    tifffile.imwrite(
        path,
        image,
        imagej=True,
        metadata={"axes": "CYX" if image.ndim == 3 else "YX", **({"unit": "um"} if pixel_size else {})},
        **kwargs,
    )
    return path


def cell_tiles(field: synthetic.SyntheticField, min_cover: float = 0.25):
    """(crop, class name) for each grid tile mostly covered by cells of one phenotype."""
    h, w = field.labels.shape
    for y in range(0, h - TILE + 1, TILE):
        for x in range(0, w - TILE + 1, TILE):
            labels = field.labels[y : y + TILE, x : x + TILE]
            counts = np.bincount(labels.ravel(), minlength=3)
            if counts[1:].sum() < min_cover * TILE * TILE:
                continue
            yield field.image[:, y : y + TILE, x : x + TILE], CLASS_OF_VALUE[int(counts[1:].argmax()) + 1]


def write_class_folders(root: Path, seeds, classes=("Control", "Aggregates")) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for phenotype in ("puncta", "diffuse"):
            field = synthetic.make_field(phenotype, shape=FIELD, seed=seed, cell_radius=CELL_RADIUS)
            for n, (crop, name) in enumerate(cell_tiles(field)):
                if name in classes:
                    write_cyx(root / name / f"{phenotype}{seed}_{n:03d}.tif", crop)
    return root


def run(capsys, *argv):
    """main() in process -> (exit status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("cellclf: error:")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def train_dir(workdir) -> Path:
    return write_class_folders(workdir / "train", seeds=(1, 2))


@pytest.fixture(scope="module")
def trained(workdir, train_dir):
    """Train once with the CLI (2 runs, fast net): (model path, stdout)."""
    out = workdir / "model"  # the suffix is added by the engine
    # capsys is function-scoped, so a module fixture captures by hand.
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(
            [
                "train",
                str(train_dir),
                "--out",
                str(out),
                "--tile-size",
                str(TILE),
                "--arch",
                "fast",
                "--epochs",
                "8",
                "--runs",
                "2",
                "--seed",
                "3",
                "--lr",
                "3e-3",
                "--batch-size",
                "32",
                "--device",
                "cpu",
            ]
        )
    assert status == 0, stderr.getvalue()
    return out.with_suffix(".safetensors"), stdout.getvalue()


def test_train_reports_epochs_runs_and_saves_a_loadable_model(trained, train_dir):
    path, out = trained
    assert path.is_file()
    model, meta = load_model(path)
    assert sorted(meta.class_names) == ["Aggregates", "Control"]
    assert meta.tile_size == TILE and meta.in_channels == 2 and meta.architecture == "fast"
    assert meta.channel_indices == [0, 1]
    assert "class folders" in out  # the detected layout is said
    epoch_lines = [line for line in out.splitlines() if "epoch" in line and "train loss" in line]
    assert len(epoch_lines) >= 2 * 2  # two runs, at least 2 epochs each
    assert all("val loss" in line for line in epoch_lines)
    assert "over 2 runs" in out and "±" in out  # the multi-run summary
    assert "(seed 3)" in out and "(seed 4)" in out
    assert f"model saved to {path}" in out


@pytest.fixture(scope="module")
def test_dir(workdir) -> Path:
    return write_class_folders(workdir / "test", seeds=(7,))


def test_evaluate_json_is_one_object_with_consistent_counts(trained, test_dir, capsys):
    path, _ = trained
    status, out, err = run(capsys, "evaluate", path, test_dir, "--json", "--device", "cpu")
    assert status == 0, err
    report = json.loads(out)  # the whole of stdout is one object
    n_files = sum(len(list((test_dir / c).glob("*.tif"))) for c in ("Aggregates", "Control"))
    assert report["n"] == n_files
    confusion = np.array(report["confusion"])
    assert confusion.shape == (2, 2) and confusion.sum() == report["n"]
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / report["n"])
    assert report["accuracy"] > 0.8
    for i, name in enumerate(report["classes"]):
        row = report["per_class"][name]
        assert row["recall"] == pytest.approx(confusion[i, i] / confusion[i].sum())
        assert row["precision"] == pytest.approx(confusion[i, i] / confusion[:, i].sum())


def test_evaluate_on_part_of_the_classes(trained, workdir, capsys):
    path, _ = trained
    only = write_class_folders(workdir / "only_aggregates", seeds=(8,), classes=("Aggregates",))
    status, out, err = run(capsys, "evaluate", path, only, "--device", "cpu")
    assert status == 0, err
    assert "accuracy" in out and "confusion matrix" in out
    status, out, err = run(capsys, "evaluate", path, only, "--json", "--device", "cpu")
    report = json.loads(out)
    control = report["classes"].index("Control")
    aggregates = report["classes"].index("Aggregates")
    confusion = np.array(report["confusion"])
    assert confusion[control].sum() == 0  # no Control samples in DATA
    assert report["per_class"]["Control"]["recall"] is None
    assert confusion[aggregates].sum() == report["n"] > 0
    assert report["accuracy"] > 0.7


def test_evaluate_label_image_layout(trained, workdir, capsys):
    """<stem>.tif + <stem>_labels.tif; label value k is the model's class k."""
    path, _ = trained
    _, meta = load_model(path)
    root = workdir / "labelled"
    root.mkdir()
    for seed, phenotype in ((9, "puncta"), (9, "diffuse")):
        field = synthetic.make_field(phenotype, shape=FIELD, seed=seed, cell_radius=CELL_RADIUS)
        value = {v: meta.class_names.index(name) + 1 for v, name in CLASS_OF_VALUE.items()}
        labels = np.zeros(field.labels.shape, np.uint8)
        for v, k in value.items():
            labels[field.labels == v] = k
        write_cyx(root / f"{phenotype}.tif", field.image)
        tifffile.imwrite(root / f"{phenotype}_labels.tif", labels)
    status, out, err = run(capsys, "evaluate", path, root, "--json", "--device", "cpu")
    assert status == 0, err
    assert "label images" in err
    report = json.loads(out)
    assert report["n"] > 20 and report["accuracy"] > 0.75


def test_predict_writes_one_row_per_tile_and_finds_the_phenotypes(trained, workdir, capsys):
    path, _ = trained
    fields = {}
    for phenotype in ("puncta", "diffuse"):
        fields[phenotype] = synthetic.make_field(phenotype, shape=FIELD, seed=11, cell_radius=CELL_RADIUS)
        write_cyx(workdir / f"{phenotype}_field.tif", fields[phenotype].image)
    csv_path = workdir / "predictions.csv"
    status, out, err = run(
        capsys,
        "predict",
        path,
        workdir / "puncta_field.tif",
        workdir / "diffuse_field.tif",
        "--out",
        csv_path,
        "--device",
        "cpu",
    )
    assert status == 0, err
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    tiles_per_field = (FIELD[0] // TILE) * (FIELD[1] // TILE)
    assert len(rows) == 2 * tiles_per_field
    assert {r["source"] for r in rows} == {"puncta_field.tif", "diffuse_field.tif"}
    for phenotype, field in fields.items():
        summary = next(line for line in out.splitlines() if f"{phenotype}_field.tif" in line)
        assert f"{tiles_per_field} tiles" in summary
        # Tiles mostly covered by cells of one phenotype should get that class.
        right = total = 0
        for r in (r for r in rows if r["source"] == f"{phenotype}_field.tif"):
            y, x = int(r["y"]), int(r["x"])
            labels = field.labels[y : y + TILE, x : x + TILE]
            counts = np.bincount(labels.ravel(), minlength=3)
            if counts[1:].sum() >= 0.4 * TILE * TILE:
                total += 1
                right += r["class_name"] == CLASS_OF_VALUE[int(counts[1:].argmax()) + 1]
        assert total >= 10 and right / total > 0.75, (phenotype, right, total)


def test_explain_writes_a_calibrated_map_brightest_on_cells(trained, workdir, capsys):
    path, _ = trained
    field = synthetic.make_field("puncta", shape=FIELD, seed=12, cell_radius=CELL_RADIUS)
    image = write_cyx(workdir / "explain_in.tif", field.image, pixel_size=PIXEL_SIZE)
    out_tif = workdir / "explain_out.tif"
    status, out, err = run(
        capsys, "explain", path, image, "--out", out_tif, "--target", "Aggregates", "--device", "cpu"
    )
    assert status == 0, err
    with tifffile.TiffFile(out_tif) as tif:
        assert tif.is_imagej
        attributions = tif.asarray()
        x_resolution = tif.pages[0].tags["XResolution"].value
    assert attributions.dtype == np.float32 and attributions.shape == FIELD
    assert np.isfinite(attributions).all() and attributions.std() > 0
    assert x_resolution[0] / x_resolution[1] == pytest.approx(1 / PIXEL_SIZE)
    reread = read_image(out_tif)  # calibration survives the round trip
    assert reread.pixel_size == pytest.approx((PIXEL_SIZE, PIXEL_SIZE))
    assert reread.unit in ("µm", "micron", "um")
    # Gradient x input is near zero where there is nothing to see.
    on_cells = np.abs(attributions[field.cells > 0]).mean()
    background = np.abs(attributions[field.cells == 0]).mean()
    assert on_cells > 2 * background
    assert not list(workdir.glob(".explain_out.tif.*"))  # no temporary file left behind


def test_train_on_label_images_with_named_classes_and_a_channel_by_name(workdir, capsys):
    """<stem>.tif + <stem>_labels.tif, --classes names the values, --channels picks by name;
    predict then finds that channel by name in a two-channel field."""
    root = workdir / "label_layout"
    root.mkdir()
    for seed, phenotype in ((1, "puncta"), (2, "diffuse")):
        field = synthetic.make_field(phenotype, shape=(128, 128), seed=seed, cell_radius=CELL_RADIUS)
        write_cyx(root / f"{phenotype}.tif", field.image)
        tifffile.imwrite(root / f"{phenotype}_labels.tif", field.labels)  # 1 Control, 2 Aggregates
    status, out, err = run(
        capsys,
        "train",
        root,
        "--out",
        workdir / "labels_model",
        "--tile-size",
        TILE,
        "--classes",
        "Control,Aggregates",
        "--channels",
        "ch1",
        "--arch",
        "fast",
        "--epochs",
        "2",
        "--device",
        "cpu",
    )
    assert status == 0, err
    assert "label images" in out
    _, meta = load_model(workdir / "labels_model.safetensors")
    assert meta.class_names == ["Control", "Aggregates"]
    assert meta.channel_names == ["ch1"] and meta.channel_indices == [1]
    status, out, err = run(
        capsys, "predict", workdir / "labels_model.safetensors", root / "puncta.tif", "--device", "cpu"
    )
    assert status == 0, err
    assert f"{(128 // TILE) ** 2} tiles" in out


def test_version_and_demo_delegation(capsys):
    status, out, _ = run(capsys, "--version")
    assert status == 0 and out.strip() == f"cellclf {napari_cellclf.__version__}"
    status, out, _ = run(capsys, "demo", "--help")  # the demo's own options
    assert status == 0 and "--auto" in out and "--screenshot" in out


# --------------------------------------------------------------------------------------------
# bad input: one line, exit 2


def test_unknown_class(trained, workdir, capsys):
    path, _ = trained
    root = write_class_folders(workdir / "unknown", seeds=(13,), classes=("Aggregates",))
    (root / "Mystery").mkdir()
    next((root / "Aggregates").glob("*.tif")).rename(root / "Mystery" / "x.tif")
    status, _, err = run(capsys, "evaluate", path, root)
    assert_one_line_error(status, err, "unknown class 'Mystery'", "Aggregates", "Control")


def test_channel_mismatch(trained, workdir, capsys):
    path, _ = trained
    single = write_cyx(workdir / "one_channel.tif", np.ones((64, 64), np.uint16))
    status, _, err = run(capsys, "predict", path, single)
    assert_one_line_error(status, err, "one_channel.tif", "expects 2")


def test_empty_folder(workdir, capsys):
    (workdir / "empty").mkdir()
    status, _, err = run(capsys, "train", workdir / "empty", "--out", workdir / "m")
    assert_one_line_error(status, err, "empty folder")


def test_one_class_only(workdir, capsys):
    root = write_class_folders(workdir / "one_class", seeds=(14,), classes=("Control",))
    status, _, err = run(capsys, "train", root, "--out", workdir / "m1", "--tile-size", TILE, "--epochs", "1")
    assert_one_line_error(status, err)
    assert not (workdir / "m1.safetensors").exists()


def test_unreadable_image(trained, workdir, capsys):
    path, _ = trained
    broken = workdir / "broken.tif"
    broken.write_bytes(np.random.default_rng(0).bytes(4096))
    status, _, err = run(capsys, "predict", path, broken)
    assert_one_line_error(status, err, "broken.tif")


def test_pickle_is_not_a_model(workdir, test_dir, capsys):
    fake = workdir / "pickled.safetensors"
    fake.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    status, _, err = run(capsys, "evaluate", fake, test_dir)
    assert_one_line_error(status, err, "pickled.safetensors")


def test_missing_files_and_bad_target(trained, workdir, capsys):
    path, _ = trained
    status, _, err = run(capsys, "predict", path, workdir / "nope.tif")
    assert_one_line_error(status, err, "nope.tif")
    status, _, err = run(
        capsys,
        "explain",
        path,
        workdir / "puncta_field.tif",
        "--out",
        workdir / "x.tif",
        "--target",
        "Nothing",
    )
    assert_one_line_error(status, err, "Nothing")


# --------------------------------------------------------------------------------------------
# the installed console script


def test_console_script_ctrl_c_saves_the_best_model(train_dir, workdir):
    """The `cellclf` entry point; SIGINT mid-training stops, saves the best so far, exits 130."""
    script = Path(sys.executable).parent / ("cellclf.exe" if os.name == "nt" else "cellclf")
    if not script.exists() or os.name == "nt":
        pytest.skip("console script not installed here (or no SIGINT on this platform)")
    out = workdir / "interrupted.safetensors"
    process = subprocess.Popen(
        [
            str(script),
            "train",
            str(train_dir),
            "--out",
            str(out),
            "--tile-size",
            str(TILE),
            "--arch",
            "fast",
            "--epochs",
            "1000",
            "--patience",
            "0",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "train loss" in line:  # one epoch done: interrupt
                process.send_signal(signal.SIGINT)
                break
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "best model so far saved" in stdout
    _, meta = load_model(out)
    assert meta.tile_size == TILE
    assert sum(len(run["train_loss"]) for run in meta.history["runs"]) < 1000
