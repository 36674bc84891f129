"""datasets.checks: the reasons a training would be refused, shared by the widget and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cellclf import datasets
from napari_cellclf.datasets import TileCounts, TileSpec


def test_channel_problems_name_both_sources_and_their_channels():
    assert datasets.channel_problems([("a", ["x", "y"]), ("b", ["p", "q"])]) == []
    [problem] = datasets.channel_problems([("a", ["x", "y"]), ("b", ["gray"])])
    assert problem.blocking
    assert "'b' has 1 channel (gray) but 'a' has 2 channels (x, y)" in problem.message


def test_training_problems_join_channels_and_tile_counts():
    counts = TileCounts([5, 0])
    messages = [
        p.message for p in datasets.training_problems(counts, ["c", "t"], [("a", ["x"]), ("b", ["x", "y"])])
    ]
    assert any("channel" in m for m in messages) and any("Only one class" in m for m in messages)


def test_the_cli_folder_loader_refuses_mixed_channels_in_the_same_words(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.zeros((32, 32), np.uint8)
    labels[:16] = 1
    labels[16:] = 2
    tifffile.imwrite(tmp_path / "a.tif", rng.random((2, 32, 32)).astype(np.float32), metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "b.tif", rng.random((32, 32)).astype(np.float32))
    for stem in ("a", "b"):
        tifffile.imwrite(tmp_path / f"{stem}_labels.tif", labels)
    layout = datasets.detect_layout(tmp_path)
    with pytest.raises(datasets.DatasetError, match=r"has 1 channel .* has 2 channels"):
        datasets.load_folder(tmp_path, layout, TileSpec(16), class_names=["c", "t"])
