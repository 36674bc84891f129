"""`cellclf predict MODEL IMAGE...`: classify every tile of whole fields, optionally to a CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    PROG,
    CLIError,
    add_field_reading,
    add_stride,
    check_output,
    drive,
    err,
    load_classifier,
    model_channels,
    note_pixel_size,
    open_lazy,
    out,
    parse_channels,
    parse_plane,
    read_field,
)

NAME = "predict"


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(NAME, help="classify every tile of whole fields of view")
    parser.add_argument("model", metavar="MODEL", help="model file (.safetensors)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="images to classify")
    parser.add_argument(
        "--out", "-o", metavar="CSV", help="write one CSV row per tile (with a source column) to CSV"
    )
    add_stride(parser)
    parser.add_argument("--foreground", action="store_true", help="skip background-only tiles")
    parser.add_argument(
        "--out-dir",
        metavar="DIR",
        help="one CSV per image in DIR (<stem>.csv, written atomically); a rerun skips images "
        "whose CSV exists (join them with `cellclf merge`)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="with --out-dir: N worker processes on a local dask.distributed cluster",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="with --out-dir: an existing dask.distributed scheduler (tcp://host:port)",
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="with --out-dir: only every N-th image from I (0-based; e.g. $SLURM_ARRAY_TASK_ID/N)",
    )
    parser.add_argument(
        "--objects",
        nargs="+",
        metavar="MASKS",
        help="instance masks (0 = background, each id one cell), one per IMAGE in the same order: "
        "classify one tile centred on each cell instead of the tile grid; the CSV has one row per "
        "cell (label, centroid_y, centroid_x, area, class, confidence, p_<class>)",
    )
    add_field_reading(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args) -> int:
    import numpy as np

    from .. import streaming
    from ..evaluation import stored_verdict
    from ..objects import model_settings
    from ..tables import write_predictions_csv

    if args.out_dir or args.workers or args.scheduler or args.shard:
        if args.objects:
            raise CLIError("--objects writes one CSV with --out; --out-dir/--workers/--shard do not apply")
        return _run_many(args)
    if args.out:  # before any work: never one of the inputs, never a folder/device/FIFO
        check_output(args.out, [args.model, *args.images])
    plane = parse_plane(args.plane)
    classifier, meta = load_classifier(Path(args.model), args.device, args.precision)
    verdict = stored_verdict(meta)
    if verdict:
        # Said before the work and again after it, where the counts are read.
        err(f"{PROG}: warning: this model was judged on its validation data: {verdict}")
    explicit = parse_channels(args.channels)
    masks_paths = [Path(p) for p in args.objects] if args.objects else None
    if masks_paths is not None and len(masks_paths) != len(args.images):
        raise CLIError(
            f"--objects: {len(masks_paths)} mask file(s) for {len(args.images)} image(s); "
            "give one instance mask per image, in the same order"
        )
    if masks_paths is not None and (args.stride is not None or args.foreground):
        raise CLIError("--objects classifies one tile per cell; --stride and --foreground do not apply")
    settings = model_settings(meta)  # object tiles are cut the way the model's training cut them
    columns: dict[str, list] = {}
    unit = "cells" if masks_paths is not None else "tiles"
    for i, image_path in enumerate(map(Path, args.images)):
        opened = None if masks_paths is not None or args.foreground else open_lazy(image_path, meta)
        if opened is not None:  # too big to convert whole: band by band (streaming.py)
            lazy = opened[0]
            with lazy:
                channels = model_channels(meta, lazy.channel_names, explicit, image_path, objects=False)
                table = drive(
                    streaming.predict_image(classifier, lazy, args.stride, channels),
                    f"classifying {image_path.name}",
                )
            predicted = np.asarray(table["class"], np.int64) - 1
        else:
            image, cyx, names = read_field(image_path, plane)
            note_pixel_size(image, meta, image_path)
            cyx = cyx[model_channels(meta, names, explicit, image_path, objects=masks_paths is not None)]
            if masks_paths is not None:
                table = _predict_objects(
                    classifier, cyx, masks_paths[i], settings["blank_background"], settings["mask_channel"]
                )
                predicted = np.asarray(table["class"], np.int64) - 1
            else:
                prediction = drive(
                    classifier.predict_field(cyx, stride=args.stride, foreground_only=args.foreground),
                    f"classifying {image_path.name}",
                )
                table = prediction.table()
                predicted = prediction.predicted
        n_tiles = len(predicted)
        counts = np.bincount(predicted, minlength=len(meta.class_names))
        out(
            f"{image_path}: {n_tiles} {unit} - "
            + ", ".join(f"{name} {int(c)}" for name, c in zip(meta.class_names, counts))
        )
        columns.setdefault("source", []).append(np.full(n_tiles, image_path.name, dtype=object))
        for key, values in table.items():
            columns.setdefault(key, []).append(np.asarray(values))
    if args.out:
        merged = {key: np.concatenate(parts) for key, parts in columns.items()}
        write_predictions_csv(args.out, merged)
        out(f"predictions of {len(merged['source'])} {unit} written to {args.out}")
    if verdict:
        err(
            f"{PROG}: warning: the class counts above come from a model that is not clearly "
            "better than chance; do not rely on them"
        )
    return 0


def _run_many(args) -> int:
    """--out-dir (with --workers / --scheduler / --shard): distributed.predict_files."""
    from .. import distributed
    from ._common import CLIError

    if not args.out_dir:
        raise CLIError("--workers, --scheduler and --shard write one CSV per image: give --out-dir")
    if args.channels:
        raise CLIError("--channels is not available with --out-dir (the model's channel rule is used)")
    try:
        shard = distributed.parse_shard(args.shard)
    except ValueError as error:
        raise CLIError(str(error)) from None
    summary = distributed.predict_files(
        Path(args.model),
        [Path(p) for p in args.images],
        Path(args.out_dir),
        workers=args.workers,
        scheduler=args.scheduler,
        shard=shard,
        stride=args.stride,
        foreground_only=args.foreground,
        device=args.device,
        precision=args.precision or "fp32",
        on_result=lambda r: out(
            f"{r.source}: {r.status}"
            + (f" ({r.n_tiles} tiles)" if r.status == "done" else "")
            + (f" - {r.error}" if r.error else "")
        ),
    )
    out(summary.line())
    return 1 if summary.count("failed") else 0


def _predict_objects(classifier, cyx, masks_path: Path, blank_background: bool, mask_channel: bool) -> dict:
    from .. import io
    from ..objects import check_masks, predict_objects

    if not masks_path.is_file():
        raise CLIError(f"{masks_path}: no such file")
    masks = check_masks(io.read_image(masks_path).data, cyx.shape[1:], str(masks_path))
    return predict_objects(classifier, cyx, masks, blank_background, mask_channel)
