"""`cellclf`: the command-line face of the engine (train, evaluate, predict, explain, demo).

A thin face: argparse, files in and out, progress bars and messages. Every algorithm lives in the
engine modules, imported inside the subcommands so `cellclf --help` does not pay for torch.
User mistakes (bad paths, unknown classes, channel mismatches, invalid model files) end as one
line `cellclf: error: ...` on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from . import __version__

PROG = "cellclf"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130          # the shell's convention for "ended by SIGINT"
LABELS_SUFFIX = "_labels"       # <stem>.tif is annotated by <stem>_labels.tif

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


# training.TrainConfig field -> the `cellclf train` option that sets it (for error messages).
OPTION_OF_CONFIG_FIELD = {
    "epochs": "--epochs", "batch_size": "--batch-size", "learning_rate": "--lr",
    "architecture": "--arch", "rotate_degrees": "--rotate", "val_fraction": "--val-fraction",
    "patience": "--patience", "seed": "--seed", "runs": "--runs", "device": "--device",
    "normalization": "--per-tile-norm", "augment": "--no-augment", "balance": "--balance",
}


class CLIError(Exception):
    """A user-facing error raised by the CLI itself (the engine raises ValueError/OSError)."""


# --------------------------------------------------------------------------------------------
# small helpers


def _out(message: str = "") -> None:
    """A result line on stdout, flushed so pipes and log files see it as it happens."""
    print(message, flush=True)


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(total: int | None, description: str, unit: str = "it"):
    """A tqdm bar on stderr; tqdm hides it by itself when stderr is not a terminal."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=False,
                disable=None)


def _parse_channels(values: Sequence[str] | None) -> list[int | str] | None:
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


def _parse_class_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise CLIError(f"--classes {text!r}: class names must be non-empty, separated by commas")
    if len(set(names)) != len(names):
        raise CLIError(f"--classes {text!r}: class names must be distinct")
    return names


def _format_accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# --------------------------------------------------------------------------------------------
# reading images and data folders


def _read_field(path: Path):
    """(io.ImageData, float32 (C, Y, X) array of every channel, channel names)."""
    from . import io
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    image = io.read_image(path)
    cyx, names = io.to_cyx(image)
    return image, cyx, names


def _detect_layout(root: Path) -> str:
    """"folders" (DATA/<class>/<image>) or "labels" (<stem> + <stem>_labels images)."""
    from . import io
    if not root.exists():
        raise CLIError(f"{root}: no such folder")
    if not root.is_dir():
        raise CLIError(f"{root}: not a folder (DATA must be a folder; see --help)")
    class_dirs = [d for d in _subfolders(root) if io.list_images(d)]
    has_labels = any(p.stem.endswith(LABELS_SUFFIX) for p in io.list_images(root))
    if class_dirs and has_labels:
        raise CLIError(f"{root}: holds both class subfolders ({', '.join(d.name for d in class_dirs)}) "
                       f"and *{LABELS_SUFFIX} images; use one layout per folder")
    if class_dirs:
        return "folders"
    if has_labels:
        return "labels"
    loose = io.list_images(root)
    if loose:
        raise CLIError(f"{root}: {len(loose)} image(s) but no <stem>{LABELS_SUFFIX} label images and "
                       "no class subfolders (see `cellclf train --help` for the two layouts)")
    raise CLIError(f"{root}: empty folder: no class subfolders with images and no images "
                   "(see `cellclf train --help` for the two layouts)")


def _subfolders(root: Path) -> list[Path]:
    from . import io
    return sorted(d for d in root.iterdir() if d.is_dir() and not io.is_ignored(d))


def _label_pairs(root: Path, note_unpaired: bool = False) -> list[tuple[Path, Path]]:
    """(image, label image) pairs of the label-image layout; labels without an image -> error."""
    from . import io
    files = io.list_images(root)
    images = {p.stem: p for p in files if not p.stem.endswith(LABELS_SUFFIX)}
    pairs = []
    for label_path in (p for p in files if p.stem.endswith(LABELS_SUFFIX)):
        stem = label_path.stem[: -len(LABELS_SUFFIX)]
        if stem not in images:
            raise CLIError(f"{label_path}: label image without its image {stem}.<tif|png|...> "
                           f"in {root}")
        pairs.append((images.pop(stem), label_path))
    if images and note_unpaired:
        _err(f"{PROG}: note: {len(images)} image(s) without a {LABELS_SUFFIX} file skipped: "
             + ", ".join(sorted(p.name for p in images.values())[:5])
             + (" ..." if len(images) > 5 else ""))
    return sorted(pairs)


