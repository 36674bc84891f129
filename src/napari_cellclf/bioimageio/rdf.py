"""The package's description: preprocessing from the stored normalisation, axes with the pixel
size, training details, the trust summary, config.cellclf, the README and the cover image."""

from __future__ import annotations

import io as io_module
from pathlib import Path
from typing import Any

import numpy as np

from .common import CELLCLF_FILE, BioimageioError


def _preprocessing(meta, v0_5) -> tuple[list, list[str]]:
    """scale_linear / scale_range steps from the stored normalisation, and notes."""
    norm = meta.normalization
    notes: list[str] = []
    steps: list = [v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))]
    if norm.get("mode", "dataset") == "dataset":
        low = [float(v) for v in norm["low"]]
        high = [float(v) for v in norm["high"]]
        gain, offset = [], []
        for lo, hi in zip(low, high):
            g = 1.0 / (hi - lo) if hi > lo else 1.0  # a flat channel is only shifted, as we do
            gain.append(g)
            offset.append(-lo * g)
        if any(g != 1.0 for g in gain) or any(o != 0.0 for o in offset):
            steps.append(
                v0_5.ScaleLinearDescr(
                    kwargs=v0_5.ScaleLinearAlongAxisKwargs(
                        axis=v0_5.AxisId("channel"), gain=gain, offset=offset
                    )
                )
            )
    else:
        low_p, high_p = (float(p) for p in norm.get("percentiles", (1.0, 99.8)))
        if high_p <= 1.0:
            raise BioimageioError(f"bioimage.io needs an upper percentile above 1, this model uses {high_p}")
        steps.append(
            v0_5.ScaleRangeDescr(
                kwargs=v0_5.ScaleRangeKwargs(
                    axes=[v0_5.AxisId("y"), v0_5.AxisId("x")],
                    min_percentile=low_p,
                    max_percentile=high_p,
                    eps=1e-12,
                )
            )
        )
        notes.append(
            "per-tile normalisation: bioimage.io's scale_range divides by (high - low + eps); "
            "napari-cellclf leaves a tile channel whose percentiles coincide unscaled, so such "
            "(almost empty) tiles can get other probabilities"
        )
    return steps, notes


def _space_axes(meta, v0_5) -> list:
    """y and x of the tile, with the training pixel size (in µm) when the model knows it."""
    from ..pixelsize import in_micrometres

    size_um = in_micrometres(getattr(meta, "pixel_size", None))
    return [
        v0_5.SpaceInputAxis(
            id=v0_5.AxisId(name),
            size=int(meta.tile_size),
            unit="micrometer" if size_um else None,
            scale=size_um[i] if size_um else 1.0,
        )
        for i, name in enumerate(("y", "x"))
    ]


def _training_details(meta, v0_5):
    config = (meta.extra or {}).get("train_config") or {}
    norm = meta.normalization
    if norm.get("mode", "dataset") == "dataset":
        how = "per channel (x - low) / (high - low) with low/high from the training tiles"
    else:
        how = f"per tile and channel, percentiles {norm.get('percentiles')}"
    augment = "90 degree rotations and flips" if config.get("augment", True) else "none"
    if config.get("rotate_degrees"):
        augment += f", small rotations up to {config['rotate_degrees']} degrees"
    regularisation = []
    if config.get("weight_decay"):
        regularisation.append(f"decoupled weight decay {config['weight_decay']}")
    if config.get("label_smoothing"):
        regularisation.append(f"label smoothing {config['label_smoothing']}")
    kwargs: dict[str, Any] = {"training_preprocessing": f"Normalisation: {how}. Augmentation: {augment}."}
    if config:
        kwargs.update(
            training_epochs=config.get("epochs"),
            training_batch_size=config.get("batch_size"),
            initial_learning_rate=config.get("learning_rate"),
            learning_rate_schedule=config.get("lr_schedule"),
            loss_function="torch.nn.CrossEntropyLoss",
            optimizer="torch.optim.AdamW" if config.get("weight_decay") else "torch.optim.Adam",
            regularization=", ".join(regularisation) or None,
        )
    return v0_5.TrainingDetails(**{k: v for k, v in kwargs.items() if v is not None})


def _trust_summary(meta) -> dict:
    """What the model file knows about how far to trust it: per run the held-out accuracy beside
    balanced accuracy and chance, memorisation messages, training warnings, and the results
    other commands stored in `extra` (evaluation, baseline, crosstest)."""
    history = meta.history or {}
    out: dict = {"chance": 1.0 / meta.n_classes}
    runs = []
    for run in history.get("runs") or []:
        best = run.get("best_epoch", -1)
        balanced = run.get("val_balanced_accuracy") or []
        runs.append(
            {
                "seed": run.get("seed"),
                "epochs_completed": run.get("epochs_completed"),
                "best_epoch": best,
                "val_accuracy": run.get("best_val_accuracy"),
                "val_balanced_accuracy": balanced[best] if 0 <= best < len(balanced) else None,
                "memorisation": run.get("memorisation"),
            }
        )
    if runs:
        out["runs"] = runs
        summary = history.get("summary") or {}
        if summary.get("best_run") is not None:
            out["best_run"] = summary["best_run"]
    if history.get("warnings"):
        out["warnings"] = list(history["warnings"])
    for key in ("evaluation", "baseline", "crosstest"):
        if (meta.extra or {}).get(key) is not None:
            out[key] = meta.extra[key]
    return out


