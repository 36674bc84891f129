"""How every command reads labelled DATA: one set of options and one reader for training data
(`train`, `crosstest`), one for data scored by a model (`evaluate`, `report`), both over
datasets.load_folder with the same layout detection, plane choice and channel rules."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    PROG,
    CLIError,
    add_channels,
    add_device,
    add_plane,
    channel_indices,
    err,
    load_classifier,
    model_channels,
    note,
    out,
    parse_channels,
    parse_class_list,
    parse_plane,
    read_field,
    reading_bar,
)


# -- training data (train, crosstest) -------------------------------------------------------------
def add_training_data_arguments(parser: argparse.ArgumentParser) -> None:
    """How training DATA is read: tiles, layout mode, class names, painted fraction, objects,
    channels, plane."""
    from ..options import BLANK_BACKGROUND, FOLDER_MODE, MASK_CHANNEL, MIN_FRACTION, STRIDE, TILE_SIZE

    TILE_SIZE.add_to(parser)
    STRIDE.add_to(parser)
    FOLDER_MODE.add_to(parser)
    parser.add_argument(
        "--classes",
        metavar="A,B,...",
        help="label images: names of label values 1, 2, ... (default 'class 1', ...)",
    )
    MIN_FRACTION.add_to(parser)
    BLANK_BACKGROUND.add_to(parser)  # objects layout (<stem>_objects.tif) only
    MASK_CHANNEL.add_to(parser)  # objects layout only (refused for the others)
    add_channels(parser, for_model=False)
    add_plane(parser)


def check_training_data_arguments(args) -> None:
    """Tile size and stride that cannot work fail before any data is read."""
    from .. import options

    try:
        options.check_tile_size(args.tile_size)
    except ValueError:
        tile = options.TILE_SIZE
        raise CLIError(f"--tile-size {args.tile_size}: must be {tile.minimum}..{tile.maximum} px") from None
    if args.stride is not None and args.stride < 1:
        raise CLIError(f"--stride {args.stride}: must be at least 1")
    parse_class_list(args.classes)
    parse_plane(args.plane)


def read_training_data(args, root: Path, channels=None, name: str | None = None):
    """(dataset, layout, channel indices into the source images) for training DATA `root` read
    as the options in `args` say; `channels` (parsed --channels, or a DATA:CH subset) picks the
    channels. The layout found is reported on stdout."""
    from ..datasets import TileSpec, detect_layout, load_folder, probe_image

    class_names = parse_class_list(args.classes)
    layout = detect_layout(root)
    out(
        f"{name or root}: "
        + (
            "class folders (DATA/<class>/<image>), mode " + args.mode
            if layout == "folders"
            else f"label images (<stem> + <stem>_labels), tiles of {args.tile_size} px"
            if layout == "labels"
            else f"objects (<stem> + <stem>_labels + <stem>_objects), one {args.tile_size} px tile per cell"
        )
    )
    if layout == "folders" and class_names is not None:
        raise CLIError(
            "--classes names label values of label images; with class folders the "
            "folder names are the classes"
        )
    if getattr(args, "mask_channel", False) and layout != "objects":
        # Not ignored: the model asked for would read a channel these tiles cannot have.
        raise CLIError(
            f"--mask-channel: {name or root} has no cell masks (<stem>_objects.tif beside "
            "<stem>.tif and <stem>_labels.tif); the mask channel is for the objects layout"
        )
    probe = probe_image(root, layout)
    plane = parse_plane(args.plane)
    _, _, probe_names = read_field(probe, plane)
    indices = channel_indices(probe_names, channels, probe)
    update, close = reading_bar(f"reading {name}" if name else "reading")
    try:
        dataset = load_folder(
            root,
            layout,
            TileSpec(args.tile_size, args.stride, args.min_fraction),
            mode=args.mode,
            channels=channels,
            class_names=class_names,
            note=note,
            progress=update,
            plane=plane,
            blank_background=args.blank_background,
            mask_channel=args.mask_channel,
        )
    finally:
        close()
    return dataset, layout, indices


# -- data scored by a model (evaluate, report) ----------------------------------------------------
def add_labelled_data_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL DATA and how DATA is read for a model: the one set that `evaluate` and `report`
    share, so that `load_labelled` finds every attribute it reads on both."""
    from ..options import FOLDER_MODE, MIN_FRACTION

    parser.add_argument("model", metavar="MODEL", help="model file (.safetensors)")
    parser.add_argument("data", metavar="DATA", help="folder of labelled images (see above)")
    parser.add_argument(
        FOLDER_MODE.flag,
        dest=FOLDER_MODE.name,
        choices=FOLDER_MODE.choices,
        help="class folders: default the mode the model was trained with",
    )
    parser.add_argument("--stride", type=int, metavar="N", help="step between tiles (default as in training)")
    MIN_FRACTION.add_to(parser)
    parser.add_argument(
        "--all-samples",
        action="store_true",
        help="when DATA is the model's training folder, use every sample (default: only its "
        "validation split, as training tiles would flatter the model)",
    )
    add_channels(parser, for_model=True)
    add_plane(parser)
    add_device(parser)


