"""Would a job be refused? Asked before Train, Classify and Explain are enabled, so a button
that cannot work is disabled with its reason instead of failing after the click.

No rule is made here: training asks `datasets.training_problems` (the counted tiles and the
labelled fields' channels, the check the CLI's folder loader makes too), classification asks the
engine's channel policy (`channels.model_channel_indices` through `_fields.model_channels`) and
explanation the feature models' refusal (`baseline.ATTRIBUTION_REFUSAL`); a model that reads the
cell mask as a channel classifies only fields with cell masks and explains none
(`objects.tile_mode_problem`); a field whose pixel size
differs from the model's training pixel size gets the CLI's sentence (`pixelsize.pixel_size_warning`,
same factor). This module only
gathers the inputs from the session and the layers. No Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .. import datasets
from ..objects import MASK_CHANNEL_NAME, image_channel_names, tile_mode_problem
from ..pixelsize import pixel_size_warning
from ._fields import Field, model_channels
from ._labelling import problems
from ._layers import labels_layer
from ._objects import choices_for, objects_layer
from ._session import LABELS_PAINTED, Session

NO_MODEL = "No model yet: train one (Train tab) or load a model file."
NO_FIELD = "Open a field of view first."


@dataclass
class Check:
    """Why a job would be refused (`blocking`), what it would do anyway but the user should
    know (`advice`), and, for a job over several fields, the fields it leaves out (`skipped`)."""

    blocking: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    usable: list[Field] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.blocking

    def tooltip(self, default: str, verb: str) -> str:
        return default if self.ok else f"{verb} is off: " + " ".join(self.blocking)

    def lines(self) -> list[str]:
        return self.blocking + self.advice


def train_check(session: Session, fields: Sequence[Field], viewer) -> Check:
    counts = session.counts
    if counts is None or counts.total == 0:
        return Check(blocking=problems(counts or datasets.TileCounts([0]), session.class_names)[:1])
    check = Check()
    n_classes = len(session.classes)
    named: list[tuple[str, list[str]]] = []
    for fld in fields:
        if sum(counts.per_field.get(fld.id) or ()) == 0:
            if session.labels_source(fld.id) == LABELS_PAINTED:
                check.blocking += _label_value_problems(fld, session, viewer, n_classes)
            continue
        try:
            chosen = fld.check_channels(session.data.channels)
        except ValueError as exc:
            check.blocking.append(str(exc))
            continue
        names = [fld.channel_names[c] for c in chosen]
        if choices_for(session).mask_channel and objects_layer(session, viewer, fld) is not None:
            # Its cells' tiles get the mask channel too: a tile field beside it has one fewer,
            # which training_problems names.
            names.append(MASK_CHANNEL_NAME)
        named.append((fld.name, names))
        if session.labels_source(fld.id) == LABELS_PAINTED:
            check.blocking += _label_value_problems(fld, session, viewer, n_classes)
    imported = session.imported
    if imported is not None and sum(counts.per_field.get("imported") or ()):
        named.append((f"class folders in {imported.root}", list(imported.dataset.channel_names)))
    for problem in datasets.training_problems(counts, session.class_names, named):
        (check.blocking if problem.blocking else check.advice).append(problem.message)
    check.advice += counts.notes
    return check


def _label_value_problems(fld: Field, session: Session, viewer, n_classes: int) -> list[str]:
    """Painted values above the last class: training would refuse them (gather_training_inputs)."""
    layer = labels_layer(viewer, fld, session.class_colors, create=False)
    if layer is None:
        return []
    top = int(np.max(layer.data)) if np.size(layer.data) else 0
    if top <= n_classes:
        return []
    return [
        f"{layer.name!r} has label value {top} but there are only {n_classes} classes "
        f"(values 1..{n_classes}): add a class or erase those pixels."
    ]


def classify_check(session: Session, fields: Sequence[Field], all_fields: bool, viewer=None) -> Check:
    """Which fields the model can classify; with `all_fields`, the others are skipped (named,
    with the reason), and only no usable field at all is blocking. A model that reads the cell
    mask as a channel cannot classify a field in tile mode (no cell masks chosen in `viewer`)."""
    trained = session.trained
    if trained is None:
        return Check(blocking=[NO_MODEL])
    if not fields:
        return Check(blocking=[NO_FIELD])
    meta = trained.meta
    cells_only = tile_mode_problem(meta)
    check = Check()
    for fld in fields:
        if cells_only and objects_layer(session, viewer, fld) is None:
            check.skipped.append(
                f"Field '{fld.name}': {cells_only[:1].upper()}{cells_only[1:]}; choose the "
                "field's cell masks in the Objects column."
            )
            continue
        try:
            model_channels(fld, image_channel_names(meta), meta.channel_indices)
        except ValueError as exc:
            check.skipped.append(str(exc))
            continue
        check.usable.append(fld)
        ps, unit = field_pixel_size(fld)
        warning = pixel_size_warning(ps, unit, meta.pixel_size, name=f"Field '{fld.name}'")
        if warning:
            check.advice.append(warning)
    if not check.usable:
        check.blocking = list(check.skipped)
    elif check.skipped:
        check.advice.append("Skipped when classifying all fields: " + "; ".join(check.skipped))
    return check


def field_pixel_size(fld: Field) -> tuple[tuple[float, float] | None, str | None]:
    """(y, x) pixel size and unit of a field: what our reader read from the file's metadata
    (metadata["cellclf"], where it keeps the unit), else a layer scale other than 1 with the
    layer's units when napari has them; (None, None) when unknown."""
    first = fld.channels[0].layer
    info = (getattr(first, "metadata", None) or {}).get("cellclf") or {}
    if info.get("pixel_size"):
        y, x = info["pixel_size"][-2:]
        return (float(y), float(x)), info.get("unit")
    if tuple(fld.scale) == (1.0, 1.0):
        return None, None
    units = getattr(first, "units", None)
    unit = str(units[-1]) if units is not None and len(units) else None
    return (float(fld.scale[0]), float(fld.scale[1])), (None if unit in (None, "pixel") else unit)


