"""The settings users can change, described once; argparse and the widget's controls are built
from these descriptions. No Qt.

- `train_options()`: one `Option` per field of `training.TrainConfig`, the one home of training
  defaults. Defaults (and the list of fields) are *read* from the dataclass, never copied: a new
  TrainConfig field gets a `--field-name` option by itself; only its help text is written here.
- Modes the engine needs are defined at the lowest layer that needs them (`model.ARCHITECTURES`,
  `training.BALANCE_MODES`, `data.NORMALIZATION_MODES`, `data.FOLDER_MODES`); this module refers
  to them, so the choices shown in `--help` and in the widget are the ones the engine accepts.
- `TILE_SIZE`, `STRIDE`, `MIN_FRACTION`, `FOLDER_MODE`: the tiling settings shared by the CLI and
  the widget; `check_tile_size` is the faces' tile-size rule.

Reading a config back: `train_config_from(values)` takes a mapping field -> value (argparse's
namespace via `vars(args)`, the widget's settings) and fills what is missing from the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from . import baseline, data, model, objects, tiling, training
from .data import FOLDER_MODES, NORMALIZATION_MODES, FolderMode, NormalizationMode  # noqa: F401
from .training import TrainConfig

__all__ = [
    "Option",
    "train_options",
    "train_option",
    "train_default",
    "train_config_from",
    "add_train_arguments",
    "option_of_config_field",
    "check_tile_size",
    "TILE_SIZE",
    "STRIDE",
    "MIN_FRACTION",
    "FOLDER_MODE",
    "BLANK_BACKGROUND",
    "MASK_CHANNEL",
    "FolderMode",
    "NormalizationMode",
]

_MISSING = object()


@dataclass(frozen=True)
class Option:
    """One user-facing setting: where it goes (`name`, a TrainConfig field or a tiling setting),
    its default, its choices, what it means (`help`, `label` for a form), how it is spelt on the
    command line (`flag`). `switch`: the option is a bare flag that sets the value `switch`
    (e.g. --per-tile-norm sets normalization="per_tile", --no-augment sets augment=False)."""

    name: str
    default: Any
    help: str
    flag: str
    label: str = ""
    choices: tuple | None = None
    type: Callable | None = None
    metavar: str | None = None
    switch: Any = _MISSING
    minimum: float | None = None
    maximum: float | None = None

    @property
    def is_switch(self) -> bool:
        return self.switch is not _MISSING

    @property
    def on_command_line(self) -> bool:
        return self.default is None or isinstance(self.default, (bool, int, float, str))

    def add_to(self, parser: argparse.ArgumentParser, default: Any = _MISSING) -> None:
        """Add this option to an argparse parser (its dest is `name`)."""
        default = self.default if default is _MISSING else default
        if self.is_switch:
            parser.add_argument(
                self.flag,
                dest=self.name,
                action="store_const",
                const=self.switch,
                default=default,
                help=self.help,
            )
            return
        shown = "" if default is None else f" (default {default})"
        kwargs: dict[str, Any] = {"dest": self.name, "default": default, "help": self.help + shown}
        if self.choices is not None:
            kwargs["choices"] = self.choices
        elif isinstance(self.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = self.type
            kwargs["metavar"] = self.metavar
        parser.add_argument(self.flag, **kwargs)


# -- training ----------------------------------------------------------------------------------
# Per TrainConfig field: the words (flag, help, label). Defaults and choices are not written here.
_TRAIN_TEXT: dict[str, dict[str, Any]] = {
    "epochs": dict(
        flag="--epochs",
        label="Epochs",
        metavar="N",
        help="passes over the training tiles (0 = auto: 15, kept within 300-10,000 steps)",
    ),
    "batch_size": dict(flag="--batch-size", label="Batch size", metavar="N", help="tiles per step"),
    "learning_rate": dict(flag="--lr", label="Learning rate", metavar="F", help="learning rate"),
    "architecture": dict(
        flag="--arch",
        label="Network",
        help="the CNN: batchnorm (Conv-BatchNorm blocks), original (the method's network), fast (smaller); "
        "features: no CNN, classical features with logistic regression or random forest (seconds to "
        "train, no attributions)",
    ),
    "augment": dict(
        flag="--no-augment",
        label="Rotations and flips",
        switch=False,
        help="no 90-degree rotations and flips during training",
    ),
    "rotate_degrees": dict(
        flag="--rotate",
        label="Extra rotation",
        metavar="DEG",
        help="extra random rotations up to DEG degrees (0 = off)",
    ),
    "balance": dict(
        flag="--balance",
        label="Class balance",
        help="weights: every class counts equally in the loss, right when the labelled "
        "ratio is arbitrary (balanced batches when classes differ more than 10-fold); "
        "sampler: balanced batches; none: plain loss, best "
        "accuracy when labels follow the true class ratio",
    ),
    "val_fraction": dict(
        flag="--val-fraction",
        label="Validation share",
        metavar="F",
        help="share held out for validation, whole images when possible (0 = none)",
    ),
    "patience": dict(
        flag="--patience",
        label="Patience",
        metavar="N",
        help="early stopping after N epochs without better validation loss (0 = off)",
    ),
    "seed": dict(flag="--seed", label="Seed", metavar="N", help="random seed"),
    "runs": dict(
        flag="--runs",
        label="Runs",
        metavar="N",
        help="independent runs with seeds SEED, SEED+1, ...; the spread of validation accuracy "
        "is reported and their ensemble (mean probability) delivered (--combine best: the best run)",
    ),
    "device": dict(
        flag="--device", label="Device", help="auto (GPU when there is one), cpu, cuda, cuda:1, mps, gpu"
    ),
    "memorisation_epochs": dict(
        metavar="N",
        label="Memorisation check",
        help="epochs in a row with chance-level validation (balanced) accuracy before a "
        "warning that the network memorises or learns nothing (0 = off; see memorisation.py)",
    ),
    "lr_schedule": dict(
        label="Learning-rate schedule", help="cosine: decay to 0 over the epochs; constant: no decay"
    ),
    "weight_decay": dict(metavar="F", label="Weight decay", help="decoupled weight decay (0 = Adam)"),
    "label_smoothing": dict(metavar="F", label="Label smoothing", help="soft targets (0 = off)"),
    "normalization": dict(
        flag="--per-tile-norm",
        label="Normalisation",
        switch="per_tile",
        help="normalise each tile on its own (loses absolute brightness)",
    ),
}
# Choices of TrainConfig fields, from the layer that defines them.
_TRAIN_CHOICES: dict[str, tuple] = {
    "architecture": (*model.ARCHITECTURES, baseline.FEATURES_ARCHITECTURE),
    "balance": tuple(training.BALANCE_MODES),
    "normalization": tuple(data.NORMALIZATION_MODES),
    "lr_schedule": tuple(training.LR_SCHEDULES),
    "select": tuple(training.SELECT_MODES),
    "combine": tuple(training.COMBINE_MODES),
}


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _value_type(default: Any) -> Callable | None:
    if isinstance(default, bool) or default is None:
        return None
    if isinstance(default, (int, float, str)):
        return type(default)
    return None


def train_options() -> list[Option]:
    """One Option per TrainConfig field, in the dataclass's order."""
    options = []
    for f in dataclasses.fields(TrainConfig):
        default = _field_default(f)
        text = dict(_TRAIN_TEXT.get(f.name) or {})
        flag = text.pop("flag", "--" + f.name.replace("_", "-"))
        help_text = text.pop("help", f"TrainConfig.{f.name}")
        label = text.pop("label", f.name.replace("_", " ").capitalize())
        options.append(
            Option(
                name=f.name,
                default=default,
                help=help_text,
                flag=flag,
                label=label,
                choices=_TRAIN_CHOICES.get(f.name),
                type=_value_type(default),
                metavar=text.pop("metavar", None),
                **text,
            )
        )
    return options


