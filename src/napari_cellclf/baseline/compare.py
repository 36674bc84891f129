"""The classical baselines against the CNN on one train/validation split: `compare_on_split`,
`compare_on_training_split` (the split a training uses) and `comparison_sentence`."""

from __future__ import annotations

import time

import numpy as np

from ..evaluation import classification_metrics
from .classifier import FeatureModel
from .features import features_for

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
_METHOD_NAMES = tuple(method[0] for method in METHODS)


def _metrics(truth: np.ndarray, predicted: np.ndarray, class_names, probabilities=None) -> dict[str, float]:
    """accuracy, balanced accuracy, chance and majority of a non-empty validation split, from
    evaluation.classification_metrics (the one place metrics are computed)."""
    metrics = classification_metrics(truth, predicted, class_names, probabilities=probabilities)
    values = {
        "accuracy": metrics.accuracy,
        "balanced_accuracy": metrics.balanced_accuracy,
        "chance": metrics.chance,
        "majority": metrics.majority,
    }
    missing = [name for name, value in values.items() if value is None]
    if missing:  # only an empty split has none; callers score non-empty ones
        raise ValueError(f"no {', '.join(missing)} without validation tiles")
    return {name: float(value) for name, value in values.items() if value is not None}


def compare_on_split(
    dataset, train_idx, val_idx, seed: int = 0, methods: tuple[str, ...] = _METHOD_NAMES
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


def compare_on_training_split(dataset, config) -> dict:
    """compare_on_split on the very split a training with `config` (training.TrainConfig) uses:
    data.split_train_val with its val_fraction and seed. For ModelMeta.extra["baseline"]."""
    from ..data import split_train_val

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
