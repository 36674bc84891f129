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

Everything but the regionprops and LBP loop is vectorised over tiles; see `extract_features`.

`crude_features` is the "5-feature" set of the classic baseline: per channel total, std, max,
median (background) and Otsu foreground area.

`FeatureModel` predicts with plain numpy from arrays it can hand out (`to_tensors`) and be rebuilt
from (`from_tensors`): no pickle, so it can live in a safetensors model file.

As a model of its own (architecture "features"): `train_features` fits one on the CNN's
train/validation split and returns a training.TrainingResult whose model is a `FeatureNet`, an
nn.Module returning log-probabilities, so modelfile.save_model/load_model and
inference.Classifier take it like a CNN. It cannot be explained: attribution asks it for an input
gradient and gets ValueError(ATTRIBUTION_REFUSAL).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

FEATURE_SETS = ("rich", "crude")
KINDS = ("logistic", "random_forest")
# compare_on_split's methods: (name, feature set, model kind).
METHODS = (
    ("logistic_5", "crude", "logistic"),
    ("logistic", "rich", "logistic"),
    ("random_forest", "rich", "random_forest"),
)
METHOD_LABELS = {
    "logistic_5": "5-feature logistic regression",
    "logistic": "classical features, logistic regression",
    "random_forest": "classical features, random forest",
}

_PERCENTILES = (5, 25, 50, 75, 95)
_GLCM_LEVELS = 16
_GLCM_DISTANCES = (1, 2)
_GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
_GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
_LBP_POINTS, _LBP_RADIUS = 8, 1
_OTSU_BINS = 128
_CHUNK_PIXELS = 2**18
_SHAPE_PROPS = (
    "area",
    "perimeter",
    "eccentricity",
    "solidity",
    "extent",
    "major_axis_length",
    "minor_axis_length",
)


# ------------------------------------------------------------------------------------ features


def _check_tiles(tiles) -> np.ndarray:
    tiles = np.asarray(tiles)
    if tiles.ndim != 4:
        raise ValueError(f"tiles must be (N, C, T, T), got shape {tiles.shape}")
    if not (np.issubdtype(tiles.dtype, np.number) or tiles.dtype == bool):
        raise ValueError(f"tiles must be numeric, got dtype {tiles.dtype}")
    return tiles


def _channel_names(n_channels: int, channel_names) -> list[str]:
    if channel_names is None:
        return [f"ch{c}" for c in range(n_channels)]
    names = [str(c) for c in channel_names]
    if len(names) != n_channels:
        raise ValueError(f"{len(names)} channel names for {n_channels} channels")
    return names


def _otsu_thresholds(rows: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Otsu threshold of every row (foreground: value > threshold), from a 128-bin histogram
    between the row's min and max; a flat row gets its own value (no foreground)."""
    m, p = rows.shape
    span = high - low
    flat = span <= 0
    scale = np.divide(_OTSU_BINS, span, out=np.zeros_like(span), where=~flat)
    bins = np.clip(((rows - low[:, None]) * scale[:, None]).astype(np.int64), 0, _OTSU_BINS - 1)
    hist = (
        np.bincount((bins + np.arange(m)[:, None] * _OTSU_BINS).ravel(), minlength=m * _OTSU_BINS)
        .reshape(m, _OTSU_BINS)
        .astype(np.float64)
    )
    centres = np.arange(_OTSU_BINS) + 0.5
    weight0 = np.cumsum(hist, axis=1)[:, :-1]
    sum0 = np.cumsum(hist * centres, axis=1)[:, :-1]
    weight1 = p - weight0
    total = (hist * centres).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean0 = sum0 / weight0
        mean1 = (total - sum0) / weight1
        between = weight0 * weight1 * (mean0 - mean1) ** 2
    between = np.where((weight0 > 0) & (weight1 > 0), between, -1.0)
    cut = np.argmax(between, axis=1) + 1  # foreground: bins >= cut
    thresholds = low + cut * np.divide(span, _OTSU_BINS)
    # Values exactly at the cut edge: compare in bin space, so the mask equals bins >= cut.
    return np.where(flat, high, np.nextafter(thresholds, -np.inf))


def _quantise(rows: np.ndarray, levels: int) -> np.ndarray:
    """Each row scaled between its 1st and 99th percentile to 0..levels-1 (int64)."""
    low, high = np.percentile(rows, (1, 99), axis=1)
    span = high - low
    scale = np.divide(levels, span, out=np.zeros_like(span), where=span > 0)
    return np.clip(((rows - low[:, None]) * scale[:, None]).astype(np.int64), 0, levels - 1)


def glcm_features(quantised: np.ndarray, levels: int = _GLCM_LEVELS) -> np.ndarray:
    """(M, T, T) ints in 0..levels-1 -> (M, distances x props) GLCM properties, averaged over
    the angles; equal to skimage graycomatrix(symmetric=True, normed=True) + graycoprops."""
    m, h, w = quantised.shape
    i_idx, j_idx = np.meshgrid(np.arange(levels), np.arange(levels), indexing="ij")
    diff = (i_idx - j_idx).astype(np.float64)
    out = np.zeros((m, len(_GLCM_DISTANCES), len(_GLCM_PROPS)))
    tile_offset = (np.arange(m) * levels * levels)[:, None, None]
    for d_index, distance in enumerate(_GLCM_DISTANCES):
        for angle in _GLCM_ANGLES:
            dy, dx = int(round(np.sin(angle) * distance)), int(round(np.cos(angle) * distance))
            r0, r1 = max(0, -dy), h - max(0, dy)  # pairs (r, c) -> (r + dy, c + dx)
            c0, c1 = max(0, -dx), w - max(0, dx)
            a = quantised[:, r0:r1, c0:c1]
            b = quantised[:, r0 + dy : r1 + dy, c0 + dx : c1 + dx]
            counts = np.bincount(
                (tile_offset + a * levels + b).ravel(), minlength=m * levels * levels
            ).reshape(m, levels, levels)
            glcm = (counts + counts.transpose(0, 2, 1)).astype(np.float64)
            total = glcm.sum(axis=(1, 2), keepdims=True)
            glcm /= np.where(total > 0, total, 1.0)
            contrast = (glcm * diff**2).sum(axis=(1, 2))
            dissimilarity = (glcm * np.abs(diff)).sum(axis=(1, 2))
            homogeneity = (glcm / (1.0 + diff**2)).sum(axis=(1, 2))
            energy = np.sqrt((glcm**2).sum(axis=(1, 2)))
            mean_i = (glcm * i_idx).sum(axis=(1, 2))
            mean_j = (glcm * j_idx).sum(axis=(1, 2))
            di = i_idx[None] - mean_i[:, None, None]
            dj = j_idx[None] - mean_j[:, None, None]
            std_i = np.sqrt((glcm * di**2).sum(axis=(1, 2)))
            std_j = np.sqrt((glcm * dj**2).sum(axis=(1, 2)))
            cov = (glcm * di * dj).sum(axis=(1, 2))
            flat = (std_i < 1e-15) | (std_j < 1e-15)  # skimage's convention: 1
            with np.errstate(divide="ignore", invalid="ignore"):
                correlation = np.where(flat, 1.0, cov / (std_i * std_j))
            out[:, d_index] += np.stack([contrast, dissimilarity, homogeneity, energy, correlation], axis=1)
    out /= len(_GLCM_ANGLES)
    return out.reshape(m, -1)


def _planar(kernel2d: np.ndarray) -> np.ndarray:
    """A 2-D kernel as a 3-D one that never reaches across tiles (axis 0)."""
    kernel = np.zeros((3, *kernel2d.shape), kernel2d.dtype)
    kernel[1] = kernel2d
    return kernel


_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2.0)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + np.sqrt(2.0)) / 2


