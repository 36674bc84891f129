"""`cellclf demo --auto --screenshot`: the scripted demo on the bundled samples, end to end."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from skimage.io import imread


@pytest.mark.slow
def test_scripted_demo_learns_the_samples_and_saves_a_screenshot(tmp_path):
    # A process of its own, as `cellclf demo` runs: the demo ends its Qt event loop with
    # QApplication.quit(), after which no other event loop in that process runs again.
    shot = tmp_path / "demo.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_cellclf._demo",
            "--auto",
            "--screenshot",
            str(shot),
            "--epochs",
            "3",
            "--timeout",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    # whole-image labels on the two samples: each field's tiles mostly get its own class
    # (measured 93-94 % after 3 epochs)
    shares = {
        m[0]: {cls: int(pct) for pct, cls in re.findall(r"(\d+)% (\w+)", m[1])}
        for m in re.findall(r"^(\w+): \d+ tiles classified: (.*)$", out, re.MULTILINE)
    }
    assert shares["puncta"]["Aggregates"] >= 70, out
    assert shares["diffuse"]["Control"] >= 70, out
    image = imread(shot)
    assert image.shape[0] >= 600 and image.shape[1] >= 1000
    assert image[..., :3].std() > 10  # a rendered window, not a black frame


def test_demo_arguments():
    from napari_cellclf._demo import parse_args

    args = parse_args(["--screenshot", "x.png"])
    assert args.auto and args.epochs == 8
    with pytest.raises(SystemExit):
        parse_args(["--epochs", "0"])