def _cellclf_config(meta) -> dict:
    return {
        "model_file": CELLCLF_FILE,
        "class_names": list(meta.class_names),
        "class_colors": list(meta.class_colors),
        "channel_names": list(meta.channel_names),
        "tile_size": int(meta.tile_size),
        "architecture": meta.architecture,
        "normalization": dict(meta.normalization),
        "pixel_size": getattr(meta, "pixel_size", None),
        "package_version": meta.package_version,
    }


def _architecture_text(meta) -> str:
    members = int(getattr(meta, "n_members", 1) or 1)
    text = (
        f"napari-cellclf '{meta.architecture}' tile CNN (3x3 conv + ReLU blocks with 2x2 "
        f"max-pooling, dense head), {meta.tile_size} px tiles, {meta.in_channels} channel(s), "
        f"{meta.n_classes} classes, softmax output"
    )
    if members > 1:
        text += f"; ensemble of {members} members, output = mean of their probabilities"
    return text


def _limitations(meta, notes: list[str]) -> str:
    lines = [
        f"Trained on {meta.tile_size} px tiles of {', '.join(meta.channel_names)}; other "
        "channels, stainings or magnifications are outside what it has seen."
    ]
    pixel = getattr(meta, "pixel_size", None)
    if pixel:
        lines.append(
            f"Training pixel size {pixel['y']:g} x {pixel['x']:g} {pixel.get('unit') or ''}: "
            "images at another pixel size should be resampled first."
        )
    lines += notes
    return " ".join(lines)


def _readme(meta, title: str, text: str, trust: dict, notes: list[str], class_ids: list[str]) -> str:
    norm = meta.normalization
    lines = [
        f"# {title}",
        "",
        text,
        "",
        "## Input",
        "",
        f"- raw tiles `(batch, channel, y, x)`, {meta.tile_size} x {meta.tile_size} px, channels: "
        f"{', '.join(meta.channel_names)}",
        f"- normalisation (done by the package's preprocessing): {norm.get('mode', 'dataset')} mode",
    ]
    pixel = getattr(meta, "pixel_size", None)
    if pixel:
        lines.append(f"- training pixel size: {pixel['y']:g} x {pixel['x']:g} {pixel.get('unit') or ''}")
    lines += ["", "## Output", "", "Per-class probabilities `(batch, class)`, summing to 1:", ""]
    lines += [f"- `{cid}`: {name}" for cid, name in zip(class_ids, meta.class_names)]
    lines += ["", "## Validation", ""]
    runs = trust.get("runs") or []
    if any(r.get("val_accuracy") is not None for r in runs):
        lines += [
            "Held-out validation tiles (never trained on), best epoch of each training run; "
            f"chance is {trust['chance']:.3f} (1 / {meta.n_classes} classes):",
            "",
            "| run | seed | accuracy | balanced accuracy | epochs |",
            "| --- | --- | --- | --- | --- |",
        ]
        for i, run in enumerate(runs):
            lines.append(
                f"| {i}{' (kept)' if trust.get('best_run') == i else ''} | {run['seed']} | "
                f"{_number(run['val_accuracy'])} | {_number(run['val_balanced_accuracy'])} | "
                f"{run['epochs_completed']} |"
            )
        lines += [f"- run {i}: {r['memorisation']}" for i, r in enumerate(runs) if r.get("memorisation")]
    else:
        lines.append("This model file carries no held-out validation results.")
    for key in ("evaluation", "baseline", "crosstest"):
        if trust.get(key) is not None:
            lines += ["", f"Stored {key} results: `config.bioimageio.cellclf_trust.{key}` in rdf.yaml."]
    for warning in trust.get("warnings") or []:
        lines.append(f"- training warning: {warning}")
    lines += [
        "",
        "To validate on your own data: label some tiles, run `cellclf evaluate`, and compare "
        "balanced accuracy with chance (1 / number of classes).",
        "",
        "## Limitations",
        "",
        _limitations(meta, notes),
        "",
        "## Reproduce in napari-cellclf",
        "",
        f"`cellclf import PACKAGE --out model.safetensors` gives back the original model file "
        f"(`{CELLCLF_FILE}`, attached).",
    ]
    return "\n".join(lines) + "\n"


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _write_cover(path: Path, tiles: np.ndarray, probabilities: np.ndarray, meta) -> None:
    """2:1 cover: up to four test tiles (first channel) with the predicted class."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n = min(4, len(tiles))
    figure = Figure(figsize=(6, 3), dpi=100)
    for i in range(4):
        axis = figure.add_axes((i / 4 + 0.01, 0.12, 0.23, 0.7))
        axis.set_axis_off()
        if i >= n:
            continue
        plane = tiles[i, 0].astype(np.float64)
        low, high = np.percentile(plane, (1, 99.5))
        axis.imshow(
            np.clip((plane - low) / (high - low if high > low else 1.0), 0, 1), cmap="magma", vmin=0, vmax=1
        )
        k = int(np.argmax(probabilities[i]))
        axis.set_title(
            f"{_short(meta.class_names[k])}\np={probabilities[i, k]:.2f}",
            fontsize=9,
            color=meta.class_colors[k],
        )
    figure.text(0.5, 0.93, "napari-cellclf tile classifier", ha="center", fontsize=11, color="white")
    figure.patch.set_facecolor("#262930")
    buffer = io_module.BytesIO()
    figure.savefig(buffer, format="png", facecolor=figure.get_facecolor())
    path.write_bytes(buffer.getvalue())