def train_option(name: str) -> Option:
    for option in train_options():
        if option.name == name:
            return option
    raise KeyError(f"TrainConfig has no field {name!r}")


def train_default(name: str) -> Any:
    """The default of one TrainConfig field (for the widget's settings)."""
    return train_option(name).default


def option_of_config_field() -> dict[str, str]:
    """TrainConfig field -> its command-line flag (to translate the engine's error messages)."""
    return {option.name: option.flag for option in train_options()}


def add_train_arguments(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """Every TrainConfig field as a command-line option (its dest is the field name). Fields whose
    default is not a plain value (a list, a nested config) and flags the parser already has are
    left out, so a new TrainConfig field never breaks the command line."""
    for option in train_options():
        if option.name in skip or not option.on_command_line:
            continue
        try:
            option.add_to(parser)
        except argparse.ArgumentError:  # the flag is taken (e.g. a new field --tile-size)
            continue


def train_config_from(values: Mapping[str, Any]) -> TrainConfig:
    """A TrainConfig from a mapping that holds some of its fields (other keys are ignored)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in names})


# -- tiling ------------------------------------------------------------------------------------
def _parameter_default(function: Callable, name: str) -> Any:
    return inspect.signature(function).parameters[name].default


TILE_SIZE = Option(
    "tile_size",
    64,
    "tile side in pixels",
    "--tile-size",
    label="Tile size",
    type=int,
    metavar="N",
    minimum=tiling.MIN_TILE_SIZE,
    maximum=tiling.MAX_TILE_SIZE,
)
STRIDE = Option(
    "stride",
    None,
    "step between tiles (default: the tile size, no overlap)",
    "--stride",
    label="Stride",
    type=int,
    metavar="N",
    minimum=1,
)
MIN_FRACTION = Option(
    "min_fraction",
    _parameter_default(tiling.tile_labels_from_label_image, "min_fraction"),
    "label images: painted fraction a tile needs to be used",
    "--min-fraction",
    label="Painted fraction",
    type=float,
    metavar="F",
)
FOLDER_MODE = Option(
    "mode",
    _parameter_default(data.from_class_folders, "mode"),
    "class folders: resize each image to one tile, or cut it into tiles (label images are always tiled)",
    "--mode",
    label="Folder images",
    choices=tuple(FOLDER_MODES),
)

# Object mode (one tile per cell of an instance mask): the default lives in objects.py.
BLANK_BACKGROUND = Option(
    "blank_background",
    objects.DEFAULT_BLANK_BACKGROUND,
    "object mode: zero the pixels outside each cell in its tile (classifying with the model does the same)",
    "--blank-background",
    label="Blank around cells",
)
MASK_CHANNEL = Option(
    "mask_channel",
    objects.DEFAULT_MASK_CHANNEL,
    "object mode: give the model each cell's own mask as one more channel (1 on the cell, 0 "
    "elsewhere; the model then classifies cells only, not tiles of a grid)",
    "--mask-channel",
    label="Mask as an extra channel",
)


def check_tile_size(tile_size: Any) -> int:
    """The faces' tile-size rule: a whole number of tiling.MIN_TILE_SIZE..MAX_TILE_SIZE px."""
    return tiling.check_tile_size(tile_size, minimum=tiling.MIN_TILE_SIZE, maximum=tiling.MAX_TILE_SIZE)
