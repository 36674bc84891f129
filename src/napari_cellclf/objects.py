"""Object mode: cells from an instance mask instead of a tile grid. No Qt.

An instance mask is a (Y, X) integer image: 0 = background, each other value one object (cell).
- `measure_objects(masks)`: label, centroid (y, x) and area of every object (one pass, bincount).
- `object_tiles(image_cyx, masks, tile_size, ...)`: one (C, T, T) tile per object, centred on
  its centroid (rounded to the nearest pixel); the field is reflect-padded so objects at the
  edge get whole tiles; `blank_background` zeroes every pixel that is not the object itself;
  `mask_channel` appends one channel after the image's: 1.0 on the object's own pixels, 0
  elsewhere (the two options are independent; both may be on).
- `object_classes(masks, painted, n_classes)`: class of each object = the majority painted label
  inside it (0 when none of its pixels is painted) — the one counting rule for object labels.
- `classify_objects(classifier, image_cyx, masks)`: a generator (progress per batch, a stop
  event as in tile mode) returning an `ObjectPrediction`, per-object probabilities through the
  same `Classifier.predict_tiles` as tile mode; `ObjectPrediction.table()` is the one table
  (label, centroid, area, class, confidence, p_<class>) for napari Labels `features` and CSV
  rows alike. `predict_objects` runs it to the end and returns that table.
- `model_settings(meta)`: how a model cuts its object tiles (what training stored in
  `meta.extra["objects"]`, written by `settings_extra`), so classifying cuts them the same way.
  `image_channel_names(meta)`: the channels a model reads from the image (its channel names
  without the trailing MASK_CHANNEL_NAME); `tile_mode_problem(meta)`: why a model cannot
  classify a tile grid (a mask-channel model needs cells), in the words every face shows.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Generator

import numpy as np

OBJECTS_SUFFIX = "_objects"  # <stem>.tif has its instance mask in <stem>_objects.tif
EXTRA_KEY = "objects"  # ModelMeta.extra[EXTRA_KEY]: the object settings a model was trained with
# The cell's neighbourhood stays in its tile by default: context (neighbours, background) is
# part of what a tile-trained model sees too.
DEFAULT_BLANK_BACKGROUND = False
# The cell's own mask as one more input channel is opt-in: models without it stay usable on tile
# grids, and old models (no key stored) read as without it.
DEFAULT_MASK_CHANNEL = False
# The name of that channel at the end of a mask-channel model's meta.channel_names. It is not a
# channel of any image: channel matching uses `image_channel_names`, which leaves it out.
MASK_CHANNEL_NAME = "cell mask"


@dataclass
class ObjectTable:
    labels: np.ndarray  # (N,) int64 object ids, ascending
    centroids: np.ndarray  # (N, 2) float64 (y, x) in pixels
    areas: np.ndarray  # (N,) int64 pixels

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def centres(self) -> np.ndarray:
        """(N, 2) int64 pixel each tile is centred on (the rounded centroid)."""
        return np.floor(self.centroids + 0.5).astype(np.int64)


def check_masks(
    masks: np.ndarray, shape: tuple[int, ...] | None = None, source: str = "objects"
) -> np.ndarray:
    """A (Y, X) int64 instance mask, or ValueError (not 2-D, fractions, negative ids, wrong shape)."""
    array = np.squeeze(np.asarray(masks))
    if array.ndim != 2:
        raise ValueError(f"{source}: an instance mask must be 2-D (Y, X); got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if array.dtype == bool or not np.all(np.mod(array, 1) == 0):
            raise ValueError(f"{source}: an instance mask must hold whole-number object ids")
    if array.size and array.min() < 0:
        raise ValueError(f"{source}: object ids must be >= 0 (0 = background)")
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(
            f"{source}: instance mask is {array.shape[0]}x{array.shape[1]} "
            f"but the image is {shape[0]}x{shape[1]}"
        )
    return array.astype(np.int64, copy=False)


def _compact(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids present, mask renumbered 1..N in id order): sparse ids such as 60000 cost nothing."""
    ids = np.unique(masks)
    ids = ids[ids != 0]
    return ids, np.searchsorted(np.concatenate([[0], ids]), masks)