def _read_label_image(path: Path):
    import numpy as np
    from . import io
    array = np.asarray(io.read_image(path).data)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise CLIError(f"{path}: a label image must be 2-D (Y, X); got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer) and not np.all(np.mod(array, 1) == 0):
        raise CLIError(f"{path}: a label image must hold whole numbers (got {array.dtype} "
                       "values with fractions)")
    if array.size and array.min() < 0:
        raise CLIError(f"{path}: label values must be >= 0 (0 = unlabelled, k = class k)")
    return array.astype(np.int64)


def _probe_image(root: Path, layout: str) -> Path:
    """The first image of DATA, to resolve channel names into indices."""
    from . import io
    if layout == "labels":
        return _label_pairs(root)[0][0]
    for folder in _subfolders(root):
        images = io.list_images(folder)
        if images:
            return images[0]
    raise CLIError(f"{root}: no images found")


def _channel_indices(names: list[str], channels: Sequence[int | str] | None, source: Path
                     ) -> list[int]:
    """Indices into the source image of the chosen channels (all when None)."""
    if channels is None:
        return list(range(len(names)))
    indices = []
    for channel in channels:
        if isinstance(channel, int):
            if not 0 <= channel < len(names):
                raise CLIError(f"--channels {channel}: {source} has {len(names)} channel(s) "
                               f"(indices 0..{len(names) - 1}: {', '.join(names)})")
            indices.append(channel)
        elif channel in names:
            indices.append(names.index(channel))
        else:
            raise CLIError(f"--channels {channel}: no channel of that name in {source} "
                           f"(it has {', '.join(names)})")
    return indices


def _load_dataset(root: Path, layout: str, *, tile_size: int, stride: int | None, mode: str,
                  channels: Sequence[int | str] | None, class_names: Sequence[str] | None,
                  min_fraction: float, for_model: bool = False):
    """A data.TileDataset from either layout. `for_model`: class_names are the model's (every
    class found in DATA must be one of them; label values above K are errors)."""
    from . import data, io

    if layout == "folders":
        if for_model:
            known = list(class_names)
            for folder in _subfolders(root):
                if io.list_images(folder) and folder.name not in known:
                    raise CLIError(f"unknown class '{folder.name}' ({folder}); the model knows: "
                                   + ", ".join(known))
        return data.from_class_folders(root, tile_size, mode=mode, channels=channels,
                                       stride=stride, class_names=class_names)

    pairs = _label_pairs(root, note_unpaired=True)
    images, label_images, sources = [], [], []
    channel_names = None
    top_label = 0
    with _progress(len(pairs), "reading", unit="image") as bar:
        for image_path, label_path in pairs:
            _, cyx, names = _read_field(image_path)
            cyx, names = io.select_channels(cyx, names, channels)
            labels = _read_label_image(label_path)
            if labels.shape != cyx.shape[1:]:
                raise CLIError(f"{label_path}: label image is {labels.shape[0]}x{labels.shape[1]} "
                               f"but {image_path.name} is {cyx.shape[1]}x{cyx.shape[2]}")
            if channel_names is not None and len(names) != len(channel_names):
                raise CLIError(f"{image_path}: {len(names)} channel(s) but earlier images have "
                               f"{len(channel_names)}")
            channel_names = channel_names or names
            top_label = max(top_label, int(labels.max()))
            images.append(cyx)
            label_images.append(labels)
            sources.append(str(image_path))
            bar.update(1)
    if top_label == 0:
        raise CLIError(f"{root}: the label images are empty (all 0 = unlabelled)")
    if class_names is None:
        class_names = [f"class {k}" for k in range(1, top_label + 1)]
        _err(f"{PROG}: note: no --classes given; naming label values 1..{top_label} "
             + ", ".join(repr(n) for n in class_names))
    elif top_label > len(class_names):
        who = "the model knows" if for_model else "--classes names"
        raise CLIError(f"label value {top_label} in {root} has no class: {who} only "
                       f"{len(class_names)} ({', '.join(class_names)}) for label values "
                       f"1..{len(class_names)}")
    return data.from_label_images(images, label_images, list(class_names), tile_size,
                                  stride=stride, min_fraction=min_fraction,
                                  channel_names=channel_names, sources=sources)


def _model_channels(meta, names: list[str], explicit: Sequence[int | str] | None,
                    source: Path) -> list[int]:
    """Which channels of an image feed the model: --channels when given, else the engine's rule
    (inference.model_channel_indices). A count that does not match the model -> CLIError."""
    from .inference import model_channel_indices
    if explicit is not None:
        indices = _channel_indices(names, explicit, source)
    else:
        try:
            indices = model_channel_indices(meta.channel_names, meta.channel_indices, names)
        except ValueError as error:
            raise CLIError(f"{source}: {error}; pick them with --channels") from None
    if len(indices) != meta.in_channels:
        raise CLIError(f"{source}: {len(indices)} channel(s) selected ({', '.join(names[i] for i in indices)}) "
                       f"but the model expects {meta.in_channels} ({', '.join(meta.channel_names)}); "
                       "pick them with --channels")
    return indices


def _load_classifier(path: Path, device: str):
    """(inference.Classifier, modelfile.ModelMeta); invalid files raise ModelFileError."""
    from .inference import Classifier
    from .modelfile import load_model
    if not path.is_file():
        raise CLIError(f"{path}: no such model file")
    model, meta = load_model(path, device="cpu")
    return Classifier(model, meta, device=device), meta


# --------------------------------------------------------------------------------------------
# train


def _cmd_train(args) -> int:
    from . import data, training
    from .model import MIN_TILE_SIZE, choose_device
    from .modelfile import save_model

    # Settings that cannot work fail before any data is read.
    if args.tile_size < MIN_TILE_SIZE:
        raise CLIError(f"--tile-size {args.tile_size}: must be at least {MIN_TILE_SIZE} px")
    if args.stride is not None and args.stride < 1:
        raise CLIError(f"--stride {args.stride}: must be at least 1")
    config = training.TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        architecture=args.arch, augment=not args.no_augment, rotate_degrees=args.rotate,
        balance=args.balance,
        val_fraction=args.val_fraction, patience=args.patience, seed=args.seed, runs=args.runs,
        device=args.device, normalization="per_tile" if args.per_tile_norm else "dataset")
    try:
        training.check_config(config)
    except ValueError as error:         # the engine names TrainConfig fields; say the options
        message = str(error)
        for field_name, option in OPTION_OF_CONFIG_FIELD.items():
            message = message.replace(f"TrainConfig.{field_name}", option)
        raise CLIError(message) from None
    choose_device(args.device)          # a GPU asked for but absent
    root = Path(args.data)
    channels = _parse_channels(args.channels)
    class_names = _parse_class_list(args.classes)
    layout = _detect_layout(root)
    _out(f"{root}: " + ("class folders (DATA/<class>/<image>), mode " + args.mode
                        if layout == "folders" else
                        f"label images (<stem> + <stem>{LABELS_SUFFIX}), tiles of {args.tile_size} px"))
    if layout == "folders" and class_names is not None:
        raise CLIError("--classes names label values of label images; with class folders the "
                       "folder names are the classes")

    probe = _probe_image(root, layout)
    _, _, probe_names = _read_field(probe)
    channel_indices = _channel_indices(probe_names, channels, probe)

    dataset = _load_dataset(root, layout, tile_size=args.tile_size, stride=args.stride,
                            mode=args.mode, channels=channels, class_names=class_names,
                            min_fraction=args.min_fraction)
    counts = dataset.class_counts()
    _out(f"{len(dataset)} samples of {args.tile_size}x{args.tile_size} px, "
         f"{len(dataset.channel_names)} channel(s) ({', '.join(dataset.channel_names)}), "
         f"{len(dataset.sources) or '?'} source image(s): "
         + ", ".join(f"{name} {n}" for name, n in counts.items()))
    data.check_trainable(dataset)

    stop = threading.Event()
    result, finished, shown = _run_training(dataset, config, stop)

    if result.cancelled and not any(run.get("epochs_completed", 0) > 0
                                    for run in result.history.runs):
        _err(f"{PROG}: interrupted before the first epoch ended; no model saved")
        return EXIT_INTERRUPTED

    _print_training_summary(result, finished, shown)
    meta = result.meta(channel_indices=channel_indices)
    meta.extra = {**(meta.extra or {}), "cli": {"layout": layout, "mode": args.mode,
                                                "stride": args.stride, "data": str(root)}}
    saved = save_model(args.out, result.model, meta)
    if result.cancelled:
        _out(f"training stopped early by Ctrl-C; best model so far saved to {saved}")
        return EXIT_INTERRUPTED
    _out(f"model saved to {saved}")
    return 0


