"""`cellclf train --runs N --report DIR`, `cellclf info MODEL [--json]`, `cellclf crosstest`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import tifffile

from napari_cellclf.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_folders(root: Path, seed: int, gain: float = 1.0, n: int = 16) -> Path:
    """Class folders of 16 px two-channel crops: dim vs bright blobs (learnable at once)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:16]
    blob = np.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 18.0)
    for name, level in (("dim", 60), ("bright", 200)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            image = np.stack([rng.poisson(gain * (20 + level * blob)), rng.poisson(20 + 0 * blob)])
            tifffile.imwrite(
                root / name / f"{i:02d}.tif",
                image.astype(np.uint16),
                imagej=True,
                metadata={"axes": "CYX", "Labels": ["signal", "other"]},
            )
    return root


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


FAST = ["--tile-size", 16, "--arch", "fast", "--epochs", 2, "--device", "cpu", "--batch-size", 8]


def test_train_with_runs_and_report_then_info(tmp_path, capsys):
    data = write_folders(tmp_path / "data", 0)
    model = tmp_path / "m.safetensors"
    status, out, err = run(
        capsys, "train", data, "--out", model, "--runs", 3, "--report", tmp_path / "report", *FAST
    )
    assert status == 0, err
    with open(tmp_path / "report" / "runs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["seed"] for r in rows] == ["0", "1", "2"]
    assert {"run", "seed", "best_epoch", "val_accuracy", "val_balanced_accuracy"} <= set(rows[0])
    for name in ("runs.png", "curves.png"):
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG_MAGIC)

    status, out, err = run(capsys, "info", model, "--json")
    assert status == 0, err
    info = json.loads(out)
    assert info["memorisation"] == [None, None, None] or len(info["memorisation"]) == 3
    assert info["data"]["classes"] == {"bright": 16, "dim": 16}
    assert info["split"]["n_val"] > 0 and info["seeds"] == [0, 1, 2]
    status, out, err = run(capsys, "info", model)
    assert status == 0 and "run 3 (seed 2)" in out and "split (seed 0)" in out


def test_crosstest_writes_the_matrix_and_notes_channel_subsets(tmp_path, capsys):
    a = write_folders(tmp_path / "a", 1)
    b = write_folders(tmp_path / "b", 2, gain=3.0)
    status, out, err = run(
        capsys, "crosstest", a, b, f"{b}:signal", "--out", tmp_path / "x", "--channels", "signal", *FAST
    )
    assert status == 0, err
    with open(tmp_path / "x" / "crosstest.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {"train", "test", "run", "accuracy", "balanced_accuracy"} <= set(rows[0])
    assert len(rows) == 9 and {r["train"] for r in rows} == {"a", "b", "b:signal"}
    assert (tmp_path / "x" / "crosstest.png").read_bytes().startswith(PNG_MAGIC)
    assert "median balanced accuracy" in out
    assert "training 3/3: on b:signal, run 1/1" in out


def test_crosstest_needs_two_datasets_and_info_a_model(tmp_path, capsys):
    a = write_folders(tmp_path / "a", 1, n=3)
    status, out, err = run(capsys, "crosstest", a, "--out", tmp_path / "x", *FAST)
    assert status == 2 and "at least two" in err
    status, out, err = run(capsys, "info", tmp_path / "none.safetensors")
    assert status == 2 and "no such model file" in err


def write_stacks(root: Path, seed: int, n: int = 16) -> Path:
    """Class folders of 3-plane Z stacks (ImageJ ZCYX): the classes differ only in plane 2;
    planes 0 and 1 are the same background noise for both."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:16]
    blob = np.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 18.0)
    for name, level in (("dim", 20), ("bright", 200)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            planes = [rng.poisson(20 + 0 * blob), rng.poisson(20 + 0 * blob), rng.poisson(20 + level * blob)]
            stack = np.stack(planes)[:, None].astype(np.uint16)  # Z, C, Y, X
            tifffile.imwrite(root / name / f"{i:02d}.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    return root


def test_crosstest_reads_data_as_train_does_plane_chosen_by_option(tmp_path, capsys):
    """crosstest reads DATA through the same options and reader as train (it used to load folders
    its own way and had no --plane): a Z stack needs --plane, and the plane chosen is the one
    trained and tested on (the classes differ only in plane 2)."""
    a, b = write_stacks(tmp_path / "a", 1), write_stacks(tmp_path / "b", 2)
    status, out, err = run(capsys, "crosstest", a, b, "--out", tmp_path / "x", *FAST)
    assert status == 2 and "--plane Z=k" in err and len(err.strip().splitlines()) == 1

    def balanced(plane: int) -> list[float]:
        folder = tmp_path / f"z{plane}"
        status, out, err = run(
            capsys, "crosstest", a, b, "--out", folder, "--plane", f"Z={plane}", *FAST, "--epochs", 6
        )
        assert status == 0, err
        with open(folder / "crosstest.csv") as handle:
            return [float(r["balanced_accuracy"]) for r in csv.DictReader(handle) if r["train"] != r["test"]]

    assert min(balanced(2)) >= 0.9  # trained on a, tested on all of b, and back
    assert max(balanced(0)) <= 0.75  # the same folders, the plane without the phenotype
