"""The layers a classification shows, built in the worker and added one per event-loop turn.

Adding a 2048² field's results on the main thread froze the viewer for seconds: the arrays
(tile ids, confidence, uncertainty maps), the colormap and, above all, napari's first Labels
layer (its first construction warms up napari's label code) were all made in the job's result
callback. Here the worker makes all of it, napari layer objects included (plain models until
they join a viewer), and hands each layer to the main thread as its own `DisplayStep`: the
main thread only inserts (or refills) one layer per step, and the worker waits for each step to
be applied before sending the next, so Qt draws and handles input between them.

Layers (all over their field, found again by `metadata["cellclf"]` role and field):
- "<field> classes": each tile its own label value (the tile table's `index`, from 1), coloured
  by its predicted class; `features` carry class, confidence, uncertainty, probabilities.
- "<field> confidence": the predicted class's probability per tile (hidden at first).
- "<field> uncertainty": uncertainty.scores per tile (entropy; ensemble disagreement for an
  ensemble), hidden at first; "Next uncertain" (`_review.py`) reads the classes layer's column.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap

from .. import uncertainty
from ..tiling import extract_tiles, tile_values_to_map
from ._fields import ROLE_CLASSES, ROLE_CONFIDENCE, Field, derived_metadata, find_derived

ROLE_UNCERTAINTY = "uncertainty"
TRANSPARENT = (0.0, 0.0, 0.0, 0.0)
STAGES = (ROLE_CLASSES, ROLE_CONFIDENCE, ROLE_UNCERTAINTY)
# How long the worker waits for the main thread to apply one step (a closed dock applies none:
# the job's result callback then shows what is left).
ACK_TIMEOUT_S = 5.0


@dataclass
class ResultLayers:
    """Everything the result layers of one field need, made off the main thread."""

    field_id: str
    field_name: str
    prediction: Any  # inference.FieldPrediction
    method: str  # uncertainty method used
    scores: np.ndarray  # (N,) uncertainty per classified tile
    built: dict[str, Any]  # role -> napari layer, not yet in a viewer
    applied: set[str] = field(default_factory=set)


@dataclass
class DisplayStep:
    """One layer of `results` to put into the viewer (main thread); `ack` tells the worker."""

    results: ResultLayers
    role: str
    ack: threading.Event


def tile_scores(prediction, classifier=None, image=None) -> tuple[str, np.ndarray]:
    """(method, per-tile uncertainty): ensemble disagreement when the model is an ensemble and
    the field's pixels are given (each member classifies the tiles again), else entropy."""
    if len(prediction.indices) == 0:
        return uncertainty.DEFAULT_METHOD, np.zeros(0)
    if classifier is not None and image is not None and uncertainty.member_models(classifier.model):
        tiles = extract_tiles(np.asarray(image, np.float32), prediction.grid, prediction.indices)
        members = uncertainty.member_probabilities(classifier, tiles)
        return "disagreement", uncertainty.disagreement(members)
    return uncertainty.DEFAULT_METHOD, uncertainty.entropy(prediction.probabilities)


