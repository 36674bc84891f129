"""Object mode in the widget: cells from a segmentation instead of a tile grid.

Any napari Labels layer of instance masks (Cellpose, StarDist, a threshold; 0 = background, each
other value one cell) of a field's size can be chosen as that field's objects (the "Objects"
column of the Fields table). Then each cell is one tile centred on it, a stroke or a click inside
a cell on "<field> labels" labels the whole cell (the majority painted class inside it), training
cuts one tile per labelled cell, and classifying colours each cell by its predicted class in
"<field> cell classes", whose `features` are the engine's per-object table, the rows the CSV export
writes. Every rule (centring, majority, blanking, the table) is `objects.py`'s; this module
reads layers, keeps the choice per session, and draws.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from napari.layers import Labels
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtWidgets import QCheckBox, QComboBox, QGroupBox, QVBoxLayout, QWidget

from ..objects import (
    ObjectIndex,
    ObjectPrediction,
    check_masks,
    classify_objects,
    index_objects,
    model_settings,
)
from ..options import BLANK_BACKGROUND, MASK_CHANNEL
from ._fields import Field, derived_metadata, find_derived, role_of
from ._layers import keep_selection
from ._qt import Links, alive_only, note_label, signals_blocked
from ._result_layers import STAGES, TRANSPARENT, ResultLayers

ROLE_CELLS = "cells"  # the results layer of object mode: instance ids coloured by class
ROLE_LABELLED_CELLS = "labelled cells"  # outlines of the cells training receives
NO_OBJECTS_TEXT = "none (tiles)"


@dataclass
class ObjectChoices:
    """Which Labels layer (by napari's `unique_id`) holds each field's objects, and how object
    tiles are cut for training. Kept per session, so a re-opened dock shows the same choices."""

    layers: dict[str, Any] = field(default_factory=dict)  # field id -> Labels layer unique_id
    blank_background: bool = BLANK_BACKGROUND.default
    mask_channel: bool = MASK_CHANNEL.default


_CHOICES: "weakref.WeakKeyDictionary[Any, ObjectChoices]" = weakref.WeakKeyDictionary()


def choices_for(session) -> ObjectChoices:
    choices = _CHOICES.get(session)
    if choices is None:
        choices = _CHOICES[session] = ObjectChoices()
    return choices


def candidate_layers(viewer, fld: Field) -> list:
    """Labels layers that can be a field's objects: 2-D, the field's size, not made by us, not
    a ground truth of classes (the sample data's: one value per class, not per cell)."""
    return [
        layer
        for layer in viewer.layers
        if isinstance(layer, Labels)
        and role_of(layer) is None
        and not (layer.metadata.get("cellclf") or {}).get("ground_truth")
        and layer.data.ndim == 2
        and tuple(layer.data.shape) == tuple(fld.shape)
    ]


def objects_layer(session, viewer, fld: Field):
    """The Labels layer chosen as the field's objects, None in tile mode (also when that layer
    was deleted or no longer fits the field)."""
    chosen = choices_for(session).layers.get(fld.id)
    if chosen is None or viewer is None:
        return None
    return next((ly for ly in candidate_layers(viewer, fld) if ly.unique_id == chosen), None)


def set_objects_layer(session, field_id: str, layer) -> None:
    """Choose `layer` (None: tile mode) as a field's objects; the tile counts follow."""
    layers = choices_for(session).layers
    new = None if layer is None else layer.unique_id
    if layers.get(field_id) != new:
        if new is None:
            layers.pop(field_id, None)
        else:
            layers[field_id] = new
        session.labels_changed.emit()


def field_masks(session, viewer, fld: Field) -> np.ndarray | None:
    """Main thread: a checked copy of the field's instance mask, None in tile mode."""
    layer = objects_layer(session, viewer, fld)
    if layer is None:
        return None
    return check_masks(np.array(layer.data, copy=True), fld.shape, repr(layer.name)).copy()


# -- labelling ----------------------------------------------------------------------------------
# Each paint recounts and redraws the outlines on the main thread; the objects' numbering (the
# np.unique sort of the mask, most of that cost) depends on the mask layer only, so it is built
# once per mask layer and data version and reused for every paint: a paint costs one bincount.
_INDEX_CACHE_SIZE = 4  # mask layers kept (each holds a field-sized int64 renumbering)
_INDEXES: "OrderedDict[Any, tuple[tuple, ObjectIndex]]" = OrderedDict()  # unique_id -> (token, index)
_WATCHED: set = set()  # unique_ids whose edit events drop their entry


def _forget(uid) -> Callable:
    def forget(_event=None) -> None:
        _INDEXES.pop(uid, None)

    return forget


def object_index(masks_layer) -> ObjectIndex:
    """The mask layer's `objects.ObjectIndex`, rebuilt only when its data changed: a new array
    (identity and shape are in the key) or an edit in place (paint / data events drop it)."""
    uid = masks_layer.unique_id
    data = masks_layer.data
    token = (id(data), tuple(np.shape(data)), str(getattr(data, "dtype", "")))
    hit = _INDEXES.get(uid)
    if hit is not None and hit[0] == token:
        _INDEXES.move_to_end(uid)
        return hit[1]
    if uid not in _WATCHED:
        for name in ("paint", "data", "set_data"):
            emitter = getattr(masks_layer.events, name, None)
            if emitter is not None:
                emitter.connect(_forget(uid))
        _WATCHED.add(uid)
    index = index_objects(np.asarray(data))
    _INDEXES[uid] = (token, index)
    while len(_INDEXES) > _INDEX_CACHE_SIZE:
        _INDEXES.popitem(last=False)
    return index


def count_painted_objects(masks_layer, painted_layer, n_classes: int) -> list[int]:
    """Labelled cells per class: objects' majority rule (ObjectIndex.counts) on the painted layer."""
    return object_index(masks_layer).counts(np.asarray(painted_layer.data), n_classes)


def count_all_objects(masks_layer) -> int:
    return len(object_index(masks_layer).table)


def outline_classes(index: ObjectIndex, painted: np.ndarray, n_classes: int) -> np.ndarray:
    """(H, W) uint8/uint16: each labelled cell's class value (ObjectIndex.classes, the training
    rule) on its border pixels (ObjectIndex.border), 0 elsewhere. Drawn with array shifts, not
    Labels `contour`, which is slow on large fields."""
    classes = index.classes(painted, n_classes)
    flat, compact = index.border
    lut = np.zeros(len(classes) + 1, np.uint8 if n_classes < 255 else np.uint16)
    lut[1:] = classes
    out = np.zeros(index.compact.shape, lut.dtype)
    out.ravel()[flat] = lut[compact]
    return out


def show_labelled_cells(viewer, session, fld: Field, painted_layer, enabled: bool = True):
    """ "<field> labelled cells": the outline of every cell a training receives, in its class
    colour (the tile mode overlay's counterpart); removed in tile mode or with nothing labelled."""
    layer = find_derived(viewer.layers, fld.id, ROLE_LABELLED_CELLS)
    cells = objects_layer(session, viewer, fld) if enabled else None
    outlines = None
    if cells is not None and painted_layer is not None:
        outlines = outline_classes(object_index(cells), np.asarray(painted_layer.data), len(session.classes))
    if outlines is None or not outlines.any():
        if layer is not None:
            viewer.layers.remove(layer)
        return None
    color_dict: dict = {None: TRANSPARENT, 0: TRANSPARENT}
    color_dict.update({k: c for k, c in enumerate(session.class_colors, start=1)})
    colormap = DirectLabelColormap(color_dict=color_dict)
    if layer is None:
        with keep_selection(viewer):
            layer = viewer.add_labels(
                outlines,
                name=f"{fld.name} labelled cells",
                colormap=colormap,
                opacity=1.0,
                metadata=derived_metadata(fld.id, ROLE_LABELLED_CELLS),
                **fld.layer_kwargs(),
            )
    else:
        if layer.metadata["cellclf"].get("colors") != list(session.class_colors):
            layer.colormap = colormap
        # unchanged outlines are not set again: a data event would trigger a recount, then this
        if not np.array_equal(np.asarray(layer.data), outlines):
            layer.data = outlines
    layer.metadata["cellclf"]["colors"] = list(session.class_colors)
    layer.editable = False
    return layer


# -- classification -----------------------------------------------------------------------------
def prediction_steps(classifier, image, masks, meta, stop, **tile_options):
    """Worker thread: the engine generator for one field: one tile per object when `masks` is
    given (cut as the model was trained, objects.model_settings), else the tile grid."""
    if masks is None:
        return classifier.predict_field(image, stop=stop, **tile_options)
    settings = model_settings(meta)
    return classify_objects(
        classifier,
        image,
        masks,
        settings["blank_background"],
        stop=stop,
        mask_channel=settings["mask_channel"],
    )


def cell_features(prediction: ObjectPrediction) -> dict[str, np.ndarray]:
    """The engine's per-object table as Labels `features`; napari matches rows to label values
    through `index` (the object id), the other columns are the CSV's."""
    table = prediction.table()
    return {"index": np.asarray(table["label"]), **table}


def build_cell_results(
    field_id: str,
    field_name: str,
    prediction: ObjectPrediction,
    class_colors: Sequence[str],
    layer_kwargs: dict,
    masks: np.ndarray,
) -> ResultLayers:
    """Worker thread: "<field> cell classes", the instance mask with each cell coloured by its
    predicted class (DirectLabelColormap) and its row of the table in `features` (hovering shows
    it), shown by the controller like the tile results (`_result_layers`)."""
    ids = np.asarray(masks)
    ids = ids.astype(np.uint16 if ids.max(initial=0) < 2**16 else np.uint32, copy=False)
    color_dict: dict = {None: TRANSPARENT, 0: TRANSPARENT}
    color_dict.update(
        {int(v): class_colors[int(k)] for v, k in zip(prediction.indices, prediction.predicted)}
    )
    layer = Labels(
        ids,
        name=f"{field_name} cell classes",
        opacity=0.5,
        features=cell_features(prediction),
        colormap=DirectLabelColormap(color_dict=color_dict),
        metadata=derived_metadata(field_id, ROLE_CELLS),
        **layer_kwargs,
    )
    layer.editable = False
    return ResultLayers(field_id, field_name, prediction, "", np.zeros(0), {ROLE_CELLS: layer})


def hide_other_results(viewer, field_id: str, results: ResultLayers) -> None:
    """Main thread: a field classified per cell hides its earlier tile results, and one
    classified per tile its earlier cell results: they are not what was classified now."""
    shown = set(results.built)
    for role in (ROLE_CELLS, *STAGES):
        layer = find_derived(viewer.layers, field_id, role) if role not in shown else None
        if layer is not None:
            layer.visible = False


# -- controls ------------------------------------------------------------------------------------
def objects_combo(viewer, session, fld: Field) -> QComboBox:
    """The per-field choice: tile mode, or one of the Labels layers of the field's size."""
    combo = QComboBox()
    combo.addItem(NO_OBJECTS_TEXT, None)
    candidates = candidate_layers(viewer, fld)
    for layer in candidates:
        combo.addItem(layer.name, layer.unique_id)
    chosen = objects_layer(session, viewer, fld)
    combo.setCurrentIndex(max(combo.findData(chosen.unique_id), 0) if chosen is not None else 0)
    combo.setToolTip(
        "A Labels layer of cell masks (0 = background, one value per cell): each cell becomes "
        "one tile centred on it, and a stroke or click inside a cell labels that cell."
        if candidates
        else "Add a Labels layer of cell masks of this field's size to classify cells."
    )

    def chosen_changed(_index: int) -> None:
        uid = combo.currentData()
        layer = next((ly for ly in candidate_layers(viewer, fld) if ly.unique_id == uid), None)
        if layer is not None:  # a field's cells lie over it (the field may have been laid beside another)
            geometry = fld.layer_kwargs()
            layer.scale, layer.translate = geometry["scale"], geometry["translate"]
        set_objects_layer(session, fld.id, layer)

    combo.currentIndexChanged.connect(chosen_changed)
    return combo


class ObjectsBox(QGroupBox):
    """How object tiles are cut (the engine's options), and what a stroke means in object mode."""

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__("Cells (object mode)", parent)
        self.session = session
        self.blank_background = _option_box(BLANK_BACKGROUND, choices_for(session).blank_background)
        self.mask_channel = _option_box(MASK_CHANNEL, choices_for(session).mask_channel)
        layout = QVBoxLayout(self)
        layout.addWidget(
            note_label(
                "Choose a field's cell masks in the Objects column: each cell is then one tile "
                "centred on it, and painting anywhere inside a cell labels the whole cell."
            )
        )
        layout.addWidget(self.blank_background)
        layout.addWidget(self.mask_channel)
        self.blank_background.toggled.connect(self._on_blank)
        self.mask_channel.toggled.connect(self._on_mask_channel)
        self.links = Links()  # undone when the dock closes (CellClassifierWidget.shut_down)
        self.links.connect(session.labels_changed, self._load)

    def _on_blank(self, on: bool) -> None:
        choices_for(self.session).blank_background = bool(on)

    def _on_mask_channel(self, on: bool) -> None:
        choices_for(self.session).mask_channel = bool(on)
        # Train's check depends on it (object fields then have one channel more than tile fields).
        self.session.labels_changed.emit()

    @alive_only
    def _load(self) -> None:
        choices = choices_for(self.session)
        for box, value in (
            (self.blank_background, choices.blank_background),
            (self.mask_channel, choices.mask_channel),
        ):
            with signals_blocked(box):
                box.setChecked(value)


def _option_box(option, checked: bool) -> QCheckBox:
    """A checkbox for a boolean option of options.py: its label, its help as the tooltip."""
    box = QCheckBox(option.label)
    box.setToolTip(option.help[:1].upper() + option.help[1:] + ".")
    box.setChecked(checked)
    return box
