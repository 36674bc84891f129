"""Labelled data, from every labelling source, into the engine's `data.TileDataset`. No Qt.

The use-case layer between the faces and the engine: the CLI (folders of files) and the widget
(napari layers) both describe what the user labelled as *sources*, and this package makes the
decisions once:
- `count_tiles(sources, spec, class_names)`: the ONE count of labelled tiles per class (what the
  widget shows while painting, what the CLI reports), computed with the very grid and rules
  `build_dataset` uses, so the count shown is the number of tiles the model receives.
- `problems(counts)`: the ONE list of reasons training would fail or mislead
  (`data.trainability_problems`, which `data.check_trainable` raises on).
- `training_problems(counts, class_names, named_channels)` (`checks.py`): the above plus
  sources whose channels cannot be stacked together; what both faces check before training.
- `build_dataset(sources, spec, class_names, channel_names)`: the tiles themselves.

Sources (`sources.py`):
- `PaintedLabels`: a field with a painted label image (0 = unlabelled, k = class k); a tile takes
  the majority class when at least `TileSpec.min_fraction` of it is painted.
- `WholeImage`: every tile of a field is one class (the original method); optionally only
  foreground tiles.
- `ClassFolders`: root/<class>/<image>, each image resized to one tile or cut into tiles.
- `InstanceObjects`: a field with an instance mask and a painted label image; each object is
  one tile centred on it, of the majority painted class inside it (`objects.py`).

Folder layouts on disk (`folders.py`, used by the CLI): `detect_layout`, `label_pairs` (pairs
`<stem>.tif` / `<stem>.ome.tif` with `<stem>_labels.tif`; with `<stem>_objects.tif` instance
masks beside them the layout is "objects"), `load_folder`.
"""

from __future__ import annotations

from .checks import channel_problems, training_problems
from .folders import (
    LABELS_SUFFIX,
    DatasetError,
    Layout,
    class_folder_names,
    detect_layout,
    field_stem,
    label_pairs,
    load_folder,
    probe_image,
    read_label_image,
)
from .sources import (
    ClassFolders,
    InstanceObjects,
    PaintedLabels,
    Source,
    TileCounts,
    TileSpec,
    WholeImage,
    build_dataset,
    count_painted,
    count_tiles,
    count_whole,
    painted_tile_classes,
    problem_messages,
    problems,
    split_positions,
    whole_image_tiles,
    whole_tile_classes,
)

__all__ = [
    "channel_problems",
    "training_problems",
    "LABELS_SUFFIX",
    "DatasetError",
    "class_folder_names",
    "Layout",
    "detect_layout",
    "field_stem",
    "label_pairs",
    "load_folder",
    "probe_image",
    "read_label_image",
    "ClassFolders",
    "InstanceObjects",
    "PaintedLabels",
    "Source",
    "TileCounts",
    "TileSpec",
    "WholeImage",
    "build_dataset",
    "count_painted",
    "count_tiles",
    "count_whole",
    "painted_tile_classes",
    "split_positions",
    "whole_tile_classes",
    "problems",
    "problem_messages",
    "whole_image_tiles",
]
