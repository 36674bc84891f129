"""What the user labelled, three ways at once: classes painted on "<field> labels" layers, whole
fields declared one class, and images imported from class folders.

`count_tiles` runs on the main thread after every paint (debounced) and must stay cheap.
`gather_training_inputs` copies everything training needs out of the layers on the main thread;
`build_dataset` then cuts the tiles in the worker thread, so painting during training is safe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .. import data as cdata
from ..tiling import TileGrid, foreground_tiles, make_grid, tile_labels_from_label_image
from ._fields import Field
from ._layers import labels_layer
from ._session import LABELS_PAINTED, LABELS_UNUSED, ImportedFolders, Session

FEW_TILES = 20            # below this a class is learnt from too little: runs differ from seed to seed
PAINTED_FRACTION = 0.5    # a tile takes the painted class when at least half of it is painted


@dataclass
class TileCounts:
    per_class: list[int]                               # tiles per class, all sources together
    per_field: dict[str, list[int]] = field(default_factory=dict)   # field id -> per class
    imported: list[int] | None = None
    notes: list[str] = field(default_factory=list)    # fields that could not be counted, and why

    @property
    def total(self) -> int:
        return int(sum(self.per_class))


def training_grid(shape: tuple[int, int], session: Session) -> TileGrid:
    return make_grid(shape, session.data.tile_size, session.data.effective_stride(), border="drop")


class ForegroundCache:
    """Otsu foreground per (field, grid, channel): recomputing it on every paint would be wasteful."""

    def __init__(self, size: int = 16):
        self._store: dict[tuple, np.ndarray] = {}
        self._size = size

    def get(self, fld: Field, grid: TileGrid, channel: int) -> np.ndarray:
        key = (fld.id, grid, channel, tuple(id(c.layer.data) for c in fld.channels))
        if key not in self._store:
            if len(self._store) >= self._size:
                self._store.pop(next(iter(self._store)))
            image = fld.stack([channel])
            self._store[key] = np.asarray(foreground_tiles(image, grid, channel=0), bool)
        return self._store[key]


class PaintedCountCache:
    """Tiles per class of each labels layer, recomputed only for the layer that was painted
    (counting a 2048² label image takes a noticeable fraction of a second)."""

    def __init__(self):
        self._store: dict[int, tuple[tuple, list[int]]] = {}

    def invalidate(self, layer) -> None:
        self._store.pop(id(layer), None)

    def get(self, layer, grid: TileGrid, n_classes: int) -> list[int]:
        key = (grid, n_classes)
        hit = self._store.get(id(layer))
        if hit is None or hit[0] != key:
            tile_labels = tile_labels_from_label_image(np.asarray(layer.data), grid, PAINTED_FRACTION)
            hist = np.bincount(np.asarray(tile_labels, np.int64).ravel(), minlength=n_classes + 1)
            hit = self._store[id(layer)] = (key, [int(v) for v in hist[1:n_classes + 1]])
        return list(hit[1])


def first_channel(session: Session) -> int:
    return session.data.channels[0] if session.data.channels else 0


def count_tiles(session: Session, fields: Sequence[Field], viewer,
                foreground: ForegroundCache | None = None,
                painted: PaintedCountCache | None = None) -> TileCounts:
    n_classes = len(session.classes)
    counts = TileCounts(per_class=[0] * n_classes)
    for fld in fields:
        choice = session.labels_source(fld.id)
        if choice == LABELS_UNUSED:
            continue
        try:
            grid = training_grid(fld.shape, session)
        except ValueError as exc:
            counts.notes.append(f"{fld.name}: {exc}")
            continue
        per_class = [0] * n_classes
        if choice == LABELS_PAINTED:
            layer = labels_layer(viewer, fld, session.class_colors, create=False)
            if layer is None:
                continue
            per_class = (painted or PaintedCountCache()).get(layer, grid, n_classes)
        elif isinstance(choice, int) and 1 <= choice <= n_classes:
            n = grid.n_tiles
            if session.data.skip_background and foreground is not None:
                try:
                    n = int(foreground.get(fld, grid, first_channel(session)).sum())
                except ValueError as exc:
                    counts.notes.append(f"{fld.name}: {exc}")
            per_class[choice - 1] = n
        counts.per_field[fld.id] = per_class
        counts.per_class = [a + b for a, b in zip(counts.per_class, per_class)]
    if session.imported is not None:
        imported = session.imported.dataset.class_counts()
        counts.imported = [int(imported.get(name, 0)) for name in session.class_names]
        counts.per_class = [a + b for a, b in zip(counts.per_class, counts.imported)]
    return counts


def problems(counts: TileCounts, class_names: Sequence[str]) -> list[str]:
    """Why training would fail or mislead, in the words shown above the Train button."""
    if counts.total == 0:
        return ["No labelled tiles yet: paint classes on a field's labels layer, mark whole "
                "fields as one class, or import class folders."]
    found = [name for name, n in zip(class_names, counts.per_class) if n > 0]
    messages = []
    if len(found) < 2:
        messages.append(f"Only one class ({found[0]}) has labelled tiles: training needs at "
                        "least two.")
    else:
        missing = [name for name, n in zip(class_names, counts.per_class) if n == 0]
        if missing:
            messages.append(f"No tiles for {', '.join(missing)}: label some or remove the class.")
    few = [f"{name} ({n})" for name, n in zip(class_names, counts.per_class) if 0 < n < FEW_TILES]
    if few:
        messages.append(f"Few tiles for {', '.join(few)}: the model will learn little and its "
                        "validation accuracy will be noisy.")
    return messages


# -- training inputs ------------------------------------------------------------------------------
@dataclass
class FieldInput:
    name: str
    image: np.ndarray                 # (C, Y, X) float32, a copy
    labels: np.ndarray | None = None  # (Y, X) painted label image, a copy
    whole_class: int | None = None    # 0-based class of every tile


@dataclass
class TrainingInputs:
    fields: list[FieldInput]
    class_names: list[str]
    channel_indices: list[int]
    channel_names: list[str]
    tile_size: int
    stride: int
    skip_background: bool
    imported: ImportedFolders | None = None


def gather_training_inputs(session: Session, fields: Sequence[Field], viewer) -> TrainingInputs:
    """Main thread: copy images and labels out of the layers. ValueError when nothing is labelled."""
    settings = session.data
    n_classes = len(session.classes)
    inputs: list[FieldInput] = []
    channel_indices: list[int] | None = None
    channel_names: list[str] = []
    for fld in fields:
        choice = session.labels_source(fld.id)
        labels = None
        whole_class = None
        if choice == LABELS_PAINTED:
            layer = labels_layer(viewer, fld, session.class_colors, create=False)
            if layer is None:
                continue
            labels = np.array(layer.data, copy=True)
            if not labels.any():
                continue
            if int(labels.max()) > n_classes:
                raise ValueError(f"{layer.name!r} has label value {int(labels.max())} but there "
                                 f"are only {n_classes} classes (values 1..{n_classes})")
        elif isinstance(choice, int) and 1 <= choice <= n_classes:
            whole_class = choice - 1
        else:
            continue
        chosen = fld.check_channels(settings.channels)
        if channel_indices is None:
            channel_indices = chosen
            channel_names = [fld.channel_names[c] for c in chosen]
        inputs.append(FieldInput(fld.name, fld.stack(chosen), labels, whole_class))

    imported = session.imported
    if not inputs and imported is None:
        raise ValueError("Nothing is labelled yet: paint classes on a field's labels layer, mark a "
                         "whole field as one class, or import class folders.")
    if channel_indices is None:
        channel_indices = list(settings.channels) or list(imported.channels) or []
        channel_names = list(imported.dataset.channel_names)
    return TrainingInputs(
        fields=inputs, class_names=session.class_names, channel_indices=list(channel_indices),
        channel_names=channel_names, tile_size=settings.tile_size,
        stride=settings.effective_stride(), skip_background=settings.skip_background,
        imported=imported)


def build_dataset(inputs: TrainingInputs) -> cdata.TileDataset:
    """Worker thread: cut and label tiles from every source and merge them (classes by name)."""
    parts = []
    painted = [f for f in inputs.fields if f.labels is not None]
    if painted:
        parts.append(cdata.from_label_images(
            [f.image for f in painted], [f.labels for f in painted], inputs.class_names,
            inputs.tile_size, inputs.stride, min_fraction=PAINTED_FRACTION,
            channel_names=inputs.channel_names, sources=[f.name for f in painted]))
    whole = [f for f in inputs.fields if f.whole_class is not None]
    if whole:
        parts.append(cdata.from_whole_images(
            [f.image for f in whole], [f.whole_class for f in whole], inputs.class_names,
            inputs.tile_size, inputs.stride,
            foreground_channel=0 if inputs.skip_background else None,
            channel_names=inputs.channel_names, sources=[f.name for f in whole]))
    if inputs.imported is not None:
        parts.append(imported_dataset(inputs.imported, inputs.tile_size, inputs.channel_indices))
    if not parts:
        raise ValueError("Nothing is labelled yet.")
    return parts[0] if len(parts) == 1 else cdata.concat_datasets(parts)


def import_class_folders(root: str, tile_size: int, channels: Sequence[int], mode: str = "resize"
                         ) -> ImportedFolders:
    """Worker thread: root/<class>/<image> -> tiles (resized to one tile, or cut into tiles)."""
    dataset = cdata.from_class_folders(root, tile_size, mode=mode, channels=list(channels) or None)
    return ImportedFolders(root=str(root), mode=mode, dataset=dataset, tile_size=tile_size,
                           channels=tuple(channels))


def imported_dataset(imported: ImportedFolders, tile_size: int, channels: Sequence[int]
                     ) -> cdata.TileDataset:
    """The imported tiles, re-read if tile size or channels changed since the import.

    Re-read with the folders' own classes, like the first import: the session's other classes
    have no folder and would count as empty (concat_datasets merges classes by name anyway)."""
    if imported.tile_size == tile_size and tuple(imported.channels) == tuple(channels):
        return imported.dataset
    return cdata.from_class_folders(imported.root, tile_size, mode=imported.mode,
                                    channels=list(channels) or None,
                                    class_names=list(imported.dataset.class_names))