def _largest_objects(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, T, T) foreground masks -> (number of 8-connected objects per tile, (M, T, T) mask of
    each tile's largest object). One labelling call for all tiles."""
    from scipy import ndimage

    m = len(masks)
    labelled, n_labels = ndimage.label(masks, structure=_planar(np.ones((3, 3), bool)))
    if n_labels == 0:
        return np.zeros(m, np.int64), np.zeros_like(masks, dtype=bool)
    flat = labelled.reshape(m, -1)
    sizes = np.bincount(flat.ravel(), minlength=n_labels + 1)
    tile_of = np.zeros(n_labels + 1, np.int64)
    nonzero = flat > 0
    tile_of[flat[nonzero]] = np.nonzero(nonzero)[0]
    n_objects = np.bincount(tile_of[1:], minlength=m)
    order = np.lexsort((sizes[1:], tile_of[1:])) + 1  # by tile, then by size
    largest = np.zeros(m, np.int64)
    largest[tile_of[order]] = order  # the last (largest) one wins
    return n_objects, (labelled == largest[:, None, None]) & (largest[:, None, None] > 0)


def _shape_features(objects: np.ndarray) -> np.ndarray:
    """(M, T, T) object masks (one object or none per tile) -> (M, 7): the regionprops area,
    perimeter (4-neighbourhood), eccentricity, solidity, extent, major and minor axis length,
    computed for all tiles at once except the convex hull (scipy's qhull, one call per tile)."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull

    m, h, w = objects.shape
    weights = objects.astype(np.float64)
    area = weights.sum(axis=(1, 2))
    safe_area = np.where(area > 0, area, 1.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy = (weights * yy).sum(axis=(1, 2)) / safe_area
    cx = (weights * xx).sum(axis=(1, 2)) / safe_area
    dy, dx = yy - cy[:, None, None], xx - cx[:, None, None]
    a = (weights * dy * dy).sum(axis=(1, 2)) / safe_area
    b = (weights * dy * dx).sum(axis=(1, 2)) / safe_area
    c = (weights * dx * dx).sum(axis=(1, 2)) / safe_area
    root = np.sqrt(((a - c) / 2) ** 2 + b**2)
    major_ev = np.maximum((a + c) / 2 + root, 0.0)
    minor_ev = np.maximum((a + c) / 2 - root, 0.0)
    eccentricity = np.sqrt(
        1.0 - np.divide(minor_ev, major_ev, out=np.ones_like(major_ev), where=major_ev > 0)
    )
    # Perimeter: skimage.measure.perimeter's border-pixel weights, all tiles in one convolution.
    as_int = objects.astype(np.uint8)
    eroded = ndimage.binary_erosion(
        as_int, _planar(np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)), border_value=0
    )
    border = as_int - eroded.astype(np.uint8)
    codes = ndimage.convolve(
        border, _planar(np.array([[10, 2, 10], [2, 1, 2], [10, 2, 10]], np.uint8)), mode="constant", cval=0
    )
    perimeter = _PERIMETER_WEIGHTS[np.minimum(codes, 49)].sum(axis=(1, 2))
    # Bounding box -> extent.
    rows_any, cols_any = objects.any(axis=2), objects.any(axis=1)
    height = h - np.argmax(rows_any[:, ::-1], axis=1) - np.argmax(rows_any, axis=1)
    width = w - np.argmax(cols_any[:, ::-1], axis=1) - np.argmax(cols_any, axis=1)
    extent = np.where(area > 0, area / np.maximum(height * width, 1), 0.0)
    # Solidity: area / area of the convex hull of the object's pixel squares (the outlines'
    # pixels suffice; qhull on their corners never degenerates).
    solidity = np.zeros(m)
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float64)
    for i in np.flatnonzero(area > 0):
        points = np.argwhere(border[i]).astype(np.float64)
        points = (points[:, None, :] + corners[None]).reshape(-1, 2)
        solidity[i] = min(1.0, area[i] / ConvexHull(points).volume)
    return np.column_stack(
        [area, perimeter, eccentricity, solidity, extent, 4 * np.sqrt(major_ev), 4 * np.sqrt(minor_ev)]
    )


def lbp_histograms(images: np.ndarray) -> np.ndarray:
    """(M, T, T) images -> (M, 10) fractions of skimage's uniform LBP codes (P=8, R=1), computed
    for all tiles at once with skimage's sampling (bilinear, zero outside the tile) and code."""
    m, h, w = images.shape
    padded = np.zeros((m, h + 2, w + 2))
    padded[:, 1:-1, 1:-1] = images
    centre = padded[:, 1:-1, 1:-1]
    signs = []
    for p in range(_LBP_POINTS):
        rr = round(-_LBP_RADIUS * np.sin(2 * np.pi * p / _LBP_POINTS), 5)
        cc = round(_LBP_RADIUS * np.cos(2 * np.pi * p / _LBP_POINTS), 5)
        r0, c0 = int(np.floor(rr)), int(np.floor(cc))
        r1, c1 = int(np.ceil(rr)), int(np.ceil(cc))
        dr, dc = rr - r0, cc - c0

        def at(oy, ox):
            return padded[:, 1 + oy : 1 + oy + h, 1 + ox : 1 + ox + w]

        top = (1 - dc) * at(r0, c0) + dc * at(r0, c1)
        bottom = (1 - dc) * at(r1, c0) + dc * at(r1, c1)
        signs.append(((1 - dr) * top + dr * bottom) - centre >= 0)
    signs = np.stack(signs)  # (P, M, T, T)
    changes = (signs[:-1] != signs[1:]).sum(axis=0)  # skimage: not circular
    codes = np.where(changes <= 2, signs.sum(axis=0), _LBP_POINTS + 1)
    counts = np.bincount(
        (codes + np.arange(m)[:, None, None] * (_LBP_POINTS + 2)).ravel(), minlength=m * (_LBP_POINTS + 2)
    ).reshape(m, _LBP_POINTS + 2)
    return counts / float(h * w)


def _per_channel_names(channel_names: list[str], names: list[str]) -> list[str]:
    return [f"{channel}:{name}" for channel in channel_names for name in names]


def extract_features(tiles, channel_names=None) -> tuple[np.ndarray, list[str]]:
    """Raw (N, C, T, T) tiles -> ((N, F) float64 features, F names "channel:feature").

    Stateless (every statistic comes from the tile itself or the fixed recipe above), so the
    same tile always gives the same features; constant or empty tiles give finite values."""
    tiles = _check_tiles(tiles)
    n, c, h, w = tiles.shape
    channels = _channel_names(c, channel_names)
    if n == 0:
        features, names = _extract_chunk(np.zeros((1, c, h, w), np.float32), channels)
        return features[:0], names
    # Chunks of tiles keep the temporaries in cache: 6.9 s of CPU time instead of 12.5 s all at
    # once (measured on 3,000 x 3 random tiles of 40 px).
    step = max(1, _CHUNK_PIXELS // (c * h * w))
    chunks = [_extract_chunk(tiles[start : start + step], channels) for start in range(0, n, step)]
    return np.concatenate([chunk for chunk, _ in chunks]), chunks[0][1]


def _extract_chunk(tiles: np.ndarray, channels: list[str]) -> tuple[np.ndarray, list[str]]:
    n, c, h, w = tiles.shape
    m = n * c
    rows = tiles.reshape(m, h * w).astype(np.float64)
    parts, names = [], []

    # Intensity statistics (vectorised).
    mean = rows.mean(axis=1)
    centred = rows - mean[:, None]
    var = (centred**2).mean(axis=1)
    std = np.sqrt(var)
    safe_var = np.where(var > 0, var, 1.0)
    skew = np.where(var > 0, (centred**3).mean(axis=1) / safe_var**1.5, 0.0)
    kurtosis = np.where(var > 0, (centred**4).mean(axis=1) / safe_var**2 - 3.0, 0.0)
    low, high = rows.min(axis=1), rows.max(axis=1)
    percentiles = np.percentile(rows, _PERCENTILES, axis=1).T
    parts.append(np.column_stack([mean, std, low, high, percentiles, skew, kurtosis, rows.sum(axis=1)]))
    names += ["mean", "std", "min", "max", *[f"p{q}" for q in _PERCENTILES], "skew", "kurtosis", "total"]

    # The thresholded object.
    thresholds = _otsu_thresholds(rows, low, high)
    masks = rows > thresholds[:, None]
    n_fg = masks.sum(axis=1)
    n_bg = h * w - n_fg
    fg_sum = (rows * masks).sum(axis=1)
    fg_mean = np.divide(fg_sum, n_fg, out=mean.copy(), where=n_fg > 0)
    bg_mean = np.divide(rows.sum(axis=1) - fg_sum, n_bg, out=mean.copy(), where=n_bg > 0)
    integrated = fg_sum - n_fg * bg_mean
    quantised = _quantise(rows, _GLCM_LEVELS).reshape(m, h, w)
    lbp_image = _quantise(rows, 256).astype(np.uint8).reshape(m, h, w)
    n_objects, objects = _largest_objects(masks.reshape(m, h, w))
    shape = _shape_features(objects)
    lbp = lbp_histograms(lbp_image)
    parts.append(np.column_stack([n_fg / (h * w), fg_mean, bg_mean, integrated, n_objects, shape]))
    names += [
        "foreground_fraction",
        "foreground_mean",
        "background_mean",
        "integrated_intensity",
        "n_objects",
        *[f"object_{p}" for p in _SHAPE_PROPS],
    ]

    # Texture.
    parts.append(glcm_features(quantised))
    names += [f"glcm_{p}_d{d}" for d in _GLCM_DISTANCES for p in _GLCM_PROPS]
    parts.append(lbp)
    names += [f"lbp_{k}" for k in range(_LBP_POINTS + 2)]

    per_channel = np.concatenate(parts, axis=1).reshape(n, c * len(names))
    features, all_names = [per_channel], _per_channel_names(channels, names)

    # Channel-to-channel correlation (co-localisation, translocation).
    if c > 1:
        z = np.divide(centred, std[:, None], out=np.zeros_like(centred), where=std[:, None] > 0)
        z = z.reshape(n, c, h * w)
        pairs = [(a, b) for a in range(c) for b in range(a + 1, c)]
        features.append(np.stack([(z[:, a] * z[:, b]).mean(axis=1) for a, b in pairs], axis=1))
        all_names += [f"{channels[a]}~{channels[b]}:correlation" for a, b in pairs]
    out = np.concatenate(features, axis=1)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), all_names


def crude_features(tiles, channel_names=None) -> tuple[np.ndarray, list[str]]:
    """The classic "5-feature" set, per channel: total, std, max, median (background) and the
    Otsu foreground area. ((N, 5 C) float64, names)."""
    tiles = _check_tiles(tiles)
    n, c, h, w = tiles.shape
    channels = _channel_names(c, channel_names)
    rows = tiles.reshape(n * c, h * w).astype(np.float64)
    low, high = rows.min(axis=1, initial=np.inf), rows.max(axis=1, initial=-np.inf)
    area = (rows > _otsu_thresholds(rows, low, high)[:, None]).sum(axis=1) if len(rows) else np.zeros(0)
    out = np.column_stack([rows.sum(axis=1), rows.std(axis=1), high, np.median(rows, axis=1), area]).reshape(
        n, c * 5
    )
    names = _per_channel_names(channels, ["total", "std", "max", "median", "foreground_area"])
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), names


