"""options.py: settings described once, defaults read from the engine, argparse built from them."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from napari_cellclf import channels, model, options, training
from napari_cellclf.training import TrainConfig


def test_every_trainconfig_field_has_an_option_with_the_engine_default():
    by_name = {o.name: o for o in options.train_options()}
    for f in dataclasses.fields(TrainConfig):
        assert by_name[f.name].default == getattr(TrainConfig(), f.name)
    # The CNNs, and "features" (classical features, no CNN: baseline.train_features).
    assert by_name["architecture"].choices == (*model.ARCHITECTURES, "features")
    assert by_name["balance"].choices == tuple(training.BALANCE_MODES)


def test_argparse_round_trip_gives_the_default_config_and_reads_flags():
    parser = argparse.ArgumentParser()
    options.add_train_arguments(parser)
    assert options.train_config_from(vars(parser.parse_args([]))) == TrainConfig()
    config = options.train_config_from(
        vars(parser.parse_args(["--epochs", "3", "--no-augment", "--per-tile-norm", "--arch", "fast"]))
    )
    assert (config.epochs, config.augment, config.normalization, config.architecture) == (
        3,
        False,
        "per_tile",
        "fast",
    )


def test_a_new_trainconfig_field_gets_an_option_by_itself(monkeypatch):
    @dataclasses.dataclass
    class Extended(TrainConfig):
        warmup_epochs: int = 2
        schedule_points: list = dataclasses.field(default_factory=list)  # not a CLI value

    monkeypatch.setattr(options, "TrainConfig", Extended)
    parser = argparse.ArgumentParser()
    options.add_train_arguments(parser)
    args = parser.parse_args(["--warmup-epochs", "5"])
    assert args.warmup_epochs == 5 and not hasattr(args, "schedule_points")


def test_tile_size_rule():
    assert options.check_tile_size(32) == 32
    with pytest.raises(ValueError, match=str(model.MIN_TILE_SIZE)):
        options.check_tile_size(model.MIN_TILE_SIZE - 1)
    with pytest.raises(ValueError):
        options.check_tile_size(20.5)


def test_channel_rule():
    names = ["DNA", "actin"]
    assert channels.resolve_channels(names, None) == [0, 1]
    assert channels.resolve_channels(names, ["actin", 0]) == [1, 0]
    assert channels.resolve_channels(names, ["dna", "1"]) == [0, 1]
    with pytest.raises(ValueError, match="DNA"):
        channels.resolve_channels(names, ["tubulin"])
    assert channels.model_channel_indices(["actin"], [0], names) == [1]
