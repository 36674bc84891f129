"""cli/: one module per command, registered in cli.COMMANDS; the parser is built from options."""

from __future__ import annotations

import pytest

from napari_cellclf import cli, options


def test_every_registered_command_is_a_module_with_name_parser_and_run():
    names = [command.NAME for command in cli.COMMANDS]
    assert names[:5] == ["train", "evaluate", "predict", "explain", "demo"]
    assert len(set(names)) == len(names)
    for command in cli.COMMANDS:
        assert callable(command.add_parser) and callable(command.run)


def test_train_defaults_are_the_engine_defaults():
    args = cli.build_parser().parse_args(["train", "DATA", "--out", "m"])
    assert options.train_config_from(vars(args)) == options.TrainConfig()
    assert args.tile_size == options.TILE_SIZE.default


def test_usage_error_is_exit_2(capsys):
    assert cli.main(["train"]) == 2
    assert cli.main(["train", "DATA", "--out", "m", "--tile-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "cellclf: error: --tile-size 8" in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--epochs", "--arch", "--balance", "--per-tile-norm"])
def test_train_help_lists_the_config_options(flag, capsys):
    assert cli.main(["train", "--help"]) == 0
    assert flag in capsys.readouterr().out