def _run_training(dataset, config, stop: threading.Event):
    """Drive training.train, printing epoch lines and warnings; the first Ctrl-C sets `stop`
    (training ends within a batch and hands back the best model so far), a second one aborts."""
    from . import training

    finished: list = []
    shown: set[str] = set()            # warnings already printed as they happened
    bar = None

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        _err(f"\n{PROG}: stopping after this batch and saving the best model so far "
             "(Ctrl-C again to abort without saving)")

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        generator = training.train(dataset, config, stop=stop)
        while True:
            try:
                event = next(generator)
            except StopIteration as done:
                result = done.value
                break
            if isinstance(event, training.BatchProgress):
                if bar is None or event.batch == 0:
                    if bar is not None:
                        bar.close()
                    run = f"run {event.run + 1}/{event.n_runs} " if event.n_runs > 1 else ""
                    bar = _progress(event.n_batches, f"{run}epoch {event.epoch + 1}/{event.n_epochs}",
                                    unit="batch")
                bar.update(1)
                bar.set_postfix(loss=f"{event.loss:.3f}", refresh=False)
            elif isinstance(event, training.EpochEnd):
                if bar is not None:
                    bar.close()
                    bar = None
                run = f"run {event.run + 1}/{event.n_runs} " if event.n_runs > 1 else ""
                val = ("val loss -     acc -" if event.val_loss is None else
                       f"val loss {event.val_loss:.4f} acc {_format_accuracy(event.val_accuracy)}")
                _out(f"{run}epoch {event.epoch + 1:>3}/{event.n_epochs}  "
                     f"train loss {event.train_loss:.4f} acc {event.train_accuracy:.3f}  {val}"
                     + ("  *best" if event.is_best else ""))
            elif isinstance(event, training.MemorisationWarning):
                _err(f"{PROG}: warning: {event.message}")
                shown.add(event.message)
            elif isinstance(event, training.RunFinished):
                finished.append(event)
    finally:
        if bar is not None:
            bar.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return result, finished, shown


