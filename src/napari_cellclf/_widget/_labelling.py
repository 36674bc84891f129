"""The widget's adapter to `datasets`: what the user labelled in napari, as labelling sources —
classes painted on "<field> labels" layers, whole fields declared one class, imported class
folders. Counting, problems and tile cutting are `datasets`' (one rule for the widget and the CLI);
this module only reads layers and caches. A field with cell masks chosen (object mode, `_objects`)
counts and trains one sample per labelled cell instead of tiles.

`count_tiles` runs on the main thread after every paint (debounced) and must stay cheap.
`gather_training_inputs` copies everything training needs out of the layers on the main thread;
`build_dataset` then cuts the tiles in the worker thread, so painting during training is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .. import data as cdata
from .. import datasets
from ..datasets import ClassFolders, InstanceObjects, PaintedLabels, TileCounts, TileSpec, WholeImage
from ..objects import EXTRA_KEY, settings_extra
from ..options import MIN_FRACTION
from ..tiling import TileGrid
from ._fields import Field
from ._layers import labels_layer
from ._objects import choices_for, count_all_objects, count_painted_objects, field_masks, objects_layer
from ._session import LABELS_PAINTED, LABELS_UNUSED, Session

__all__ = [
    "TileCounts",
    "training_spec",
    "training_grid",
    "ForegroundCache",
    "PaintedCountCache",
    "first_channel",
    "count_tiles",
    "problems",
    "TrainingInputs",
    "gather_training_inputs",
    "build_dataset",
    "import_class_folders",
    "imported_dataset",
]


def training_spec(session: Session) -> TileSpec:
    d = session.data
    return TileSpec(
        d.tile_size,
        d.effective_stride(),
        MIN_FRACTION.default,
        foreground_channel=0 if d.skip_background else None,
    )


def training_grid(shape: tuple[int, int], session: Session) -> TileGrid:
    return training_spec(session).grid(shape)


class ForegroundCache:
    """Foreground tiles per (field, grid, channel): recomputing them on every paint would be wasteful."""

    def __init__(self, size: int = 16):
        self._store: dict[tuple, np.ndarray] = {}
        self._size = size

    def get(self, fld: Field, grid: TileGrid, channel: int) -> np.ndarray:
        key = (fld.id, grid, channel, tuple(id(c.layer.data) for c in fld.channels))
        if key not in self._store:
            if len(self._store) >= self._size:
                self._store.pop(next(iter(self._store)))
            spec = TileSpec(grid.tile_size, grid.stride, foreground_channel=0)
            self._store[key] = datasets.whole_image_tiles(fld.stack([channel]), spec, fld.shape)
        return self._store[key]


class PaintedCountCache:
    """Tiles per class of each labels layer, recomputed only for the layer that was painted
    (counting a 2048² label image takes a noticeable fraction of a second)."""

    def __init__(self):
        # keyed by the layer's unique_id: napari hands plugins a new proxy object per access
        self._store: dict[object, tuple[tuple, list[int]]] = {}

    def invalidate(self, layer) -> None:
        self._store.pop(layer.unique_id, None)

    def get(self, layer, spec: TileSpec, grid: TileGrid, n_classes: int) -> list[int]:
        key = (grid, spec.min_fraction, n_classes)
        hit = self._store.get(layer.unique_id)
        if hit is None or hit[0] != key:
            hit = self._store[layer.unique_id] = (
                key,
                datasets.count_painted(layer.data, spec, n_classes, grid),
            )
        return list(hit[1])


def first_channel(session: Session) -> int:
    return session.data.channels[0] if session.data.channels else 0


def count_tiles(
    session: Session,
    fields: Sequence[Field],
    viewer,
    foreground: ForegroundCache | None = None,
    painted: PaintedCountCache | None = None,
) -> TileCounts:
    """Labelled tiles per class (datasets' rules, with this widget's caches), per field id."""
    n_classes = len(session.classes)
    spec = training_spec(session)
    counts = TileCounts(per_class=[0] * n_classes)
    for fld in fields:
        choice = session.labels_source(fld.id)
        if choice == LABELS_UNUSED:
            continue
        try:
            grid = spec.grid(fld.shape)
        except ValueError as exc:
            counts.notes.append(f"{fld.name}: {exc}")
            continue
        per_class = [0] * n_classes
        cells = objects_layer(session, viewer, fld)
        if choice == LABELS_PAINTED:
            layer = labels_layer(viewer, fld, session.class_colors, create=False)
            if layer is None:
                continue
            if cells is not None:
                per_class = count_painted_objects(cells, layer, n_classes)
            else:
                per_class = (painted or PaintedCountCache()).get(layer, spec, grid, n_classes)
        elif isinstance(choice, int) and 1 <= choice <= n_classes and cells is not None:
            per_class[choice - 1] = count_all_objects(cells)
        elif isinstance(choice, int) and 1 <= choice <= n_classes:
            n = grid.n_tiles
            if spec.foreground_channel is not None and foreground is not None:
                try:
                    n = int(foreground.get(fld, grid, first_channel(session)).sum())
                except ValueError as exc:
                    counts.notes.append(f"{fld.name}: {exc}")
            per_class[choice - 1] = n
        counts.add(fld.id, per_class)
    if session.imported is not None:
        counts.add("imported", session.imported.count(spec, session.class_names))
    return counts


def problems(counts: TileCounts, class_names: Sequence[str]) -> list[str]:
    """Why training would fail or mislead, in the words shown above the Train button."""
    if counts.total == 0:
        return [
            "No labelled tiles or cells yet: paint classes on a field's labels layer, mark whole "
            "fields as one class, or import class folders."
        ]
    return datasets.problem_messages(counts, class_names)


# -- training inputs ------------------------------------------------------------------------------
@dataclass
class TrainingInputs:
    sources: list  # datasets sources: copies of images and labels
    class_names: list[str]
    channel_indices: list[int]
    channel_names: list[str]
    spec: TileSpec
    imported: ClassFolders | None = None
    extra: dict = field(default_factory=dict)  # for the model's meta.extra (object settings)


def gather_training_inputs(session: Session, fields: Sequence[Field], viewer) -> TrainingInputs:
    """Main thread: copy images and labels out of the layers. ValueError when nothing is labelled."""
    settings = session.data
    n_classes = len(session.classes)
    sources: list = []
    channel_indices: list[int] | None = None
    channel_names: list[str] = []
    blank_background = choices_for(session).blank_background
    mask_channel = choices_for(session).mask_channel
    extra: dict = {}
    for fld in fields:
        choice = session.labels_source(fld.id)
        labels = None
        if choice == LABELS_PAINTED:
            layer = labels_layer(viewer, fld, session.class_colors, create=False)
            if layer is None:
                continue
            labels = np.array(layer.data, copy=True)
            if not labels.any():
                continue
            if int(labels.max()) > n_classes:
                raise ValueError(
                    f"{layer.name!r} has label value {int(labels.max())} but there "
                    f"are only {n_classes} classes (values 1..{n_classes})"
                )
        elif not (isinstance(choice, int) and 1 <= choice <= n_classes):
            continue
        chosen = fld.check_channels(settings.channels)
        if channel_indices is None:
            channel_indices = chosen
            channel_names = [fld.channel_names[c] for c in chosen]
        image = fld.stack(chosen)
        masks = field_masks(session, viewer, fld)
        if masks is not None:
            # object mode: one sample per labelled cell; a whole-image class labels every cell
            painted = labels if labels is not None else np.full(fld.shape, choice, np.uint16)
            sources.append(InstanceObjects(fld.name, masks, painted, image, blank_background, mask_channel))
            extra[EXTRA_KEY] = settings_extra(blank_background, mask_channel)
        elif labels is not None:
            sources.append(PaintedLabels(fld.name, labels, image))
        else:
            sources.append(WholeImage(fld.name, choice - 1, image))

    imported = session.imported
    if not sources and imported is None:
        raise ValueError(
            "Nothing is labelled yet: paint classes on a field's labels layer, mark a "
            "whole field as one class, or import class folders."
        )
    if channel_indices is None:
        channel_indices = list(settings.channels) or list(imported.channels) or []
        channel_names = list(imported.dataset.channel_names)
    return TrainingInputs(
        sources=sources,
        class_names=session.class_names,
        channel_indices=list(channel_indices),
        channel_names=channel_names,
        spec=training_spec(session),
        imported=imported,
        extra=extra,
    )


def build_dataset(inputs: TrainingInputs) -> cdata.TileDataset:
    """Worker thread: cut and label tiles from every source and merge them (classes by name)."""
    sources = list(inputs.sources)
    if inputs.imported is not None:
        # the imported folders, re-read when the tile size or the channels changed since
        sources.append(inputs.imported.at(inputs.spec.tile_size, inputs.channel_indices))
    return datasets.build_dataset(sources, inputs.spec, inputs.class_names, inputs.channel_names)


def import_class_folders(
    root: str, tile_size: int, channels: Sequence[int], mode: str = "resize", classes: Sequence[str] = ()
) -> ClassFolders:
    """Worker thread: root/<class>/<image> -> tiles (resized to one tile, or cut into tiles);
    `classes`: only these class folders (() = all)."""
    return ClassFolders.read(root, tile_size, channels, mode, classes)


def imported_dataset(imported: ClassFolders, tile_size: int, channels: Sequence[int]) -> cdata.TileDataset:
    """The imported tiles, re-read if tile size or channels changed since the import."""
    return imported.tiles_for(tile_size, channels)
