"""What the commands share: messages, progress bars, options, reading fields and models.

Engine modules are imported inside the functions, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from ..datasets import LABELS_SUFFIX

PROG = "cellclf"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's convention for "ended by SIGINT"

DATA_HELP = f"""\
DATA is a folder in one of two layouts (detected automatically, and reported):

  class folders   DATA/<class name>/<image>  - every image (or every tile of it,
                  with --mode tile) belongs to its folder's class.
  label images    DATA/<stem>.tif beside DATA/<stem>{LABELS_SUFFIX}.tif - a label image
                  of the same height and width, 0 = unlabelled, value k = class k
                  (name them with --classes, e.g. --classes Control,Treated for 1 and 2).
                  Tiles whose painted pixels cover at least --min-fraction of the
                  tile get the majority label; the rest are skipped.

Images: TIFF (plain, ImageJ, OME), PNG, JPEG. Hidden files are ignored."""


class CLIError(Exception):
    """A user-facing error raised by the CLI itself (the engine raises ValueError/OSError)."""


def out(message: str = "") -> None:
    """A result line on stdout, flushed so pipes and log files see it as it happens."""
    print(message, flush=True)


def err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def note(message: str) -> None:
    err(f"{PROG}: note: {message}")


def progress(total: int | None, description: str, unit: str = "it"):
    """A tqdm bar on stderr; tqdm hides it by itself when stderr is not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=False, disable=None)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text


def format_accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# -- options shared by several commands -----------------------------------------------------------
def add_device(parser: argparse.ArgumentParser) -> None:
    from ..options import train_option

    train_option("device").add_to(parser)


def add_channels(parser: argparse.ArgumentParser, for_model: bool) -> None:
    # One value (commas allowed, option repeatable) so it never swallows DATA/IMAGE.
    parser.add_argument(
        "--channels",
        action="append",
        metavar="CH[,CH...]",
        help="channels by index (0-based) or name, e.g. --channels 1 or "
        "--channels DNA,actin"
        + ("; default: the channels the model was trained on" if for_model else "; default: all"),
    )