def features_for(tiles, feature_set: str, channel_names=None) -> tuple[np.ndarray, list[str]]:
    if feature_set == "rich":
        return extract_features(tiles, channel_names)
    if feature_set == "crude":
        return crude_features(tiles, channel_names)
    raise ValueError(f"feature set must be one of {', '.join(FEATURE_SETS)}, got {feature_set!r}")


# --------------------------------------------------------------------------------------- models


@dataclass
class FeatureModel:
    """Features + a scikit-learn classifier, predicting with numpy from exported arrays.

    kind "logistic": StandardScaler + LogisticRegression(class_weight="balanced");
    kind "random_forest": RandomForestClassifier(class_weight="balanced", fixed seed).
    After `fit`, prediction never touches scikit-learn: the scaler, coefficients or trees are
    arrays (`to_tensors`), so a model rebuilt by `from_tensors` gives the very same numbers."""

    kind: str = "logistic"
    feature_set: str = "rich"
    n_classes: int | None = None
    seed: int = 0
    n_estimators: int = 100
    C: float = 1.0
    feature_names: list[str] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(
                f"feature_set must be one of {', '.join(FEATURE_SETS)}, got {self.feature_set!r}"
            )

    @property
    def fitted(self) -> bool:
        return bool(self.arrays)

    def features(self, tiles) -> np.ndarray:
        return features_for(tiles, self.feature_set)[0]

    def fit(self, tiles, labels, n_classes: int | None = None, channel_names=None) -> "FeatureModel":
        """Raw (N, C, T, T) tiles and labels 0..K-1 (K = n_classes, default max label + 1)."""
        features, names = features_for(tiles, self.feature_set, channel_names)
        return self.fit_features(features, labels, n_classes, names)

    def fit_features(
        self, features: np.ndarray, labels, n_classes: int | None = None, feature_names=None
    ) -> "FeatureModel":
        labels = np.asarray(labels, dtype=np.int64)
        features = np.asarray(features, dtype=np.float64)
        if len(features) != len(labels) or len(labels) == 0:
            raise ValueError(f"{len(features)} tiles for {len(labels)} labels")
        present = np.unique(labels)
        if len(present) < 2:
            raise ValueError("a classifier needs labelled tiles of at least two classes")
        if n_classes is None:
            n_classes = self.n_classes or int(labels.max()) + 1
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(f"labels must lie in 0..{n_classes - 1}")
        self.n_classes = int(n_classes)
        if feature_names is not None:
            self.feature_names = [str(name) for name in feature_names]
        with _one_blas_thread():
            if self.kind == "logistic":
                self.arrays = _fit_logistic(features, labels, self.C, self.seed)
            else:
                self.arrays = _fit_forest(features, labels, self.n_estimators, self.seed)
        self.arrays["classes"] = present.astype(np.int64)
        self.arrays["n_features"] = np.array([features.shape[1]], np.int64)
        return self

    def predict_proba(self, tiles) -> np.ndarray:
        """Raw (N, C, T, T) tiles -> (N, n_classes) float64 probabilities (classes absent from
        training get 0)."""
        return self.predict_proba_features(self.features(tiles))

    def predict_proba_features(self, features: np.ndarray) -> np.ndarray:
        if not self.fitted:
            raise ValueError("the feature model is not fitted")
        features = np.asarray(features, dtype=np.float64)
        expected = int(self.arrays["n_features"][0])
        if features.ndim != 2 or features.shape[1] != expected:
            raise ValueError(
                f"the feature model expects {expected} features per tile, got "
                f"shape {features.shape} (other channels or feature set?)"
            )
        with _one_blas_thread():
            if self.kind == "logistic":
                present = _logistic_proba(self.arrays, features)
            else:
                present = _forest_proba(self.arrays, features)
        out = np.zeros((len(features), self.n_classes))
        out[:, self.arrays["classes"]] = present
        return out

    def predict(self, tiles) -> np.ndarray:
        return np.argmax(self.predict_proba(tiles), axis=1)

    # -------------------------------------------------------------------------- serialisation

    def spec(self) -> dict:
        """JSON-ready description; with `to_tensors()` all that `from_tensors` needs."""
        return {
            "kind": self.kind,
            "feature_set": self.feature_set,
            "n_classes": self.n_classes,
            "seed": self.seed,
            "n_estimators": self.n_estimators,
            "C": self.C,
            "feature_names": list(self.feature_names),
        }

    def to_tensors(self) -> tuple[dict[str, np.ndarray], dict]:
        """(name -> contiguous numpy array, JSON-able spec). Integer arrays stay int64."""
        if not self.fitted:
            raise ValueError("the feature model is not fitted")
        return {k: np.ascontiguousarray(v) for k, v in self.arrays.items()}, self.spec()

    @classmethod
    def from_tensors(cls, tensors: dict, spec: dict) -> "FeatureModel":
        """Inverse of `to_tensors`; accepts numpy arrays or torch tensors. ValueError when an
        array is missing or inconsistent."""
        if not isinstance(spec, dict):
            raise ValueError(f"feature model spec must be a mapping, got {type(spec).__name__}")
        arrays = {str(k): _as_numpy(v) for k, v in tensors.items()}
        model = cls(
            kind=spec.get("kind", ""),
            feature_set=spec.get("feature_set", "rich"),
            n_classes=int(spec["n_classes"]) if spec.get("n_classes") is not None else None,
            seed=int(spec.get("seed", 0)),
            n_estimators=int(spec.get("n_estimators", 100)),
            C=float(spec.get("C", 1.0)),
            feature_names=list(spec.get("feature_names", [])),
        )
        _check_arrays(model.kind, arrays, model.n_classes)
        model.arrays = arrays
        return model