def load_labelled(args):
    """(classifier, meta, dataset, layout) for MODEL DATA read the way the model was trained:
    shared by `evaluate` and `report`."""
    from ..datasets import TileSpec, detect_layout, load_folder, probe_image
    from ..objects import model_settings

    model_path, root = Path(args.model), Path(args.data)
    classifier, meta = load_classifier(model_path, args.device)
    cli_extra = (meta.extra or {}).get("cli", {})
    layout = detect_layout(root)
    err(f"{root}: " + ("class folders" if layout == "folders" else "label images"))

    explicit = parse_channels(args.channels)
    probe = probe_image(root, layout)
    plane = parse_plane(args.plane)
    _, _, probe_names = read_field(probe, plane)
    indices = model_channels(meta, probe_names, explicit, probe, objects=layout == "objects")

    # Class folders are read the way the model's training data was: resized cell crops, or
    # tiles when the model learnt from tiles of fields (label images, or the napari widget).
    trained_layout = cli_extra.get("layout")
    # A model without a record (trained in the widget, or by a script) learnt from tiles of
    # fields: resizing whole images to one tile would feed it something it never saw.
    mode = args.mode or (cli_extra.get("mode", "resize") if trained_layout == "folders" else "tile")
    if layout == "folders":
        err(f"{PROG}: reading class folders with --mode {mode}")
    stride = args.stride if args.stride is not None else cli_extra.get("stride")
    update, close = reading_bar()
    try:
        dataset = load_folder(
            root,
            layout,
            TileSpec(meta.tile_size, stride, args.min_fraction),
            mode=mode,
            channels=indices,
            class_names=meta.class_names,
            known_classes=True,
            note=note,
            progress=update,
            plane=plane,
            # object tiles cut as the model's were (a blank-background model never saw a
            # neighbour's pixels; scoring it on them would judge it on another task; a
            # mask-channel model reads each cell's mask as its last channel)
            blank_background=model_settings(meta)["blank_background"],
            mask_channel=model_settings(meta)["mask_channel"],
        )
    finally:
        close()
    if len(dataset) == 0:
        raise CLIError(f"{root}: no labelled samples to evaluate")
    return classifier, meta, dataset, layout


def held_out(meta, dataset, root: Path, use_all: bool):
    """The model's own validation split when DATA is the folder it was trained on (scoring
    training tiles would flatter it), else all of DATA. Returns (dataset, note or None)."""
    import numpy as np

    from ..data import split_train_val

    record = (meta.extra or {}).get("cli", {})
    config = (meta.extra or {}).get("train_config") or {}
    trained_on = record.get("data")
    if use_all or not trained_on or Path(trained_on).resolve() != root.resolve():
        return dataset, None
    fraction, seed = config.get("val_fraction"), config.get("seed", 0)
    if not fraction:
        return dataset, (
            f"{root} is the model's training data and it kept no validation split: "
            "these numbers are on training tiles and flatter the model"
        )
    _, val_idx = split_train_val(dataset, fraction, seed=seed)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    if len(val_idx) == 0:
        return dataset, f"{root} is the model's training data; no validation tiles could be re-made"
    return dataset.subset(val_idx), (
        f"{root} is the data the model was trained on: scoring its validation split only "
        f"({len(val_idx)} of {len(dataset)} samples; --all-samples for every one)"
    )