def _print_training_summary(result, finished, shown: set[str]) -> None:
    summary = result.history.summary()
    accuracies = summary.get("best_val_accuracy") or {}
    if len(finished) > 1 and accuracies.get("mean") is not None:
        _out(f"best validation accuracy over {len(finished)} runs: "
             f"{accuracies['mean']:.3f} ± {accuracies['std']:.3f} "
             f"(min {accuracies['min']:.3f}, max {accuracies['max']:.3f})")
        for event in finished:
            _out(f"  run {event.run + 1} (seed {event.seed}): {_format_accuracy(event.best_val_accuracy)}"
                 f" at epoch {event.best_epoch + 1}"
                 + (" (stopped early)" if event.stopped_early else ""))
        best = summary.get("best_run")
        if best is not None:
            _out(f"keeping run {best + 1}")
    elif finished:
        event = finished[-1]
        if event.best_epoch < 0:
            pass                        # no epoch counted as best: History's warning says why
        elif event.best_val_accuracy is None:
            _out(f"no validation set (--val-fraction 0); keeping epoch {event.best_epoch + 1}")
        else:
            _out(f"best validation accuracy {event.best_val_accuracy:.3f} at epoch "
                 f"{event.best_epoch + 1}" + (" (stopped early)" if event.stopped_early else ""))
    for warning in result.history.warnings:
        if warning not in shown:
            _err(f"{PROG}: warning: {warning}")


