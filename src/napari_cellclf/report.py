"""An evaluation report of any model on any labelled tiles: one HTML file, metrics.json, figures.

    make_report(classifier, dataset, "DIR")   # evaluate, check, draw, write
writes DIR/report.html (one self-contained file: every figure embedded as a base64 PNG, no
scripts, no links; opens in any browser), DIR/metrics.json, DIR/confusion.png and
DIR/gallery.png (the method's panel: the most confidently right and wrong tiles, each titled with
true class, predicted class and confidence in green or red, beside its attribution map).
`write_report` does the writing for numbers computed elsewhere. No Qt: figures are drawn with
matplotlib's Agg canvas on Figure objects (never pyplot, whose global state would leak into
napari). Every file is written atomically (_files.atomic_write).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ._files import atomic_write, json_ready
from .evaluation import ClassificationMetrics
from .gallery import GALLERY_EACH, GalleryTile, gallery_indices, gallery_tiles, split_gallery

__all__ = ["GALLERY_EACH", "gallery_indices", "gallery_figure", "make_report", "write_report"]

# Channel colours of the gallery's composites (first channel blue like a nuclear stain).
_CHANNEL_COLOURS = [
    (0.25, 0.45, 1.0),
    (0.1, 1.0, 0.2),
    (1.0, 0.2, 1.0),
    (1.0, 0.9, 0.1),
    (0.1, 0.9, 0.9),
    (1.0, 0.5, 0.1),
]
RIGHT_COLOUR = "#1a9641"
WRONG_COLOUR = "#d7191c"
DIHEDRAL_TILES = 2048  # tiles predicted under all 8 rotations/flips (8 x the cost)


# ------------------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], title: str = ""):
    """Rows = true class, columns = predicted; colour = share of the true class, text = count."""
    confusion = np.asarray(confusion)
    k = len(class_names)
    side = min(12.0, 2.5 + 0.7 * k)
    figure = _new_figure(side + 1.2, side)
    axes = figure.add_subplot(1, 1, 1)
    support = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, support, out=np.zeros(confusion.shape, float), where=support > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            axes.text(
                j,
                i,
                f"{int(confusion[i, j])}\n{shares[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=8 if k > 6 else 10,
                color="white" if shares[i, j] > 0.6 else "black",
            )
    axes.set_xticks(range(k), [str(n) for n in class_names], rotation=45, ha="right")
    axes.set_yticks(range(k), [str(n) for n in class_names])
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title or "confusion matrix (share of each true class)")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return figure


def composite(tile_cyx: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(C, T, T) raw tile -> (T, T, 3) RGB in 0..1: grey for one channel, else coloured sum."""
    tile = np.asarray(tile_cyx, dtype=np.float32)
    span = np.where(high > low, high - low, 1.0).reshape(-1, 1, 1)
    scaled = np.clip((tile - low.reshape(-1, 1, 1)) / span, 0, 1)
    if len(tile) == 1:
        return np.repeat(scaled[0][..., None], 3, axis=2)
    rgb = np.zeros(tile.shape[1:] + (3,), dtype=np.float32)
    for c, plane in enumerate(scaled):
        rgb += plane[..., None] * np.asarray(_CHANNEL_COLOURS[c % len(_CHANNEL_COLOURS)])
    return np.clip(rgb, 0, 1)