def measure_objects(masks: np.ndarray) -> ObjectTable:
    masks = check_masks(masks)
    return _measure(*_compact(masks))


def _measure(ids: np.ndarray, compact: np.ndarray) -> ObjectTable:
    flat = compact.ravel()
    n = len(ids) + 1
    areas = np.bincount(flat, minlength=n)
    yy, xx = np.indices(compact.shape)
    sum_y = np.bincount(flat, weights=yy.ravel(), minlength=n)
    sum_x = np.bincount(flat, weights=xx.ravel(), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = np.stack([sum_y[1:] / areas[1:], sum_x[1:] / areas[1:]], axis=1)
    return ObjectTable(ids.astype(np.int64), centroids.reshape(-1, 2), areas[1:].astype(np.int64))


def object_tiles(
    image_cyx: np.ndarray,
    masks: np.ndarray,
    tile_size: int,
    table: ObjectTable | None = None,
    blank_background: bool = DEFAULT_BLANK_BACKGROUND,
    mask_channel: bool = DEFAULT_MASK_CHANNEL,
) -> np.ndarray:
    """(N, C, T, T) tiles (the image's dtype; float32 when blanking or with the mask channel),
    one per object of `table` (default: every object of `masks`), centred on the rounded
    centroid: with an even T the centre pixel is at T // 2. Pixels beyond the field are the field
    reflected at its edge. `mask_channel`: C + 1 channels, the last one 1.0 where the tile shows
    the object (its mask reflected like the image; with `blank_background`, only its pixels
    inside the field, the ones the blanking keeps). It is raw 0/1, never normalised (the model's
    Normalization leaves it as it is: `unscaled` channels)."""
    image = np.asarray(image_cyx)
    if image.ndim == 2:
        image = image[np.newaxis]
    masks = check_masks(masks, image.shape[1:])
    table = table if table is not None else measure_objects(masks)
    size = int(tile_size)
    half = size // 2
    pad = size  # enough on every side for any centre inside the field
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    centres = table.centres
    n_channels = image.shape[0]
    dtype = np.float32 if blank_background or mask_channel else image.dtype
    out = np.empty((len(table), n_channels + int(mask_channel), size, size), dtype=dtype)
    if blank_background:
        # Zero beyond the field: the reflected copy of an edge cell is not the cell.
        padded_masks = np.pad(masks, pad, mode="constant")
    elif mask_channel:
        # Reflected like the image, so the mask lies on the pixels it describes.
        padded_masks = np.pad(masks, pad, mode="reflect")
    for n, (cy, cx) in enumerate(centres):
        y0, x0 = int(cy) - half + pad, int(cx) - half + pad
        tile = padded[:, y0 : y0 + size, x0 : x0 + size]
        if blank_background or mask_channel:
            keep = padded_masks[y0 : y0 + size, x0 : x0 + size] == table.labels[n]
        out[n, :n_channels] = tile * keep if blank_background else tile
        if mask_channel:
            out[n, n_channels] = keep
    return out


@dataclass
class ObjectIndex:
    """One instance mask's objects and its renumbering, built once (`index_objects`) and reused
    for every painted label image: the np.unique sort behind it is most of the cost of a count,
    and it depends on the mask only. `classes` is the one counting rule (`object_classes`,
    `count_objects` and the widget's per-paint counts all go through it)."""

    table: ObjectTable
    compact: np.ndarray  # (Y, X) int64: 0 = background, object n of `table` (0-based) = n + 1

    def classes(self, painted: np.ndarray, n_classes: int) -> np.ndarray:
        """Class per object 0..n_classes: the painted label (1..K) that covers most of the
        object's painted pixels (ties: the lower class); 0 = none of its pixels is painted.
        Painted values above n_classes -> ValueError."""
        painted = np.asarray(painted)
        if painted.shape != self.compact.shape:
            raise ValueError(
                f"label image {painted.shape} does not match the instance mask {self.compact.shape}"
            )
        painted = painted.astype(np.int64, copy=False)
        top = int(painted.max(initial=0))
        if top > n_classes:
            raise ValueError(f"label value {top} is painted but there are only {n_classes} classes")
        if painted.size and painted.min() < 0:
            raise ValueError("label values must be >= 0 (0 = unlabelled)")
        n, k = len(self.table), n_classes + 1
        joint = np.bincount((self.compact * k + painted).ravel(), minlength=(n + 1) * k)
        votes = joint.reshape(n + 1, k)[1:, 1:]  # objects x classes 1..K
        classes = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1) + 1, 0) if n else np.zeros(0)
        return np.asarray(classes, dtype=np.int64)

    def counts(self, painted: np.ndarray, n_classes: int) -> list[int]:
        """Labelled objects per class (1..n_classes), by `classes`' rule."""
        classes = self.classes(painted, n_classes)
        return [int(v) for v in np.bincount(classes, minlength=n_classes + 1)[1 : n_classes + 1]]

    @functools.cached_property
    def border(self) -> tuple[np.ndarray, np.ndarray]:
        """(flat pixel index, compact id) of every object pixel on a border: a pixel whose right
        or lower neighbour is another id (both sides marked). Computed on first use."""
        compact = self.compact
        border = np.zeros(compact.shape, bool)
        for axis in (0, 1):
            step = np.diff(compact, axis=axis) != 0
            lead = [slice(None)] * 2
            lead[axis] = slice(0, -1)
            trail = [slice(None)] * 2
            trail[axis] = slice(1, None)
            border[tuple(lead)] |= step
            border[tuple(trail)] |= step
        border &= compact > 0
        flat = np.flatnonzero(border)
        return flat, compact.ravel()[flat]