def parse_channels(values: Sequence[str] | None) -> list[int | str] | None:
    """`--channels 1 --channels DNA` or `--channels 1,DNA` -> [1, "DNA"]: digits are indices, else names."""
    if not values:
        return None
    channels: list[int | str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part:
                channels.append(int(part) if part.isdigit() else part)
    return channels or None


def parse_class_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise CLIError(f"--classes {text!r}: class names must be non-empty, separated by commas")
    if len(set(names)) != len(names):
        raise CLIError(f"--classes {text!r}: class names must be distinct")
    return names


def add_plane(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plane",
        action="append",
        metavar="AXIS=K",
        help="one plane of a Z stack or time series, e.g. --plane Z=3 (0-based; repeat for T)",
    )


def parse_plane(values: Sequence[str] | None) -> dict[str, int] | None:
    """`--plane Z=3 --plane T=0` -> {"Z": 3, "T": 0}; CLIError for anything else."""
    if not values:
        return None
    plane: dict[str, int] = {}
    for value in values:
        axis, sep, index = value.partition("=")
        axis = axis.strip().upper()
        if not sep or axis not in ("Z", "T") or not index.strip().isdigit():
            raise CLIError(
                f"--plane {value!r}: give an axis and a 0-based plane, e.g. --plane Z=3 or --plane T=0"
            )
        if axis in plane:
            raise CLIError(f"--plane: {axis} given twice")
        plane[axis] = int(index)
    return plane


def check_output(path, inputs: Sequence = (), option: str = "--out") -> Path:
    """The output guard (_files.check_output_path), run before any work: never an input of the
    command, only a regular file or a new name, in a folder that exists and is writable."""
    from .._files import check_output_path

    return check_output_path(path, inputs, option=option)


def train_config(args):
    """training.TrainConfig from the parsed options, checked; the engine names TrainConfig
    fields in its messages, the CLI says the options."""
    from .. import options
    from ..training import check_config

    config = options.train_config_from(vars(args))
    try:
        check_config(config)
    except ValueError as error:
        message = str(error)
        for field_name, flag in options.option_of_config_field().items():
            message = message.replace(f"TrainConfig.{field_name}", flag)
        raise CLIError(message) from None
    return config


# -- fields, channels, models ---------------------------------------------------------------------
def read_field(path: Path, plane: dict[str, int] | None = None):
    """(io.ImageData, float32 (C, Y, X) array of every channel, channel names)."""
    from .. import io

    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    image = io.read_image(path)
    try:
        cyx, names = io.to_cyx(image, plane=plane)
    except io.ImageReadError:
        raise
    except ValueError as error:  # planes: the engine says plane={...}, the CLI has --plane
        raise CLIError(str(error)) from None
    return image, cyx, names


def note_pixel_size(image, meta, source: Path) -> None:
    """A note on stderr when the field's pixel size is not the model's training pixel size
    (pixelsize.pixel_size_warning: more than 1.25x apart on either axis)."""
    from ..pixelsize import pixel_size_warning

    warning = pixel_size_warning(image.pixel_size, image.unit, meta.pixel_size, name=str(source))
    if warning:
        note(warning)


def channel_indices(names: list[str], channels: Sequence[int | str] | None, source: Path) -> list[int]:
    """Indices into the source image of the chosen channels (all when None): channels.resolve_channels."""
    from ..channels import resolve_channels

    try:
        return resolve_channels(names, channels)
    except ValueError as error:
        raise CLIError(f"--channels: {source}: {error}") from None


def model_channels(
    meta,
    names: list[str],
    explicit: Sequence[int | str] | None,
    source: Path,
    objects: bool = False,
) -> list[int]:
    """Which channels of an image feed the model: --channels when given, else the engine's rule
    (channels.model_channel_indices) on the model's image channels (objects.image_channel_names:
    a mask-channel model's last channel is the cell's mask, cut from the instance mask, not read
    from the image). A count that does not match the model -> CLIError; so does a mask-channel
    model used on tiles of a grid (`objects` False: no instance masks given)."""
    from ..channels import model_channel_indices
    from ..objects import image_channel_names, tile_mode_problem

    problem = None if objects else tile_mode_problem(meta)
    if problem:
        raise CLIError(
            f"{source}: {problem}; give each image's cell masks (predict --objects MASKS; "
            "evaluate: <stem>_objects.tif beside each labelled image)"
        )
    wanted = image_channel_names(meta)
    if explicit is not None:
        indices = channel_indices(names, explicit, source)
    else:
        try:
            indices = model_channel_indices(wanted, meta.channel_indices, names)
        except ValueError as error:
            raise CLIError(f"{source}: {error}; pick them with --channels") from None
        if len(names) != len(indices) and len(indices) == len(wanted):
            # Some channels of the image are left out: say which feed the model (issue 11: a
            # 1-channel model used to take channel 0 of a 2-channel image without a word).
            used = ", ".join(f"{i} ({names[i]})" for i in indices)
            note(
                f"{source}: the model ({', '.join(wanted)}) reads channel(s) {used} "
                f"of the image's {len(names)} ({', '.join(names)}); choose others with --channels"
            )
    if len(indices) != len(wanted):
        chosen = ", ".join(names[i] for i in indices)
        raise CLIError(
            f"{source}: {len(indices)} channel(s) selected ({chosen}) "
            f"but the model expects {len(wanted)} ({', '.join(wanted)}); "
            "pick them with --channels"
        )
    return indices


def load_classifier(path: Path, device: str, precision: str | None = None):
    """(inference.Classifier, modelfile.ModelMeta); invalid files raise ModelFileError.
    `precision` (None: $CELLCLF_PRECISION or auto) is reported when it is not plain fp32."""
    from ..inference import Classifier
    from ..modelfile import load_model

    if not path.is_file():
        raise CLIError(f"{path}: no such model file")
    model, meta = load_model(path, device="cpu")
    classifier = Classifier(model, meta, device=device, precision=precision)
    report = getattr(classifier, "precision_report", None)
    if report is not None and report.requested != "fp32":
        out(report.summary())
    return classifier, meta


def add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default=None,
        help="number format: auto (default; bf16 where the CPU/GPU has it and a probe batch "
        "agrees with fp32), fp32, or bf16",
    )


def add_stride(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stride", type=int, metavar="N", help="step between tiles (default: the model's tile size)"
    )


def add_field_reading(parser: argparse.ArgumentParser) -> None:
    """The options of a command that runs a model over fields: which channels and plane, where
    and in which number format (predict and explain)."""
    add_channels(parser, for_model=True)
    add_plane(parser)
    add_device(parser)
    add_precision(parser)


def open_lazy(path: Path, meta):
    """(streaming.LazyImage, io.ImageData) of a file io leaves unread (too large to convert
    whole), or None: the in-memory path then reads it (and says what is wrong with it)."""
    from .. import io, streaming

    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    image = io.read_image(path)
    lazy = streaming.open_lazy(image)
    if lazy is None:
        return None
    note_pixel_size(image, meta, path)
    return lazy, image


def drive(generator, description: str) -> Any:
    """Run an engine generator of InferenceProgress to its return value behind a progress bar."""
    from .._generators import drive as drive_generator

    bar = None

    def show(event) -> None:
        nonlocal bar
        if bar is None:
            bar = progress(event.total, description, unit="tile")
        bar.n = event.done
        bar.refresh()

    try:
        return drive_generator(generator, show)
    finally:
        if bar is not None:
            bar.close()


def reading_bar(description: str = "reading") -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """(progress callback (done, total), close) for datasets.load_folder."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = progress(total, description, unit="image")
        bar.n = done
        bar.refresh()

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close
