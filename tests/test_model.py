"""The CNNs: shapes for every tile size and channel count, argument checks, FLOP count, devices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_cellclf.model import ARCHITECTURES, build_model, choose_device, forward_flops, prepare_for_device


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("tile_size", [16, 24, 40, 64, 100])
@pytest.mark.parametrize("channels", [1, 3])
def test_logits_shape_for_any_tile_size_and_channel_count(architecture, tile_size, channels):
    torch.manual_seed(0)
    model = build_model(architecture, channels, 4, tile_size)
    logits = model(torch.randn(2, channels, tile_size, tile_size))
    assert logits.shape == (2, 4)
    assert torch.isfinite(logits).all()
    # Logits, not probabilities: rows are not constrained to sum to 1.
    assert not torch.allclose(logits.sum(1), torch.ones(2))


def test_original_keeps_the_method_layout():
    model = build_model("original", 2, 3, 40)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 16, 32, 32, 32, 64, 64, 64]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    dense = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert dense == [512, 50, 3]


def test_large_tiles_keep_the_dense_head_small():
    small = sum(p.numel() for p in build_model("original", 1, 2, 64).parameters())
    large = sum(p.numel() for p in build_model("original", 1, 2, 256).parameters())
    assert small == large  # the adaptive pool fixes the head's input, whatever the tile


def test_fast_is_much_cheaper_than_original():
    original = forward_flops(build_model("original", 2, 2, 40), 2, 40)
    fast = forward_flops(build_model("fast", 2, 2, 40), 2, 40)
    assert fast < original / 4


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(architecture="resnet", in_channels=1, n_classes=2, tile_size=32), "architecture"),
        (dict(architecture="original", in_channels=1, n_classes=2, tile_size=8), "tile_size"),
        (dict(architecture="fast", in_channels=1, n_classes=2, tile_size=15), "tile_size"),
        (dict(architecture="fast", in_channels=0, n_classes=2, tile_size=16), "in_channels"),
        (dict(architecture="fast", in_channels=1, n_classes=1, tile_size=16), "n_classes"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_parameter(kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_model(**kwargs)


def test_forward_flops_matches_a_hand_count():
    # fast, 1 channel, 16 px: conv 1->16 at 16x16, pool, 16->32 at 8x8, pool, 32->64 at 4x4, pool
    # to 2x2 (below the 3x3 head grid, so no adaptive pool), dense 256->64, 64->2.
    hand_mac = 16 * 16 * 16 * 1 * 9 + 8 * 8 * 32 * 16 * 9 + 4 * 4 * 64 * 32 * 9 + 64 * 2 * 2 * 64 + 64 * 2
    model = build_model("fast", 1, 2, 16)
    assert forward_flops(model, 1, 16) == 2 * hand_mac
    # FLOPs grow with the area for the convolutions: a 3-channel 40 px original is tens of MFLOPs.
    assert 40e6 < forward_flops(build_model("original", 3, 2, 40), 3, 40) < 80e6


def test_choose_device():
    assert choose_device("cpu") == torch.device("cpu")
    auto = choose_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            choose_device("cuda")
        with pytest.raises(ValueError, match="CUDA"):
            choose_device("gpu")
    with pytest.raises(ValueError, match="quantum"):
        choose_device("quantum")


def test_prepare_for_device_uses_channels_last_and_keeps_outputs():
    torch.manual_seed(1)
    model = build_model("original", 3, 2, 24).eval()
    x = torch.randn(4, 3, 24, 24)
    before = model(x)
    prepared = prepare_for_device(model, torch.device("cpu"))
    conv = next(m for m in prepared.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not prepared.training
    torch.testing.assert_close(
        prepared(x.contiguous(memory_format=torch.channels_last)), before, rtol=1e-4, atol=1e-5
    )


def test_the_stand_alone_model_file_agrees_with_tilings_tile_limit():
    """model.py keeps its own MIN_TILE_SIZE (it ships without the package in bioimage.io
    exports); the rule tile sizes are checked by is tiling's, and the two must not drift."""
    from napari_cellclf import model, tiling

    assert model.MIN_TILE_SIZE == tiling.MIN_TILE_SIZE