def index_objects(masks: np.ndarray) -> ObjectIndex:
    masks = check_masks(masks)
    ids, compact = _compact(masks)
    return ObjectIndex(_measure(ids, compact), compact)


def object_classes(masks: np.ndarray, painted: np.ndarray, n_classes: int) -> tuple[ObjectTable, np.ndarray]:
    """(objects, class per object 0..n_classes) by `ObjectIndex.classes`' rule."""
    index = index_objects(masks)
    return index.table, index.classes(painted, n_classes)


def count_objects(masks: np.ndarray, painted: np.ndarray, n_classes: int) -> list[int]:
    """Labelled objects per class (1..n_classes), by `object_classes`' rule."""
    return index_objects(masks).counts(painted, n_classes)


@dataclass
class ObjectProgress:
    done: int  # objects classified so far
    total: int
    stage: str = "classify"
    unit: ClassVar[str] = "cells"  # what `done` counts, in words (progress text, readouts)


@dataclass
class ObjectPrediction:
    """Per-object probabilities of one field; `table()` gives its rows."""

    objects: ObjectTable
    probabilities: np.ndarray  # (N, K) float32, rows in `objects` order
    class_names: list[str]
    cancelled: bool = False  # stopped early: only the first `len(probabilities)` objects
    unit: ClassVar[str] = ObjectProgress.unit

    @property
    def indices(self) -> np.ndarray:
        """Object ids that were classified (what a tile prediction's `indices` are to tiles)."""
        return self.objects.labels[: len(self.probabilities)]

    @property
    def predicted(self) -> np.ndarray:  # (N,) 0..K-1
        return np.asarray(self.probabilities.argmax(axis=1) if len(self.probabilities) else [], np.int64)

    @property
    def confidence(self) -> np.ndarray:
        return np.asarray(self.probabilities.max(axis=1) if len(self.probabilities) else [], np.float32)

    def table(self) -> dict[str, np.ndarray]:
        """Columns, one row per classified object: label, centroid_y, centroid_x, area, class
        (1-based), class_name, confidence, p_<class name>."""
        n = len(self.probabilities)
        predicted = self.predicted
        names = np.array(self.class_names, dtype=object)
        columns: dict[str, np.ndarray] = {
            "label": self.objects.labels[:n],
            "centroid_y": self.objects.centroids[:n, 0],
            "centroid_x": self.objects.centroids[:n, 1],
            "area": self.objects.areas[:n],
            "class": predicted + 1,
            "class_name": names[predicted] if n else np.zeros(0, dtype=object),
            "confidence": self.confidence,
        }
        for k, name in enumerate(self.class_names):
            columns[f"p_{name}"] = self.probabilities[:n, k].astype(np.float32)
        return columns