# --------------------------------------------------------------------------------------------
# evaluate


def _cmd_evaluate(args) -> int:
    import numpy as np

    model_path, root = Path(args.model), Path(args.data)
    classifier, meta = _load_classifier(model_path, args.device)
    cli_extra = (meta.extra or {}).get("cli", {})
    layout = _detect_layout(root)
    _err(f"{root}: " + ("class folders" if layout == "folders" else "label images"))

    explicit = _parse_channels(args.channels)
    probe = _probe_image(root, layout)
    _, _, probe_names = _read_field(probe)
    indices = _model_channels(meta, probe_names, explicit, probe)

    # Class folders are read the way the model's training data was: resized cell crops, or
    # tiles when the model learnt from tiles of fields (label images, or the napari widget).
    trained_layout = cli_extra.get("layout")
    # A model without a record (trained in the widget, or by a script) learnt from tiles of
    # fields: resizing whole images to one tile would feed it something it never saw.
    mode = args.mode or (cli_extra.get("mode", "resize") if trained_layout == "folders"
                         else "tile")
    if layout == "folders":
        _err(f"{PROG}: reading class folders with --mode {mode}")
    dataset = _load_dataset(root, layout, tile_size=meta.tile_size,
                            stride=args.stride if args.stride is not None else cli_extra.get("stride"),
                            mode=mode, channels=indices,
                            class_names=meta.class_names, min_fraction=args.min_fraction,
                            for_model=True)
    if len(dataset) == 0:
        raise CLIError(f"{root}: no labelled samples to evaluate")

    probabilities = []
    chunk = 1024
    with _progress(len(dataset), "evaluating", unit="tile") as bar:
        for start in range(0, len(dataset), chunk):
            probabilities.append(classifier.predict_tiles(dataset.tiles[start:start + chunk]))
            bar.update(min(chunk, len(dataset) - start))
    predicted = np.concatenate(probabilities).argmax(axis=1)
    report = _metrics(dataset.labels, predicted, list(meta.class_names))
    report.update(model=str(model_path), data=str(root), layout=layout)

    if args.json:
        _out(json.dumps(report))
    else:
        _print_report(report)
    return 0


def _metrics(truth, predicted, class_names: list[str]) -> dict:
    """Accuracy, confusion (rows = true, columns = predicted) and per-class precision/recall
    (None where undefined: no sample of / no prediction of that class)."""
    import numpy as np
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (np.asarray(truth), np.asarray(predicted)), 1)
    n = int(confusion.sum())
    per_class = {}
    for i, name in enumerate(class_names):
        true_i, predicted_i, hit = confusion[i].sum(), confusion[:, i].sum(), confusion[i, i]
        per_class[name] = {
            "support": int(true_i),
            "precision": float(hit / predicted_i) if predicted_i else None,
            "recall": float(hit / true_i) if true_i else None,
        }
    return {"accuracy": float(np.trace(confusion) / n) if n else None, "n": n,
            "classes": class_names, "confusion": confusion.tolist(), "per_class": per_class}


def _print_report(report: dict) -> None:
    names = report["classes"]
    width = max(9, *(len(n) for n in names))
    _out(f"accuracy {report['accuracy']:.3f} on {report['n']} samples")
    _out(f"{'class':<{width}}  precision  recall  support")
    for name in names:
        row = report["per_class"][name]
        _out(f"{name:<{width}}  {_format_accuracy(row['precision']):>9}  "
             f"{_format_accuracy(row['recall']):>6}  {row['support']:>7}")
    _out("confusion matrix (rows: true class, columns: predicted):")
    cell = max(*(len(n) for n in names), *(len(str(v)) for row in report["confusion"] for v in row))
    _out(" " * width + "  " + "  ".join(f"{n:>{cell}}" for n in names))
    for name, row in zip(names, report["confusion"]):
        _out(f"{name:<{width}}  " + "  ".join(f"{v:>{cell}}" for v in row))