def _one_blas_thread():
    """These fits are tiny matrix products: with OpenBLAS's threads on a busy 2-core machine an
    L-BFGS logistic fit took 4.6 s of wall time instead of 0.1 s (measured, 200 tiles x 89
    features); one thread is never slower here."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


_REQUIRED = {
    "logistic": ("mean", "scale", "coef", "intercept"),
    "random_forest": ("children_left", "children_right", "feature", "threshold", "value", "roots"),
}


def _check_arrays(kind: str, arrays: dict, n_classes) -> None:
    if kind not in KINDS:
        raise ValueError(f"feature model kind must be one of {', '.join(KINDS)}, got {kind!r}")
    missing = [k for k in (*_REQUIRED[kind], "classes", "n_features") if k not in arrays]
    if missing:
        raise ValueError(f"the {kind} feature model lacks arrays {', '.join(missing)}")
    if n_classes is None:
        raise ValueError("the feature model spec lacks n_classes")
    classes, n_features = arrays["classes"], int(arrays["n_features"].ravel()[0])
    if classes.ndim != 1 or len(classes) < 2 or classes.min() < 0 or classes.max() >= n_classes:
        raise ValueError(f"feature model classes {classes.tolist()} do not fit {n_classes} classes")
    for name, value in arrays.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ValueError(f"feature model array {name} holds NaN or infinite values")
    if kind == "logistic":
        rows = 1 if len(classes) == 2 else len(classes)
        shapes = {
            "mean": (n_features,),
            "scale": (n_features,),
            "coef": (rows, n_features),
            "intercept": (rows,),
        }
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise ValueError(
                    f"feature model array {name} has shape {arrays[name].shape}, expected {shape}"
                )
    else:
        n_nodes = len(arrays["children_left"])
        for name in ("children_right", "feature", "threshold"):
            if arrays[name].shape != (n_nodes,):
                raise ValueError(
                    f"feature model array {name} has shape {arrays[name].shape}, expected ({n_nodes},)"
                )
        if arrays["value"].shape != (n_nodes, len(classes)):
            raise ValueError(
                f"feature model array value has shape {arrays['value'].shape}, "
                f"expected ({n_nodes}, {len(classes)})"
            )
        nodes = np.arange(n_nodes)
        left, right, feature = (
            arrays[k].astype(np.int64) for k in ("children_left", "children_right", "feature")
        )
        leaf = left < 0
        inner_ok = (
            (left[~leaf] > nodes[~leaf])
            & (left[~leaf] < n_nodes)
            & (right[~leaf] > nodes[~leaf])
            & (right[~leaf] < n_nodes)
        )
        if (
            not np.all(inner_ok)
            or np.any(right[leaf] >= 0)
            or np.any((feature[~leaf] < 0) | (feature[~leaf] >= n_features))
        ):
            raise ValueError("feature model trees are inconsistent (child or feature indices out of range)")
        roots = arrays["roots"].astype(np.int64)
        if roots.ndim != 1 or len(roots) == 0 or roots.min() < 0 or roots.max() >= n_nodes:
            raise ValueError("feature model tree roots are out of range")


def _fit_logistic(features, labels, C, seed) -> dict[str, np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    regression = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
    regression.fit(scaler.transform(features), labels)
    return {
        "mean": scaler.mean_.astype(np.float64),
        "scale": scaler.scale_.astype(np.float64),
        "coef": regression.coef_.astype(np.float64),
        "intercept": regression.intercept_.astype(np.float64),
    }


def _logistic_proba(arrays, features) -> np.ndarray:
    z = (features - arrays["mean"]) / arrays["scale"]
    scores = z @ arrays["coef"].T + arrays["intercept"]
    if arrays["coef"].shape[0] == 1:  # binary: sklearn's sigmoid
        positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        return np.stack([1.0 - positive, positive], axis=1)
    scores -= scores.max(axis=1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=1, keepdims=True)


def _fit_forest(features, labels, n_estimators, seed) -> dict[str, np.ndarray]:
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(
        n_estimators=n_estimators, class_weight="balanced", random_state=seed, n_jobs=1
    )
    forest.fit(features, labels)
    lefts, rights, feats, thresholds, values, roots = [], [], [], [], [], []
    offset = 0
    for estimator in forest.estimators_:
        tree = estimator.tree_
        left, right = tree.children_left.astype(np.int64), tree.children_right.astype(np.int64)
        leaf = left < 0
        lefts.append(np.where(leaf, -1, left + offset))
        rights.append(np.where(leaf, -1, right + offset))
        feats.append(np.where(leaf, -1, tree.feature).astype(np.int64))
        thresholds.append(np.where(leaf, 0.0, tree.threshold).astype(np.float64))
        value = tree.value[:, 0, :].astype(np.float64)
        total = value.sum(axis=1, keepdims=True)
        values.append(value / np.where(total > 0, total, 1.0))
        roots.append(offset)
        offset += tree.node_count
    return {
        "children_left": np.concatenate(lefts),
        "children_right": np.concatenate(rights),
        "feature": np.concatenate(feats),
        "threshold": np.concatenate(thresholds),
        "value": np.concatenate(values),
        "roots": np.asarray(roots, np.int64),
    }


def _forest_proba(arrays, features) -> np.ndarray:
    """Every sample down every tree at once, one level per step (scikit-learn's rule: left when
    the float32 feature <= threshold)."""
    x = features.astype(np.float32).astype(np.float64)  # sklearn trees split float32 values
    left, right, feature, threshold = (
        arrays[k] for k in ("children_left", "children_right", "feature", "threshold")
    )
    left, right, feature = (a.astype(np.int64) for a in (left, right, feature))
    roots = arrays["roots"].astype(np.int64)
    n = len(x)
    out = np.zeros((n, arrays["value"].shape[1]))
    for start in range(0, n, 4096):  # bounded memory: (batch, trees) nodes
        rows = x[start : start + 4096]
        node = np.broadcast_to(roots, (len(rows), len(roots))).copy()
        sample = np.arange(len(rows))[:, None]
        active = left[node] >= 0
        while active.any():
            where = np.nonzero(active)
            current = node[where]
            go_left = rows[sample[where[0], 0], feature[current]] <= threshold[current]
            node[where] = np.where(go_left, left[current], right[current])
            active[where] = left[node[where]] >= 0
        out[start : start + len(rows)] = arrays["value"][node].mean(axis=1)
    return out


# ------------------------------------------------------------------------------------ comparing


def _metrics(truth: np.ndarray, predicted: np.ndarray, class_names, probabilities=None) -> dict:
    """accuracy, balanced accuracy, chance (and whatever evaluation.py adds when present)."""
    try:
        from .evaluation import classification_metrics
    except ImportError:
        classification_metrics = None
    if classification_metrics is not None:
        metrics = classification_metrics(truth, predicted, class_names, probabilities=probabilities)
        return {
            "accuracy": float(metrics.accuracy),
            "balanced_accuracy": float(metrics.balanced_accuracy),
            "chance": float(metrics.chance),
            "majority": float(metrics.majority),
        }
    present = np.unique(truth)
    recalls = [float(np.mean(predicted[truth == k] == k)) for k in present]
    counts = np.bincount(truth, minlength=len(class_names))
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "balanced_accuracy": float(np.mean(recalls)),
        "chance": 1.0 / len(present),
        "majority": float(counts.max() / len(truth)),
    }


def compare_on_split(
    dataset, train_idx, val_idx, seed: int = 0, methods=tuple(name for name, _, _ in METHODS)
) -> dict:
    """Fit the classical baselines on dataset[train_idx], score them on dataset[val_idx].

    Returns {"methods": {name: {"accuracy", "balanced_accuracy", "seconds", "label"}},
    "best": name by balanced accuracy, "chance": balanced-accuracy chance (1 / classes in the
    validation set), "majority": accuracy of always answering the most common validation class,
    "n_train", "n_val", "feature_seconds"}; method results sit at the top level too
    (result["logistic"]["accuracy"]). `seconds` is the whole cost of a method: its features for
    train and validation tiles, fitting and predicting. An empty validation split or a training
    split with one class gives {"skipped": reason}."""
    train_idx, val_idx = np.asarray(train_idx, np.int64), np.asarray(val_idx, np.int64)
    labels = np.asarray(dataset.labels, np.int64)
    n_classes = len(dataset.class_names)
    if len(val_idx) == 0:
        return {"skipped": "no validation tiles"}
    if len(np.unique(labels[train_idx])) < 2:
        return {"skipped": "the training tiles hold fewer than two classes"}
    unknown = [m for m in methods if m not in METHOD_LABELS]
    if unknown:
        raise ValueError(f"unknown baseline method(s) {unknown}")
    chosen = np.concatenate([train_idx, val_idx])
    tiles = dataset.tiles[chosen]
    feature_cache: dict[str, tuple[np.ndarray, list[str], float]] = {}
    truth = labels[val_idx]
    result: dict = {"methods": {}, "n_train": int(len(train_idx)), "n_val": int(len(val_idx))}
    for name, feature_set, kind in METHODS:
        if name not in methods:
            continue
        if feature_set not in feature_cache:
            start = time.perf_counter()
            values, names = features_for(tiles, feature_set, dataset.channel_names)
            feature_cache[feature_set] = (values, names, time.perf_counter() - start)
        values, names, feature_seconds = feature_cache[feature_set]
        start = time.perf_counter()
        model = FeatureModel(kind=kind, feature_set=feature_set, seed=seed)
        model.fit_features(values[: len(train_idx)], labels[train_idx], n_classes, names)
        probabilities = model.predict_proba_features(values[len(train_idx) :])
        seconds = time.perf_counter() - start + feature_seconds
        metrics = _metrics(truth, np.argmax(probabilities, axis=1), dataset.class_names, probabilities)
        result["methods"][name] = {
            "accuracy": metrics["accuracy"],
            "balanced_accuracy": metrics["balanced_accuracy"],
            "seconds": float(seconds),
            "label": METHOD_LABELS[name],
        }
        result["chance"], result["majority"] = metrics["chance"], metrics["majority"]
    result["feature_seconds"] = float(sum(s for _, _, s in feature_cache.values()))
    result["best"] = max(
        result["methods"],
        key=lambda m: (result["methods"][m]["balanced_accuracy"], result["methods"][m]["accuracy"]),
    )
    result.update({name: values for name, values in result["methods"].items()})
    return result


# ------------------------------------------------------------------ a model of its own (--arch features)

FEATURES_ARCHITECTURE = "features"
ATTRIBUTION_REFUSAL = "attributions need a CNN; this model uses classical features"
TENSOR_PREFIX = "features."
SPEC_KEY = "feature_model"  # ModelMeta.extra key holding FeatureModel.spec()
TRAIN_KINDS = ("auto", *KINDS)


def identity_normalization(n_channels: int) -> dict:
    """The normalisation a features model is saved with: none (low 0, high 1). Its features come
    from raw tiles, so the Classifier hands them over unchanged."""
    return {
        "mode": "dataset",
        "low": [0.0] * n_channels,
        "high": [1.0] * n_channels,
        "percentiles": [1.0, 99.8],
    }


class FeatureNet(nn.Module):
    """A fitted FeatureModel behind the model interface: (N, C, T, T) raw tiles (any device, any
    memory format) -> (N, K) log-probabilities, so softmax(output) is the FeatureModel's
    probabilities (as for an Ensemble) and Classifier.predict_tiles / predict_field work
    unchanged. No parameters; never differentiable: asking for an input gradient (attribution)
    raises ValueError(ATTRIBUTION_REFUSAL)."""

    is_feature_model = True

    def __init__(self, feature_model: FeatureModel):
        super().__init__()
        if not feature_model.fitted:
            raise ValueError("FeatureNet needs a fitted FeatureModel")
        self.feature_model = feature_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise ValueError(ATTRIBUTION_REFUSAL)
        tiles = x.detach().to("cpu", torch.float32).contiguous().numpy()
        probabilities = self.feature_model.predict_proba(tiles)
        log_probabilities = np.log(np.maximum(probabilities, 1e-30)).astype(np.float32)
        return torch.from_numpy(log_probabilities).to(x.device)


def is_feature_model(model) -> bool:
    return bool(getattr(model, "is_feature_model", False))


def file_tensors(model) -> tuple[dict, dict]:
    """(torch tensors named "features.<array>", spec) for modelfile.save_model."""
    if not is_feature_model(model):
        raise ValueError(
            "a 'features' model file needs a classical-features model (baseline.FeatureNet), not a CNN"
        )
    arrays, spec = model.feature_model.to_tensors()
    return {TENSOR_PREFIX + name: torch.from_numpy(array) for name, array in arrays.items()}, spec


def model_from_file(tensors: dict, meta) -> "FeatureNet":
    """Rebuild the FeatureNet from a model file's tensors and ModelMeta (spec in
    meta.extra["feature_model"]); ValueError naming what does not fit."""
    spec = (meta.extra or {}).get(SPEC_KEY)
    if not isinstance(spec, dict):
        raise ValueError(f"a 'features' model needs its spec in extra.{SPEC_KEY}")
    unexpected = [name for name in tensors if not name.startswith(TENSOR_PREFIX)]
    if unexpected:
        raise ValueError(f"unexpected tensors {', '.join(sorted(unexpected)[:5])} in a features model")
    feature_model = FeatureModel.from_tensors(
        {name[len(TENSOR_PREFIX) :]: value for name, value in tensors.items()}, spec
    )
    if feature_model.n_classes != meta.n_classes:
        raise ValueError(
            f"the feature model has {feature_model.n_classes} classes, the metadata {meta.n_classes}"
        )
    probe = np.zeros((1, meta.in_channels, meta.tile_size, meta.tile_size), np.float32)
    expected = len(features_for(probe, feature_model.feature_set)[1])
    found = int(feature_model.arrays["n_features"].ravel()[0])
    if found != expected:
        raise ValueError(
            f"the feature model uses {found} features, {meta.in_channels} channel(s) give {expected}"
        )
    return FeatureNet(feature_model).eval()


def _log_loss(probabilities: np.ndarray, truth: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-12, 1))))


def train_features(dataset, config=None, kind: str = "auto", stop=None):
    """Train a classical-features model on the same train/validation split as the CNN
    (data.split_train_val with config.val_fraction and config.seed); a generator like
    training.train: yields one EpochEnd and one RunFinished, returns a training.TrainingResult
    whose model is a FeatureNet, whose normalisation is the identity and whose history holds the
    validation metrics (one "epoch"), so save_model / Classifier take it like a CNN.

    kind "auto" fits both logistic regression and random forest and keeps the one with the higher
    validation balanced accuracy (logistic regression without validation tiles)."""
    import dataclasses

    from . import training
    from .data import Normalization, check_trainable, split_train_val

    config = config if config is not None else training.TrainConfig()
    config = dataclasses.replace(config, architecture=FEATURES_ARCHITECTURE, runs=1)
    if kind not in TRAIN_KINDS:
        raise ValueError(f"kind must be one of {', '.join(TRAIN_KINDS)}, got {kind!r}")
    if not 0 <= config.val_fraction < 1:
        raise ValueError(f"val_fraction must be >= 0 and < 1, got {config.val_fraction!r}")
    check_trainable(dataset)
    n_classes = len(dataset.class_names)
    history = training.History()
    train_idx, val_idx = split_train_val(dataset, config.val_fraction, seed=config.seed)
    if config.val_fraction > 0 and len(val_idx) == 0:
        history.warnings.append(
            "no validation tiles could be set aside (too little data): the model's accuracy is unknown"
        )
    labels = np.asarray(dataset.labels, np.int64)
    if len(np.unique(labels[train_idx])) < 2:
        raise ValueError(
            "the validation split left tiles of fewer than two classes for training; label more tiles"
        )
    start = time.perf_counter()
    values, names = extract_features(
        dataset.tiles[np.concatenate([train_idx, val_idx])], dataset.channel_names
    )
    train_x, val_x = values[: len(train_idx)], values[len(train_idx) :]
    kinds = list(KINDS) if kind == "auto" and len(val_idx) else ["logistic"] if kind == "auto" else [kind]
    candidates, cancelled = {}, False
    truth = labels[val_idx]
    for candidate in kinds:
        if stop is not None and stop.is_set() and candidates:
            cancelled = True
            break
        model = FeatureModel(kind=candidate, seed=int(config.seed)).fit_features(
            train_x, labels[train_idx], n_classes, names
        )
        scores = {"model": model}
        if len(val_idx):
            probabilities = model.predict_proba_features(val_x)
            scores.update(
                _metrics(truth, np.argmax(probabilities, axis=1), dataset.class_names, probabilities)
            )
            scores["val_loss"] = _log_loss(probabilities, truth)
        candidates[candidate] = scores
    chosen = max(candidates, key=lambda k: candidates[k].get("balanced_accuracy", 0.0))
    model = candidates[chosen]["model"]
    train_probabilities = model.predict_proba_features(train_x)
    train_accuracy = float(np.mean(np.argmax(train_probabilities, axis=1) == labels[train_idx]))
    best = candidates[chosen]
    val_accuracy = best.get("accuracy")
    run = {
        "seed": int(config.seed),
        "train_loss": [_log_loss(train_probabilities, labels[train_idx])],
        "train_accuracy": [train_accuracy],
        "val_loss": [best.get("val_loss")],
        "val_accuracy": [val_accuracy],
        "val_balanced_accuracy": [best.get("balanced_accuracy")],
        "best_epoch": 0,
        "best_val_accuracy": val_accuracy,
        "best_val_loss": best.get("val_loss"),
        "epochs_completed": 1,
        "stopped_early": False,
        "cancelled": cancelled,
        "memorisation": None,
        "seconds": time.perf_counter() - start,
        "features": {
            "kind": chosen,
            "n_features": len(names),
            "chance": best.get("chance"),
            "candidates": {k: {m: v for m, v in s.items() if m != "model"} for k, s in candidates.items()},
        },
    }
    history.runs.append(run)
    yield training.EpochEnd(
        run=0,
        epoch=0,
        train_loss=run["train_loss"][0],
        train_accuracy=train_accuracy,
        val_loss=best.get("val_loss"),
        val_accuracy=val_accuracy,
        is_best=True,
    )
    yield training.RunFinished(
        run=0,
        seed=int(config.seed),
        best_epoch=0,
        best_val_accuracy=val_accuracy,
        stopped_early=False,
        cancelled=cancelled,
    )
    return training.TrainingResult(
        model=FeatureNet(model).eval(),
        normalization=Normalization.from_dict(identity_normalization(len(dataset.channel_names))),
        history=history,
        class_names=list(dataset.class_names),
        channel_names=list(dataset.channel_names),
        tile_size=int(dataset.tile_size),
        config=config,
        cancelled=cancelled,
    )


def compare_on_training_split(dataset, config) -> dict:
    """compare_on_split on the very split a training with `config` (training.TrainConfig) uses:
    data.split_train_val with its val_fraction and seed. For ModelMeta.extra["baseline"]."""
    from .data import split_train_val

    train_idx, val_idx = split_train_val(dataset, config.val_fraction, seed=config.seed)
    return compare_on_split(dataset, train_idx, val_idx, seed=int(config.seed))


def comparison_sentence(
    cnn_accuracy: float | None, cnn_balanced_accuracy: float | None, comparison: dict, margin: float = 0.01
) -> str:
    """One plain sentence: the CNN against the best classical baseline of `compare_on_split`
    on the same validation split, accuracy beside balanced accuracy and chance."""
    if "skipped" in comparison:
        return f"No comparison with classical features: {comparison['skipped']}."
    best = comparison["methods"][comparison["best"]]
    label = best["label"]
    classical = f"{label} {best['accuracy']:.3f} accuracy / {best['balanced_accuracy']:.3f} balanced"
    chance = f"(chance {comparison['chance']:.3f} balanced, majority {comparison['majority']:.3f})"
    if cnn_balanced_accuracy is None:
        return f"On the validation split: {classical} {chance}; the CNN was not scored."
    cnn = f"CNN {cnn_accuracy:.3f} accuracy / {cnn_balanced_accuracy:.3f} balanced"
    gap = cnn_balanced_accuracy - best["balanced_accuracy"]
    if gap >= margin:
        verdict = "the CNN is better"
    elif gap <= -margin:
        verdict = "the classical features are better: the CNN does not earn its keep here"
    else:
        verdict = "a tie within 1 point of balanced accuracy"
    return f"On the same validation split: {cnn}; {classical} {chance}: {verdict}."
