"""CLI options and messages for odd input (issue 11): --plane, which channels a model reads,
--seed, library warnings. The hostile files themselves are in test_fuzz.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile

from napari_cellclf import cli
from napari_cellclf.cli import predict
from test_fuzz import _tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("model"))


def test_plane_option_picks_one_plane_of_a_z_stack(tmp_path, model, capsys):
    stack = np.zeros((3, 48, 48), np.uint16)
    stack[1] = 900
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZYX"})
    assert cli.main(["predict", str(model), str(path)]) == 2
    assert "--plane Z=k with k in 0..2" in capsys.readouterr().err
    for z in (0, 1):
        out = tmp_path / f"z{z}.csv"
        assert cli.main(["predict", str(model), str(path), "--plane", f"Z={z}", "--out", str(out)]) == 0
        assert len(out.read_text().splitlines()) == 1 + 4
    assert out.read_text() != (tmp_path / "z0.csv").read_text()  # plane 1 is not plane 0
    assert cli.main(["predict", str(model), str(path), "--plane", "C=1"]) == 2
    assert "--plane 'C=1'" in capsys.readouterr().err


def test_a_model_reading_some_channels_of_an_image_says_which(tmp_path, model, capsys):
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, np.zeros((2, 48, 48), np.uint16), imagej=True, metadata={"axes": "CYX"})
    assert cli.main(["predict", str(model), str(path)]) == 0
    err = capsys.readouterr().err
    assert "reads channel(s) 0 (ch0) of the image's 2 (ch0, ch1)" in err and "--channels" in err
    assert cli.main(["predict", str(model), str(path), "--channels", "1"]) == 0
    assert "reads channel" not in capsys.readouterr().err  # chosen: nothing to say


@pytest.mark.parametrize("seed", ["-1", "4294967296", "99999999999999999999"])
def test_bad_seed_is_one_clear_line(tmp_path, seed, capsys):
    assert cli.main(["train", str(tmp_path), "--out", str(tmp_path / "m"), "--seed", seed]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"cellclf: error: --seed must be a whole number from 0 to 4294967295 (runs use "
        f"seed, seed+1, ...), got {seed}"
    )


def test_library_warnings_become_one_short_line(tmp_path, model, monkeypatch, capsys):
    def noisy(args):
        for _ in range(3):
            warnings.warn("overflow encountered in multiply", RuntimeWarning)
        return 0

    monkeypatch.setattr(predict, "run", noisy)
    assert cli.main(["predict", str(model), str(tmp_path / "x.tif")]) == 0
    err = capsys.readouterr().err
    assert err.count("cellclf: warning: overflow encountered in multiply") == 1
    assert "RuntimeWarning" not in err and ".py:" not in err
    assert cli.main(["predict", str(model), str(tmp_path / "x.tif")]) == 0  # a new run says it again
    assert capsys.readouterr().err.count("cellclf: warning: overflow") == 1


def test_plane_option_reaches_labelled_folders_too(tmp_path, model, capsys):
    data = tmp_path / "data"
    for name in ("Control", "Treated"):
        (data / name).mkdir(parents=True)
        tifffile.imwrite(
            data / name / "cell.tif", np.zeros((3, 24, 24), np.uint16), imagej=True, metadata={"axes": "ZYX"}
        )
    assert cli.main(["evaluate", str(model), str(data)]) == 2
    assert "--plane Z=k" in capsys.readouterr().err
    assert cli.main(["evaluate", str(model), str(data), "--plane", "Z=2", "--json"]) == 0
    assert '"n": 2' in capsys.readouterr().out
