"""Labelled tiles for training and evaluation, plus normalisation. No Qt.

- Class indices inside the engine are 0..K-1; label-image values are 1..K (0 = unlabelled).
- Every dataset carries `groups` (which field of view / file a tile came from) and the tile's
  grid position, so validation splits never share a field (or neighbouring tiles) across sides.
- Normalisation statistics come from training data and travel with the model; per-tile
  normalisation only when asked for (it destroys absolute-brightness signal).

The package, one module a seam:
- dataset.py        `TileDataset`, the folder/normalisation modes, `concat_datasets` and the one
                    "is this trainable" rule (`trainability_problems`, `check_trainable`);
- build.py          datasets from label images, whole images and class folders (`from_*`);
- normalization.py  `Normalization` and `fit_normalization`;
- split.py          `split_train_val` (whole fields out, or a block with its neighbours dropped).
"""

from .build import from_class_folders, from_label_images, from_whole_images
from .dataset import (
    FEW_TILES_PER_CLASS,
    FOLDER_MODES,
    MIN_TILES_PER_CLASS,
    NORMALIZATION_MODES,
    FolderMode,
    NormalizationMode,
    Problem,
    TileDataset,
    _dataset,
    check_label_values,
    check_trainable,
    concat_datasets,
    label_values,
    short_list,
    trainability_problems,
)
from .normalization import Normalization, fit_normalization
from .split import MAX_GROUP_OVERSHOOT, split_train_val

__all__ = [
    "FEW_TILES_PER_CLASS",
    "_dataset",
    "FOLDER_MODES",
    "MAX_GROUP_OVERSHOOT",
    "MIN_TILES_PER_CLASS",
    "NORMALIZATION_MODES",
    "FolderMode",
    "Normalization",
    "NormalizationMode",
    "Problem",
    "TileDataset",
    "check_label_values",
    "check_trainable",
    "concat_datasets",
    "fit_normalization",
    "from_class_folders",
    "from_label_images",
    "from_whole_images",
    "label_values",
    "short_list",
    "split_train_val",
    "trainability_problems",
]
