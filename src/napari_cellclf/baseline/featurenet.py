"""A features model as a model of its own (architecture "features"): `train_features` fits one on
the CNN's train/validation split and returns a training.TrainingResult whose model is a
`FeatureNet`, an nn.Module returning log-probabilities, so modelfile.save_model/load_model and
inference.Classifier take it like a CNN. It cannot be explained: attribution asks it for an
input gradient and gets ValueError(ATTRIBUTION_REFUSAL)."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .classifier import KINDS, FeatureModel
from .compare import _metrics
from .features import extract_features, features_for

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

    from .. import training
    from ..data import Normalization, check_trainable, split_train_val

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
    models: dict[str, FeatureModel] = {}
    candidates: dict[str, dict[str, float]] = {}  # kind -> validation scores (none without tiles)
    cancelled = False
    truth = labels[val_idx]
    for candidate in kinds:
        if stop is not None and stop.is_set() and models:
            cancelled = True
            break
        fitted = FeatureModel(kind=candidate, seed=int(config.seed)).fit_features(
            train_x, labels[train_idx], n_classes, names
        )
        scores: dict[str, float] = {}
        if len(val_idx):
            probabilities = fitted.predict_proba_features(val_x)
            scores.update(
                _metrics(truth, np.argmax(probabilities, axis=1), dataset.class_names, probabilities)
            )
            scores["val_loss"] = _log_loss(probabilities, truth)
        models[candidate], candidates[candidate] = fitted, scores
    chosen = max(candidates, key=lambda k: candidates[k].get("balanced_accuracy", 0.0))
    model = models[chosen]
    train_probabilities = model.predict_proba_features(train_x)
    train_accuracy = float(np.mean(np.argmax(train_probabilities, axis=1) == labels[train_idx]))
    best = candidates[chosen]
    val_accuracy = best.get("accuracy")
    train_loss = _log_loss(train_probabilities, labels[train_idx])
    run = {
        "seed": int(config.seed),
        "train_loss": [train_loss],
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
            "candidates": {k: dict(scores) for k, scores in candidates.items()},
        },
    }
    history.runs.append(run)
    yield training.EpochEnd(
        run=0,
        epoch=0,
        train_loss=train_loss,
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
