"""FeatureModel: features + a scikit-learn classifier that predicts with plain numpy from arrays
it can hand out and be rebuilt from, so it can live in a safetensors model file (no pickle)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .features import FEATURE_SETS, features_for

KINDS = ("logistic", "random_forest")


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
        if not self.fitted or self.n_classes is None:
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