def prediction_features(prediction, scores: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One row per classified tile; napari matches rows to label values through `index`."""
    table = prediction.table()
    features = {
        "index": np.asarray(table["index"]),  # = the label value, counted from 1 as in the CSV
        "class": np.asarray(table["class_name"]),
        "confidence": np.round(np.asarray(table["confidence"], dtype=float), 3),
    }
    if scores is not None:
        features["uncertainty"] = np.round(np.asarray(scores, dtype=float), 3)
    features["row"] = np.asarray(table["row"])
    features["col"] = np.asarray(table["col"])
    for key, column in table.items():
        if key.startswith("p_"):
            features[key] = np.round(np.asarray(column, dtype=float), 3)
    return features


def build_results(
    field_id: str,
    field_name: str,
    prediction,
    class_colors: Sequence[str],
    layer_kwargs: dict,
    classifier=None,
    image=None,
) -> ResultLayers:
    """Worker thread: arrays, colormap, features and the three napari layers of one field."""
    method, scores = tile_scores(prediction, classifier, image)
    grid = prediction.grid
    indices = np.asarray(prediction.indices)
    values = (indices + 1).astype(np.uint32)
    dtype = np.uint16 if grid.n_tiles + 1 < 2**16 else np.uint32
    tile_ids = np.asarray(tile_values_to_map(values, grid, indices, fill=0)).astype(dtype, copy=False)
    color_dict: dict = {None: TRANSPARENT, 0: TRANSPARENT}
    color_dict.update({int(v): class_colors[int(k)] for v, k in zip(values, prediction.predicted)})
    classes = Labels(
        tile_ids,
        name=f"{field_name} classes",
        opacity=0.45,
        features=prediction_features(prediction, scores),
        colormap=DirectLabelColormap(color_dict=color_dict),
        metadata=derived_metadata(field_id, ROLE_CLASSES),
        **layer_kwargs,
    )
    classes.editable = False
    confidence = Image(
        np.asarray(prediction.confidence_map(), dtype=np.float32),
        name=f"{field_name} confidence",
        colormap="magma",
        contrast_limits=(0, 1),
        opacity=0.7,
        visible=False,
        metadata=derived_metadata(field_id, ROLE_CONFIDENCE),
        **layer_kwargs,
    )
    uncertain = Image(
        tile_values_to_map(scores.astype(np.float32), grid, indices, fill=np.float32(0)).astype(np.float32),
        name=f"{field_name} uncertainty",
        colormap="viridis",
        contrast_limits=(0, 1),
        opacity=0.7,
        visible=False,
        metadata={**derived_metadata(field_id, ROLE_UNCERTAINTY)},
        **layer_kwargs,
    )
    uncertain.metadata["cellclf"]["method"] = method
    built = {ROLE_CLASSES: classes, ROLE_CONFIDENCE: confidence, ROLE_UNCERTAINTY: uncertain}
    return ResultLayers(field_id, field_name, prediction, method, scores, built)


def display_steps(results: ResultLayers, stop: threading.Event | None = None, unanswered: list | None = None):
    """Worker thread: yield one DisplayStep per layer, each once the previous one was applied.
    A step nobody acknowledged in ACK_TIMEOUT_S (the dock was closed: nothing applies steps) is
    noted in `unanswered` (one list per job), and the job then sends no more steps and waits no
    more: its result callback shows what is left (`finish`)."""
    unanswered = [] if unanswered is None else unanswered
    for role in results.built:  # STAGES for tiles; object mode builds its own
        if (stop is not None and stop.is_set()) or unanswered:
            return
        step = DisplayStep(results, role, threading.Event())
        yield step
        if not step.ack.wait(ACK_TIMEOUT_S):
            unanswered.append(step)


def apply_step(viewer, fields: Sequence[Field], step: DisplayStep) -> None:
    """Main thread: put one prepared layer into the viewer (or refill the existing one)."""
    try:
        fld = next((f for f in fields if f.id == step.results.field_id), None)
        if fld is not None:
            apply_role(viewer, fld, step.results, step.role)
    finally:
        step.ack.set()


def finish(viewer, fld: Field | None, results: ResultLayers) -> None:
    """Main thread, at the job's end: the layers no DisplayStep applied (dock closed meanwhile)."""
    if fld is None:
        return
    for role in results.built:
        if role not in results.applied:
            apply_role(viewer, fld, results, role)


def apply_role(viewer, fld: Field, results: ResultLayers, role: str) -> None:
    from ._layers import keep_selection

    built = results.built[role]
    layer = find_derived(viewer.layers, fld.id, role)
    if layer is None:
        built.scale, built.translate = fld.scale, fld.translate  # the field may have moved
        with keep_selection(viewer):
            viewer.layers.append(built)
        layer = built
    else:
        if isinstance(built, Labels):  # tile classes, or object mode's cell classes
            layer.data = built.data
            layer.colormap = built.colormap
            layer.features = built.features
        else:
            layer.data = built.data
            layer.contrast_limits = (0, 1)
        layer.metadata["cellclf"].update(built.metadata["cellclf"])
    results.applied.add(role)


def show_all(viewer, fld: Field, prediction, class_colors: Sequence[str]):
    """Build and show every result layer at once (main thread), for callers without a worker."""
    results = build_results(fld.id, fld.name, prediction, class_colors, fld.layer_kwargs())
    finish(viewer, fld, results)
    return find_derived(viewer.layers, fld.id, ROLE_CLASSES), find_derived(
        viewer.layers, fld.id, ROLE_CONFIDENCE
    )
