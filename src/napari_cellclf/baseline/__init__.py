"""A classical baseline: handcrafted per-channel features + logistic regression / random forest.

What a CellProfiler + CellProfiler Analyst user would build in twenty minutes, inside the engine,
so every training can say whether the CNN earns its keep on the user's own validation split.
No Qt, no napari.

Features (`extract_features`, raw (N, C, T, T) tiles -> (N, F) float64 and F names), per channel:
- intensity: mean, std, min, max, percentiles 5/25/50/75/95, skew, excess kurtosis, total;
- the thresholded object (Otsu per tile): foreground fraction, mean inside/outside, integrated
  intensity above the background, number of objects, and of the largest object (scikit-image
  regionprops): area, perimeter, eccentricity, solidity, extent, major/minor axis length;
- GLCM texture on the tile quantised to 16 grey levels (between its 1st and 99th percentile):
  contrast, dissimilarity, homogeneity, energy, correlation at distances 1 and 2, averaged over
  the angles 0, 45, 90, 135 degrees (the same numbers as skimage graycomatrix(symmetric=True,
  normed=True) + graycoprops, computed for all tiles at once);
- LBP: histogram of uniform local binary patterns (P=8, R=1), 10 bins;
and the Pearson correlation of every pair of channels.

`crude_features` is the "5-feature" set of the classic baseline: per channel total, std, max,
median (background) and Otsu foreground area.

The package, one module a seam:
- features.py    tiles -> feature table (`extract_features`, `crude_features`, `features_for`);
- classifier.py  `FeatureModel`: fit with scikit-learn, predict with numpy from exported arrays;
- compare.py     the baselines against the CNN on one split (`compare_on_split`, the sentence);
- featurenet.py  a features model as a model of its own (`--arch features`): `train_features`,
                 `FeatureNet` and its model-file tensors.
"""

from .classifier import KINDS, FeatureModel
from .compare import (
    METHOD_LABELS,
    METHODS,
    compare_on_split,
    compare_on_training_split,
    comparison_sentence,
)
from .featurenet import (
    ATTRIBUTION_REFUSAL,
    FEATURES_ARCHITECTURE,
    SPEC_KEY,
    TENSOR_PREFIX,
    TRAIN_KINDS,
    FeatureNet,
    file_tensors,
    identity_normalization,
    is_feature_model,
    model_from_file,
    train_features,
)
from .features import (
    FEATURE_SETS,
    crude_features,
    extract_features,
    features_for,
    glcm_features,
    lbp_histograms,
)

__all__ = [
    "ATTRIBUTION_REFUSAL",
    "FEATURES_ARCHITECTURE",
    "FEATURE_SETS",
    "KINDS",
    "METHODS",
    "METHOD_LABELS",
    "SPEC_KEY",
    "TENSOR_PREFIX",
    "TRAIN_KINDS",
    "FeatureModel",
    "FeatureNet",
    "compare_on_split",
    "compare_on_training_split",
    "comparison_sentence",
    "crude_features",
    "extract_features",
    "features_for",
    "file_tensors",
    "glcm_features",
    "identity_normalization",
    "is_feature_model",
    "lbp_histograms",
    "model_from_file",
    "train_features",
]