def gallery_figure(
    tiles: np.ndarray,
    truth: np.ndarray,
    probabilities: np.ndarray,
    attributions: np.ndarray | None,
    class_names: Sequence[str],
    right: np.ndarray,
    wrong: np.ndarray,
    per_row: int = 3,
):
    """The panel of classified tiles: each tile titled 'true X / predicted Y (p %)' in green
    (right) or red (wrong), its attribution map (summed over channels; red = evidence for the
    predicted class, blue = against) beside it. `attributions` are (len(right) + len(wrong),
    C or 1, T, T) in that order, or None for images only."""
    chosen = np.concatenate([right, wrong]).astype(np.int64)
    panels = 2 if attributions is not None else 1
    n_rows = max(1, math.ceil(len(right) / per_row)) + max(1, math.ceil(len(wrong) / per_row))
    figure = _new_figure(per_row * panels * 1.9, n_rows * 2.2 + 0.4)
    if len(chosen):
        sample = np.asarray(tiles)[chosen].astype(np.float32)
        low = np.percentile(sample, 1, axis=(0, 2, 3))
        high = np.percentile(sample, 99.8, axis=(0, 2, 3))
    grid = figure.add_gridspec(n_rows, per_row * panels)
    predicted = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, int)

    def place(block: np.ndarray, first_row: int, offset: int, label: str) -> None:
        if len(block) == 0:
            axes = figure.add_subplot(grid[first_row, :])
            axes.axis("off")
            axes.text(0.5, 0.5, f"no {label} tiles", ha="center", va="center", fontsize=11)
            return
        for n, index in enumerate(block):
            row, col = first_row + n // per_row, (n % per_row) * panels
            correct = predicted[index] == truth[index]
            colour = RIGHT_COLOUR if correct else WRONG_COLOUR
            axes = figure.add_subplot(grid[row, col])
            axes.imshow(composite(tiles[index], low, high), interpolation="nearest")
            axes.set_title(
                f"true {class_names[truth[index]]}\npredicted "
                f"{class_names[predicted[index]]} {probabilities[index].max():.0%}",
                color=colour,
                fontsize=8,
            )
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_color(colour)
                spine.set_linewidth(2.5)
            if attributions is not None:
                amap = np.asarray(attributions[offset + n]).sum(axis=0)
                limit = float(np.percentile(np.abs(amap), 99.5)) or 1.0
                side = figure.add_subplot(grid[row, col + 1])
                side.imshow(amap, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
                side.set_title("attribution", fontsize=8)
                side.set_xticks([])
                side.set_yticks([])

    right_rows = max(1, math.ceil(len(right) / per_row))
    place(right, 0, 0, "correctly classified")
    place(wrong, right_rows, len(right), "misclassified")
    figure.suptitle("most confident right (green) and wrong (red) tiles", fontsize=10)
    figure.tight_layout()
    return figure


# ------------------------------------------------------------------------------------- writing


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def write_report(
    out_dir: str | Path,
    metrics: ClassificationMetrics,
    *,
    tiles: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    attributions: np.ndarray | None = None,
    gallery: Sequence[GalleryTile] | tuple[np.ndarray, np.ndarray] | None = None,
    dihedral_agreement: float | None = None,
    attribution: dict | None = None,
    title: str = "Evaluation report",
    details: dict | None = None,
) -> dict:
    """Write DIR/report.html, metrics.json, confusion.png and gallery.png (the gallery only
    when `tiles`, `truth` and `probabilities` are given; `gallery` = gallery.gallery_tiles (or
    (right, wrong) indices), `attributions` their maps, right ones first). Returns the
    metrics.json content.

    `attribution` is AttributionChecks.to_dict(); `details` (model, data, ...) go into
    metrics.json and the report's header."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(metrics.class_names)
    document = metrics.to_dict()
    document["dihedral_agreement"] = dihedral_agreement
    document["attribution"] = (
        dict(attribution)
        if attribution is not None
        else {
            "randomisation_similarity": None,
            "gradient_randomisation_similarity": None,
            "foreground_share": None,
            "border_share": None,
            "warnings": [],
        }
    )
    document.update(details or {})
    document["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")

    figures: dict[str, bytes] = {}
    figures["confusion.png"] = png_bytes(confusion_figure(metrics.confusion, names))
    if tiles is not None and truth is not None and probabilities is not None:
        if gallery is None or isinstance(gallery, tuple):
            right, wrong = gallery if gallery is not None else gallery_indices(truth, probabilities)
            predicted = probabilities.argmax(axis=1)
            entries = [
                {
                    "index": int(i),
                    "true": names[int(truth[i])],
                    "predicted": names[int(predicted[i])],
                    "confidence": float(probabilities[i].max()),
                    "correct": bool(predicted[i] == truth[i]),
                }
                for i in np.concatenate([right, wrong])
            ]
        else:
            right, wrong = split_gallery(gallery)
            entries = [tile.to_dict() for tile in gallery]
        figures["gallery.png"] = png_bytes(
            gallery_figure(tiles, np.asarray(truth), probabilities, attributions, names, right, wrong)
        )
        document["gallery"] = entries
    document["figures"] = sorted(figures)
    document = json_ready(document)

    for name, data in figures.items():
        _write_bytes(out / name, data)
    _write_bytes(out / "metrics.json", (json.dumps(document, indent=2) + "\n").encode("utf-8"))
    _write_bytes(out / "report.html", render_html(document, figures, title).encode("utf-8"))
    return document


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _number(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_html(document: dict, figures: dict[str, bytes], title: str) -> str:
    """One self-contained HTML page: inline CSS, figures as data: URIs, nothing fetched."""
    e = html.escape
    rows = []

    def row(label, value):
        rows.append(f"<tr><th>{e(label)}</th><td>{e(str(value))}</td></tr>")

    interval = document.get("balanced_accuracy_interval")
    acc_interval = document.get("accuracy_interval")
    row("tiles", document.get("n"))
    row(
        "accuracy",
        f"{_percent(document.get('accuracy'))}"
        + (
            f" (95% interval {_percent(acc_interval[0])}-{_percent(acc_interval[1])})" if acc_interval else ""
        ),
    )
    row("majority class share (accuracy of always guessing it)", _percent(document.get("majority")))
    row(
        "balanced accuracy",
        f"{_percent(document.get('balanced_accuracy'))}"
        + (f" (95% interval {_percent(interval[0])}-{_percent(interval[1])})" if interval else ""),
    )
    row("chance (1/K for balanced accuracy)", _percent(document.get("chance")))
    row("better than chance", "yes" if document.get("better_than_chance") else "no")
    row("rotation/flip agreement (same class under all 8)", _percent(document.get("dihedral_agreement")))
    if document.get("mean_confidence") is not None:
        row("mean confidence", _percent(document.get("mean_confidence")))

    verdict = document.get("verdict")
    verdict_html = (
        f'<p class="verdict bad">{e(verdict)}</p>'
        if verdict
        else '<p class="verdict good">Clearly better than chance on these tiles '
        "(the 95% interval of balanced accuracy lies above chance).</p>"
    )

    cautions = document.get("warnings") or []
    if cautions:
        verdict_html += '<ul class="warnings">' + "".join(f"<li>{e(w)}</li>" for w in cautions) + "</ul>"

    per_class = [
        ("<tr><th>class</th><th>precision</th><th>recall</th><th>support</th><th>predicted</th></tr>")
    ]
    for name in document.get("classes", []):
        values = document["per_class"][name]
        per_class.append(
            f"<tr><td>{e(name)}</td><td>{_percent(values['precision'])}</td>"
            f"<td>{_percent(values['recall'])}</td><td>{values['support']}</td>"
            f"<td>{values['predicted']}</td></tr>"
        )

    attribution = document.get("attribution") or {}
    checks = []
    for label, key, kind in (
        (
            "rank correlation with a random-weight network, |gradient x input|",
            "randomisation_similarity",
            "number",
        ),
        ("the same for the plain gradient", "gradient_randomisation_similarity", "number"),
        ("share of attribution on foreground (cells)", "foreground_share", "percent"),
        ("share of pixels that are foreground", "foreground_pixel_share", "percent"),
        (
            f"share of attribution on the outer {attribution.get('border_px', 2)} px",
            "border_share",
            "percent",
        ),
        ("share of pixels in that border", "border_pixel_share", "percent"),
    ):
        if key in attribution:
            value = attribution.get(key)
            shown = _percent(value) if kind == "percent" else _number(value)
            checks.append(f"<tr><th>{e(label)}</th><td>{e(shown)}</td></tr>")
    warnings = attribution.get("warnings") or []
    warnings_html = (
        ('<ul class="warnings">' + "".join(f"<li>{e(w)}</li>" for w in warnings) + "</ul>")
        if warnings
        else "<p>No attribution warnings.</p>"
    )

    header = []
    for key in ("model", "data", "created"):
        if document.get(key):
            header.append(f"<div><b>{e(key)}</b>: {e(str(document[key]))}</div>")

    def image(name: str, alt: str) -> str:
        if name not in figures:
            return ""
        data = base64.b64encode(figures[name]).decode("ascii")
        return f'<figure><img alt="{e(alt)}" src="data:image/png;base64,{data}"></figure>'

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }}
.verdict {{ padding: 0.8em; border-radius: 4px; font-weight: bold; }}
.bad {{ background: #fde0dd; color: #a50f15; }} .good {{ background: #e5f5e0; color: #006d2c; }}
.warnings li {{ color: #a50f15; margin-bottom: 0.4em; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{e(title)}</h1>
{"".join(header)}
{verdict_html}
<h2>Metrics</h2>
<table>{"".join(rows)}</table>
<h2>Per class</h2>
<table>{"".join(per_class)}</table>
<h2>Confusion matrix</h2>
{image("confusion.png", "confusion matrix")}
<h2>Attribution checks</h2>
<table>{"".join(checks)}</table>
{warnings_html}
<h2>Gallery</h2>
{image("gallery.png", "most confidently right and wrong tiles with their attribution maps")}
</body></html>
"""


# --------------------------------------------------------------------------------- everything


def make_report(
    classifier,
    dataset,
    out_dir: str | Path,
    *,
    method: str = "gradient_x_input",
    max_check_tiles: int = 256,
    seed: int = 0,
    each: int = GALLERY_EACH,
    details: dict | None = None,
    title: str = "Evaluation report",
) -> dict:
    """Evaluate `classifier` (inference.Classifier) on a labelled data.TileDataset, run the
    rotation/flip and attribution checks, and write the report (see `write_report`).
    `method` ("gradient_x_input" | "smoothgrad") draws the gallery's maps."""
    import torch

    from . import attribution as attribution_module
    from .evaluation import dihedral_agreement, evaluate

    result = evaluate(classifier, dataset)
    tiles = dataset.tiles
    checks = attribution_module.attribution_checks(classifier, tiles, max_tiles=max_check_tiles, seed=seed)
    if len(tiles) > DIHEDRAL_TILES:
        sample = np.sort(np.random.default_rng(seed).choice(len(tiles), DIHEDRAL_TILES, replace=False))
    else:
        sample = np.arange(len(tiles))
    agreement = dihedral_agreement(classifier, tiles[sample]) if len(sample) else None
    gallery = gallery_tiles(dataset, result.truth, result.probabilities, classifier.class_names, each)
    chosen = np.concatenate(split_gallery(gallery))
    maps = None
    if len(chosen):
        target = torch.from_numpy(result.predicted[chosen])
        maps = attribution_module.tile_attributions(classifier, tiles[chosen], target, method=method)
    info = {"dihedral_tiles": len(sample), "gallery_method": method}
    info.update(details or {})
    return write_report(
        out_dir,
        result.metrics,
        tiles=tiles,
        truth=result.truth,
        probabilities=result.probabilities,
        attributions=maps,
        gallery=gallery,
        dihedral_agreement=agreement,
        attribution=checks.to_dict(),
        title=title,
        details=info,
    )