def explain_check(session: Session, current: Field | None) -> Check:
    from ..baseline import ATTRIBUTION_REFUSAL, is_feature_model

    cells_only = tile_mode_problem(session.trained.meta) if session.trained is not None else None
    if cells_only and current is not None:  # explanations are maps over the tile grid
        return Check(
            blocking=[f"{cells_only[:1].upper()}{cells_only[1:]}, so it has no tile map to explain."]
        )
    check = classify_check(session, [current] if current else [], all_fields=False)
    if check.ok and session.trained is not None and is_feature_model(session.trained.model):
        check.blocking.append(ATTRIBUTION_REFUSAL[:1].upper() + ATTRIBUTION_REFUSAL[1:] + ".")
    return check


def model_differences(session: Session) -> list[str]:
    """Settings of the Fields tab that differ from the model's: they apply to training only,
    and the user should see that instead of wondering why the results look otherwise."""
    trained = session.trained
    if trained is None:
        return []
    meta = trained.meta
    notes = []
    if int(session.data.tile_size) != int(meta.tile_size):
        notes.append(
            f"The model cuts {meta.tile_size} px tiles; the tile size set in the Fields tab "
            f"({session.data.tile_size} px) is for training: results use {meta.tile_size} px."
        )
    chosen = tuple(session.data.channels)
    trained_with = tuple(meta.channel_indices or ())
    if chosen and trained_with and chosen != trained_with:
        notes.append(
            f"The model reads channels {', '.join(meta.channel_names)} (trained on channels "
            f"{', '.join(map(str, trained_with))}); the channel choice in the Fields tab "
            f"({', '.join(map(str, chosen))}) is for training only."
        )
    return notes