# --------------------------------------------------------------------------------------------
# predict


def _cmd_predict(args) -> int:
    import numpy as np
    from .inference import write_predictions_csv

    classifier, meta = _load_classifier(Path(args.model), args.device)
    explicit = _parse_channels(args.channels)
    columns: dict[str, list] = {}
    for image_path in map(Path, args.images):
        _, cyx, names = _read_field(image_path)
        cyx = cyx[_model_channels(meta, names, explicit, image_path)]
        prediction = _drive(classifier.predict_field(cyx, stride=args.stride,
                                                     foreground_only=args.foreground),
                            f"classifying {image_path.name}")
        table = prediction.table()
        n_tiles = len(prediction.indices)
        counts = np.bincount(prediction.predicted, minlength=len(meta.class_names))
        _out(f"{image_path}: {n_tiles} tiles - "
             + ", ".join(f"{name} {int(c)}" for name, c in zip(meta.class_names, counts)))
        columns.setdefault("source", []).append(np.full(n_tiles, image_path.name, dtype=object))
        for key, values in table.items():
            columns.setdefault(key, []).append(np.asarray(values))
    if args.out:
        merged = {key: np.concatenate(parts) for key, parts in columns.items()}
        write_predictions_csv(args.out, merged)
        _out(f"predictions of {len(merged['source'])} tiles written to {args.out}")
    return 0


def _drive(generator, description: str):
    """Run an engine generator of InferenceProgress to its return value behind a progress bar."""
    from ._generators import drive
    bar = None

    def show(event) -> None:
        nonlocal bar
        if bar is None:
            bar = _progress(event.total, description, unit="tile")
        bar.n = event.done
        bar.refresh()

    try:
        return drive(generator, show)
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------------------------
# explain


def _cmd_explain(args) -> int:
    import numpy as np
    from . import attribution

    classifier, meta = _load_classifier(Path(args.model), args.device)
    image_path = Path(args.image)
    image, cyx, names = _read_field(image_path)
    cyx = cyx[_model_channels(meta, names, _parse_channels(args.channels), image_path)]
    target = _target_index(args.target, list(meta.class_names))

    attributions = _drive(attribution.explain_field(classifier, cyx, target=target,
                                                    stride=args.stride),
                          f"explaining {image_path.name}")
    attributions = np.ascontiguousarray(attributions, dtype=np.float32)
    out = Path(args.out)
    _write_float_tiff(out, attributions, image.pixel_size, image.unit)
    what = "the predicted class of each tile" if target is None else f"class {meta.class_names[target]}"
    _out(f"gradient x input for {what}: {attributions.shape[-2]}x{attributions.shape[-1]} float32 "
         f"(range {float(attributions.min()):.3g} .. {float(attributions.max()):.3g}) written to {out}")
    return 0


def _target_index(target: str | None, class_names: list[str]) -> int | None:
    """--target: a class name, or its label value 1..K; None = each tile's predicted class."""
    if target is None:
        return None
    if target in class_names:
        return class_names.index(target)
    if target.isdigit() and 1 <= int(target) <= len(class_names):
        return int(target) - 1
    raise CLIError(f"--target {target}: unknown class; the model knows: "
                   + ", ".join(f"{i} {name}" for i, name in enumerate(class_names, start=1)))


def _write_float_tiff(path: Path, array, pixel_size, unit) -> None:
    """ImageJ-compatible float32 TIFF, with the input's pixel size when it has one."""
    import tifffile
    kwargs: dict = {"imagej": True,
                    "metadata": {"axes": "YX" if array.ndim == 2 else "CYX"}}
    if pixel_size:
        kwargs["resolution"] = (1.0 / pixel_size[1], 1.0 / pixel_size[0])
        kwargs["metadata"]["unit"] = _imagej_unit(unit)
    from io import BytesIO

    from ._files import atomic_write
    encoded = BytesIO()          # tifffile needs a named file or a buffer, not a bare fd
    tifffile.imwrite(encoded, array, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: handle.write(encoded.getbuffer()))


