"""`cellclf demo --auto --screenshot`: the scripted demo on the bundled samples, end to end."""
from __future__ import annotations

import re

import numpy as np
import pytest


@pytest.mark.slow
def test_scripted_demo_learns_the_samples_and_saves_a_screenshot(tmp_path, qapp, capsys):
    from skimage.io import imread

    from napari_cellclf._demo import main

    shot = tmp_path / "demo.png"
    code = main(["--auto", "--screenshot", str(shot), "--epochs", "3", "--timeout", "300"])
    out = capsys.readouterr().out
    assert code == 0, out
    # whole-image labels on the two samples: each field's tiles mostly get its own class
    shares = {m[0]: {cls: int(pct) for pct, cls in re.findall(r"(\d+)% (\w+)", m[1])}
              for m in re.findall(r"^(\w+): \d+ tiles classified: (.*)$", out, re.MULTILINE)}
    assert shares["puncta"]["Aggregates"] >= 70, out
    assert shares["diffuse"]["Control"] >= 70, out
    image = imread(shot)
    assert image.shape[0] >= 600 and image.shape[1] >= 1000
    assert image[..., :3].std() > 10      # a rendered window, not a black frame


def test_demo_arguments():
    from napari_cellclf._demo import parse_args

    args = parse_args(["--screenshot", "x.png"])
    assert args.auto and args.epochs == 8
    with pytest.raises(SystemExit):
        parse_args(["--epochs", "0"])