def classify_objects(
    classifier,
    image_cyx: np.ndarray,
    masks: np.ndarray,
    blank_background: bool = DEFAULT_BLANK_BACKGROUND,
    stop: threading.Event | None = None,
    mask_channel: bool = DEFAULT_MASK_CHANNEL,
) -> Generator[ObjectProgress, None, ObjectPrediction]:
    """One tile per object of `masks` (cut as `object_tiles` does with these options: pass
    `model_settings(meta)`), classified batch by batch through `classifier.predict_tiles`
    (normalisation, ensembles and TTA as in tile mode; the mask channel is left unnormalised by
    the model's Normalization); a set `stop` ends it after the current batch with the objects
    done so far (`cancelled`)."""
    table = measure_objects(masks)
    tiles = object_tiles(image_cyx, masks, classifier.tile_size, table, blank_background, mask_channel)
    n_classes = len(classifier.class_names)
    probabilities = np.zeros((len(tiles), n_classes), np.float32)
    batch = max(int(getattr(classifier, "batch_size", 256)), 1)
    done = 0
    while done < len(tiles):
        if stop is not None and stop.is_set():
            break
        chunk = tiles[done : done + batch]
        probabilities[done : done + len(chunk)] = classifier.predict_tiles(chunk)
        done += len(chunk)
        yield ObjectProgress(done, len(tiles))
    return ObjectPrediction(table, probabilities[:done], list(classifier.class_names), done < len(tiles))


def settings_extra(blank_background: bool, mask_channel: bool = DEFAULT_MASK_CHANNEL) -> dict[str, Any]:
    """What a model trained on objects stores in `meta.extra[EXTRA_KEY]`."""
    return {"blank_background": bool(blank_background), "mask_channel": bool(mask_channel)}


def stored_settings(extra: dict | None) -> dict[str, Any]:
    """The object settings in a model's `extra` mapping (missing keys: the defaults, so a model
    saved before an option existed reads as trained without it). For `model_settings` and the
    model file's schema check, which has the metadata as a dict, not yet a ModelMeta."""
    stored = ((extra or {}).get(EXTRA_KEY)) or {}
    return {
        "blank_background": bool(stored.get("blank_background", DEFAULT_BLANK_BACKGROUND)),
        "mask_channel": bool(stored.get("mask_channel", DEFAULT_MASK_CHANNEL)),
    }


def model_settings(meta) -> dict[str, Any]:
    """The object settings `meta` was trained with (a model without them: the defaults)."""
    return stored_settings(getattr(meta, "extra", None))


def image_channel_names(meta) -> list[str]:
    """The channels `meta`'s model reads from the image, in order: its channel names without the
    trailing mask channel (which object_tiles adds, no image has). What channel matching
    (channels.model_channel_indices) is given, in every face."""
    names = list(meta.channel_names)
    return names[:-1] if model_settings(meta)["mask_channel"] else names


def tile_mode_problem(meta) -> str | None:
    """Why `meta`'s model cannot classify a tile grid (None when it can): a model that reads the
    cell's mask as a channel has no mask for a grid tile. The one message of the CLI's refusal
    and the widget's disabled Classify button."""
    if not model_settings(meta)["mask_channel"]:
        return None
    return (
        f"this model reads each cell's mask as an extra channel ('{MASK_CHANNEL_NAME}'): it "
        "classifies the cells of an instance mask, not tiles of a grid"
    )


def predict_objects(
    classifier,
    image_cyx: np.ndarray,
    masks: np.ndarray,
    blank_background: bool = DEFAULT_BLANK_BACKGROUND,
    mask_channel: bool = DEFAULT_MASK_CHANNEL,
) -> dict[str, np.ndarray]:
    """`classify_objects` run to the end: its table, one row per object."""
    from ._generators import drive

    prediction = classify_objects(classifier, image_cyx, masks, blank_background, mask_channel=mask_channel)
    return drive(prediction).table()