def _imagej_unit(unit: str | None) -> str:
    """The ImageJ description is ASCII: microns are spelt "micron" (ImageJ shows µm), any other
    non-ASCII unit with the \\uXXXX escapes ImageJ itself writes."""
    if not unit:
        return "pixel"
    if unit in ("µm", "μm", "um", "micron", "microns"):
        return "micron"
    return unit.encode("ascii", "backslashreplace").decode("ascii").replace("\\x", "\\u00")


# --------------------------------------------------------------------------------------------
# demo


def _cmd_demo(args) -> int:
    return _run_demo(list(args.demo_args))


def _run_demo(argv: list[str]) -> int:
    # Imported here: only `demo` pulls in napari and Qt.
    try:
        from ._demo import main as demo_main
        return int(demo_main(argv) or 0)
    except SystemExit as exit_:      # `cellclf demo --help` or a usage error in the demo's parser
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except ImportError as error:     # napari or a Qt binding missing
        _err(f"{PROG}: error: the demo needs napari with a Qt binding "
             f"(pip install 'napari[all]'): {_one_line(error)}")
        return EXIT_USAGE


# --------------------------------------------------------------------------------------------
# the parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tile fluorescence fields of view, train a small CNN, classify whole fields "
                    "and see why (gradient x input).",
        epilog="Run `cellclf <command> --help` for the options of each command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add_device(p):
        p.add_argument("--device", default="auto",
                       help="auto (GPU when there is one), cpu, cuda, cuda:1, mps (default auto)")

    def add_channels(p, for_model: bool):
        # One value (commas allowed, option repeatable) so it never swallows DATA/IMAGE.
        p.add_argument("--channels", action="append", metavar="CH[,CH...]",
                       help="channels by index (0-based) or name, e.g. --channels 1 or "
                            "--channels DNA,actin"
                            + ("; default: the channels the model was trained on" if for_model
                               else "; default: all"))

    train = commands.add_parser(
        "train", help="train a model on a folder of labelled images",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=DATA_HELP,
        epilog="Ctrl-C stops training after the current batch and saves the best model so far "
               "(exit status 130).")
    train.add_argument("data", metavar="DATA", help="folder of training images (see above)")
    train.add_argument("--out", "-o", required=True, metavar="MODEL",
                       help="model file to write (.safetensors added when missing)")
    train.add_argument("--tile-size", type=int, default=64, metavar="N",
                       help="tile side in pixels (default 64, at least 16)")
    train.add_argument("--stride", type=int, metavar="N",
                       help="step between tiles (default: the tile size, no overlap)")
    train.add_argument("--mode", choices=("resize", "tile"), default="resize",
                       help="class folders: resize each image to one tile, or cut it into tiles "
                            "(default resize; label images are always tiled)")
    train.add_argument("--classes", metavar="A,B,...",
                       help="label images: names of label values 1, 2, ... (default 'class 1', ...)")
    train.add_argument("--min-fraction", type=float, default=0.5, metavar="F",
                       help="label images: painted fraction a tile needs to be used (default 0.5)")
    add_channels(train, for_model=False)
    train.add_argument("--epochs", type=int, default=20, metavar="N", help="default 20")
    train.add_argument("--runs", type=int, default=1, metavar="N",
                       help="independent runs with seeds SEED, SEED+1, ...; the best is kept and "
                            "the spread of validation accuracy reported (default 1)")
    train.add_argument("--seed", type=int, default=0, metavar="N", help="default 0")
    train.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                       help="share held out for validation, whole images when possible "
                            "(default 0.2; 0 = none)")
    train.add_argument("--patience", type=int, default=5, metavar="N",
                       help="early stopping after N epochs without better validation loss "
                            "(default 5; 0 = off)")
    train.add_argument("--arch", choices=("original", "fast"), default="original",
                       help="original: the method's CNN; fast: a smaller one (default original)")
    # Defaults mirror training.TrainConfig (not imported here: --help stays free of torch).
    train.add_argument("--batch-size", type=int, default=32, metavar="N", help="default 32")
    train.add_argument("--balance", choices=("weights", "sampler", "none"), default="weights",
                       help="weights: every class counts equally in the loss, right when the "
                            "labelled ratio is arbitrary; sampler: balanced batches; none: "
                            "plain loss, best accuracy when labels follow the true class ratio "
                            "(default weights)")
    train.add_argument("--lr", type=float, default=1e-3, metavar="F",
                       help="learning rate (default 1e-3)")
    train.add_argument("--no-augment", action="store_true",
                       help="no 90-degree rotations and flips during training")
    train.add_argument("--rotate", type=float, default=0.0, metavar="DEG",
                       help="extra random rotations up to DEG degrees (default 0 = off)")
    train.add_argument("--per-tile-norm", action="store_true",
                       help="normalise each tile on its own (loses absolute brightness)")
    add_device(train)
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser(
        "evaluate", help="accuracy, per-class precision/recall and confusion matrix on labelled data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DATA_HELP + "\n\nDATA may hold only some of the model's classes; class "
                                "folders are matched to the model's classes by name.")
    evaluate.add_argument("model", metavar="MODEL", help="model file (.safetensors)")
    evaluate.add_argument("data", metavar="DATA", help="folder of labelled images (see above)")
    evaluate.add_argument("--json", action="store_true",
                          help="print one JSON object on stdout (progress stays on stderr)")
    evaluate.add_argument("--mode", choices=("resize", "tile"),
                          help="class folders: default the mode the model was trained with")
    evaluate.add_argument("--stride", type=int, metavar="N",
                          help="step between tiles (default as in training)")
    evaluate.add_argument("--min-fraction", type=float, default=0.5, metavar="F",
                          help="label images: painted fraction a tile needs (default 0.5)")
    add_channels(evaluate, for_model=True)
    add_device(evaluate)
    evaluate.set_defaults(handler=_cmd_evaluate)

    predict = commands.add_parser("predict", help="classify every tile of whole fields of view")
    predict.add_argument("model", metavar="MODEL", help="model file (.safetensors)")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="images to classify")
    predict.add_argument("--out", "-o", metavar="CSV",
                         help="write one CSV row per tile (with a source column) to CSV")
    predict.add_argument("--stride", type=int, metavar="N",
                         help="step between tiles (default: the model's tile size)")
    predict.add_argument("--foreground", action="store_true",
                         help="skip background-only tiles")
    add_channels(predict, for_model=True)
    add_device(predict)
    predict.set_defaults(handler=_cmd_predict)

    explain = commands.add_parser(
        "explain", help="gradient x input attribution map of a field, as a float32 TIFF")
    explain.add_argument("model", metavar="MODEL", help="model file (.safetensors)")
    explain.add_argument("image", metavar="IMAGE", help="image to explain")
    explain.add_argument("--out", "-o", required=True, metavar="TIFF",
                         help="attribution map to write (ImageJ float32 TIFF, same height/width)")
    explain.add_argument("--target", metavar="CLASS",
                         help="class name or label value 1..K (default: each tile's predicted class)")
    explain.add_argument("--stride", type=int, metavar="N",
                         help="step between tiles (default: the model's tile size)")
    add_channels(explain, for_model=True)
    add_device(explain)
    explain.set_defaults(handler=_cmd_explain)

    demo = commands.add_parser("demo", help="open napari with sample data and the widget docked",
                               add_help=False)
    demo.add_argument("demo_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cellclf` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        # The demo parses its own options (--auto, --help ...); argparse.REMAINDER would not
        # pass an option that comes first.
        return _run_demo(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:          # --help, --version, usage errors
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        _err(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    except (CLIError, ValueError, OSError) as error:   # ImageReadError, ModelFileError are ValueErrors
        _err(f"{PROG}: error: {_one_line(error)}")
        return EXIT_USAGE
    except Exception as error:           # a bug, not a user mistake: say so, briefly
        if os.environ.get("CELLCLF_DEBUG"):
            raise
        _err(f"{PROG}: error: unexpected {type(error).__name__}: {_one_line(error)} "
             "(set CELLCLF_DEBUG=1 for the traceback)")
        return 1


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text


if __name__ == "__main__":
    sys.exit(main())
