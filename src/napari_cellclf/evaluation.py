"""Honest classification metrics: accuracy beside balanced accuracy and chance, and a verdict. No Qt.

Everyone who prints or stores metrics (CLI, widget, model file, report) uses
`classification_metrics`, so the numbers and the wording agree everywhere.

Definitions (K = number of classes that have at least one true tile in the evaluated data):
- accuracy: share of tiles whose predicted class is the true class.
- balanced accuracy: mean over those K classes of the recall (share of the class's tiles found).
- chance: 1/K — the balanced accuracy of any guess that ignores the image (always the same class,
  or a random class). This is the level `better_than_chance` is judged against.
- majority: share of the most frequent true class — the *accuracy* of always guessing that class.
  Plain accuracy must be compared with this, not with 1/K: on 90/10 data, 90 % accuracy is chance.
- interval on balanced accuracy (the decision): each class's recall gets the Jeffreys posterior
  Beta(hits + 1/2, misses + 1/2) (a binomial interval that behaves at 0 and 100 % and with few
  tiles), the balanced accuracy is the mean of draws from them (4000 draws, fixed seed, so the
  same data always gives the same interval), and its central 95 % range is reported.
  `better_than_chance` is True when that range lies above 1/K.
- interval on accuracy: the Wilson 95 % score interval, reported beside the majority rate
  (`accuracy_above_majority`: its lower end above the majority share).
- `verdict`: None when the model is clearly better than chance, else one plain sentence.

`dihedral_agreement` measures rotation/flip consistency; `evaluate` predicts a labelled TileDataset
through an inference.Classifier and returns the metrics with the probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

CONFIDENCE = 0.95
_DRAWS = 4000
_SEED = 0


@dataclass
class ClassificationMetrics:
    class_names: list[str]
    n: int
    accuracy: float | None
    balanced_accuracy: float | None
    chance: float | None  # 1/K (K = classes present in the truth)
    majority: float | None  # share of the largest true class
    balanced_accuracy_interval: tuple[float, float] | None
    accuracy_interval: tuple[float, float] | None
    better_than_chance: bool
    accuracy_above_majority: bool
    confusion: np.ndarray  # (K, K) int64, rows = true class, columns = predicted
    per_class: dict[str, dict]  # name -> precision, recall, f1, support, predicted
    verdict: str | None
    mean_confidence: float | None = None
    log_loss: float | None = None
    probabilities: np.ndarray | None = field(default=None, repr=False)
    # Plain sentences about a model that *is* better than chance yet misleads as a counter:
    # accuracy below the majority share, a class predicted far more often than it occurs.
    warnings: list[str] = field(default_factory=list)

    @property
    def classes_present(self) -> int:
        return int(np.count_nonzero(self.confusion.sum(axis=1)))

    def predicted_shares(self) -> dict[str, float]:
        """Share of tiles predicted as each class (a model calling nearly everything one class
        shows here even when its accuracy looks fine)."""
        counts = self.confusion.sum(axis=0)
        return {
            name: (float(counts[k] / self.n) if self.n else 0.0) for k, name in enumerate(self.class_names)
        }

    def summary(self) -> str:
        """One line: accuracy beside balanced accuracy and chance."""
        if not self.n or self.balanced_accuracy_interval is None:
            return "no labelled tiles evaluated"
        low, high = self.balanced_accuracy_interval
        return (
            f"accuracy {self.accuracy:.3f} (majority class {self.majority:.3f}), "
            f"balanced accuracy {self.balanced_accuracy:.3f} "
            f"(95% interval {low:.3f}-{high:.3f}; chance {self.chance:.3f}) on {self.n} tiles"
        )

    def to_dict(self) -> dict:
        """JSON-ready (plain Python numbers and lists)."""

        def interval(value):
            return None if value is None else [float(value[0]), float(value[1])]

        return {
            "n": int(self.n),
            "classes": list(self.class_names),
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "chance": self.chance,
            "chance_definition": "1/K for balanced accuracy (K = classes present in the labels)",
            "majority": self.majority,
            "majority_definition": "share of the largest true class: what always guessing it scores "
            "as plain accuracy",
            "balanced_accuracy_interval": interval(self.balanced_accuracy_interval),
            "accuracy_interval": interval(self.accuracy_interval),
            "interval_confidence": CONFIDENCE,
            "better_than_chance": bool(self.better_than_chance),
            "accuracy_above_majority": bool(self.accuracy_above_majority),
            "verdict": self.verdict,
            "confusion": self.confusion.astype(int).tolist(),
            "per_class": {name: dict(row) for name, row in self.per_class.items()},
            "predicted_share": self.predicted_shares(),
            "mean_confidence": self.mean_confidence,
            "log_loss": self.log_loss,
            "warnings": list(self.warnings),
        }


def wilson_interval(hits: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (n > 0)."""
    z = _normal_quantile(0.5 + confidence / 2)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _normal_quantile(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def balanced_accuracy_interval(
    confusion: np.ndarray, confidence: float = CONFIDENCE, draws: int = _DRAWS, seed: int = _SEED
) -> tuple[float, float]:
    """Central interval of the balanced accuracy: mean over present classes of Jeffreys-posterior
    draws of each recall (deterministic for a given confusion matrix)."""
    confusion = np.asarray(confusion)
    support = confusion.sum(axis=1)
    present = support > 0
    hits = np.diag(confusion)[present].astype(float)
    misses = support[present] - hits
    rng = np.random.default_rng(seed)
    recalls = rng.beta(hits + 0.5, misses + 0.5, size=(draws, len(hits)))
    means = recalls.mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    # The observed value always lies inside what is shown (Jeffreys draws pull 0 % and 100 % in).
    observed = float((hits / np.maximum(support[present], 1)).mean()) if len(hits) else 0.0
    return float(min(low, observed)), float(max(high, observed))


def classification_metrics(
    truth: ArrayLike,
    predicted: ArrayLike,
    class_names: Sequence[str],
    probabilities: np.ndarray | None = None,
) -> ClassificationMetrics:
    """Metrics of predicted vs true class indices (0..K-1). `probabilities` (N, K), optional,
    adds the mean confidence and the log loss and is kept on the result (for galleries)."""
    class_names = [str(name) for name in class_names]
    k = len(class_names)
    if k < 1:
        raise ValueError("class_names is empty")
    truth = np.asarray(truth, dtype=np.int64).reshape(-1)
    predicted = np.asarray(predicted, dtype=np.int64).reshape(-1)
    if truth.shape != predicted.shape:
        raise ValueError(f"{len(truth)} true classes but {len(predicted)} predictions")
    for name, values in (("truth", truth), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= k):
            raise ValueError(
                f"{name} holds class indices outside 0..{k - 1} "
                f"({len(class_names)} classes: {', '.join(class_names)})"
            )
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape != (len(truth), k):
            raise ValueError(f"probabilities must be ({len(truth)}, {k}), got {probabilities.shape}")

    n = len(truth)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    support = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    per_class: dict[str, dict] = {}
    for i, name in enumerate(class_names):
        hit = int(confusion[i, i])
        precision = hit / predicted_counts[i] if predicted_counts[i] else None
        recall = hit / support[i] if support[i] else None
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else (0.0 if precision is not None and recall is not None else None)
        )
        per_class[name] = {
            "precision": _float(precision),
            "recall": _float(recall),
            "f1": _float(f1),
            "support": int(support[i]),
            "predicted": int(predicted_counts[i]),
        }

    mean_confidence = log_loss = None
    if probabilities is not None and n:
        mean_confidence = float(probabilities.max(axis=1).mean())
        chosen = np.clip(probabilities[np.arange(n), truth], 1e-12, 1.0)
        log_loss = float(-np.log(chosen).mean())

    if n == 0:
        return ClassificationMetrics(
            class_names,
            0,
            None,
            None,
            None,
            None,
            None,
            None,
            False,
            False,
            confusion,
            per_class,
            "No labelled tiles were evaluated, so nothing is known about this model's accuracy.",
            probabilities=probabilities,
        )

    present = support > 0
    n_present = int(present.sum())
    accuracy = float(np.trace(confusion) / n)
    balanced = float((np.diag(confusion)[present] / support[present]).mean())
    chance = 1.0 / n_present
    majority = float(support.max() / n)
    ba_interval = balanced_accuracy_interval(confusion)
    acc_interval = wilson_interval(int(np.trace(confusion)), n)
    better = n_present >= 2 and ba_interval[0] > chance
    above_majority = acc_interval[0] > majority
    verdict = (
        _verdict(
            n, n_present, balanced, ba_interval, chance, accuracy, majority, predicted_counts, class_names
        )
        if not better
        else None
    )
    warnings = (
        _warnings(n, accuracy, acc_interval, majority, support, predicted_counts, class_names)
        if better
        else []
    )
    return ClassificationMetrics(
        class_names,
        n,
        accuracy,
        balanced,
        chance,
        majority,
        ba_interval,
        acc_interval,
        bool(better),
        bool(above_majority),
        confusion,
        per_class,
        verdict,
        mean_confidence,
        log_loss,
        probabilities,
        warnings,
    )


# A class is "predicted far more often than it occurs" at >= 30 % of the tiles and more than
# twice its true share plus 10 points (the 7-class case: 86 % for a 2 % class).
OVERCALL_SHARE = 0.3


def _warnings(n, accuracy, acc_interval, majority, support, predicted_counts, class_names) -> list[str]:
    warnings = []
    if acc_interval[1] < majority:
        largest = class_names[int(np.argmax(support))]
        warnings.append(
            f"Its accuracy of {accuracy:.1%} is below the {majority:.1%} that always guessing "
            f"the largest class ('{largest}') would score: it is better than chance class by "
            "class (balanced accuracy), but the overall counts it gives are not to be trusted."
        )
    for k, name in enumerate(class_names):
        predicted_share, true_share = predicted_counts[k] / n, support[k] / n
        if predicted_share >= OVERCALL_SHARE and predicted_share > 2 * true_share + 0.1:
            warnings.append(
                f"It calls {predicted_share:.0%} of the tiles '{name}', which are "
                f"{true_share:.1%} of the labelled tiles: class fractions it reports for "
                f"'{name}' would be far too high."
            )
    return warnings


def _float(value) -> float | None:
    return None if value is None else float(value)


def _verdict(
    n, n_present, balanced, interval, chance, accuracy, majority, predicted_counts, class_names
) -> str:
    if n_present < 2:
        return (
            f"Only one class has labelled tiles here ({n} tiles), so it cannot be told whether "
            "the model is better than chance; evaluate it on data with at least two classes."
        )
    low, high = interval
    sentence = (
        f"Not clearly better than chance: balanced accuracy {balanced:.1%} "
        f"(95% interval {low:.1%}-{high:.1%}, {n} tiles) does not exceed the chance "
        f"level {chance:.1%} for {n_present} classes"
    )
    top = int(np.argmax(predicted_counts))
    share = predicted_counts[top] / n
    if share >= 0.8 and len(class_names) > 1:
        sentence += f"; it calls {share:.0%} of the tiles '{class_names[top]}'"
    if accuracy > chance + 0.05 and accuracy <= majority + 0.02:
        sentence += (
            f"; its accuracy of {accuracy:.1%} is no better than always guessing the "
            f"largest class ({majority:.1%})"
        )
    return sentence + ". Do not trust its classifications."


# ------------------------------------------------------------------------------ model-level checks


def dihedral_transform(tiles: np.ndarray, op: int) -> np.ndarray:
    """One of the 8 symmetries of the square on (..., T, T): rotate by 90 deg x (op & 3), then
    mirror left-right when op & 4 (op 0 = identity)."""
    out = np.rot90(tiles, op & 3, axes=(-2, -1))
    if op & 4:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def dihedral_predictions(classifier, raw_tiles: np.ndarray) -> np.ndarray:
    """(8, N) predicted class of every tile under each dihedral transform (op 0 = as given)."""
    raw_tiles = np.asarray(raw_tiles)
    return np.stack(
        [classifier.predict_tiles(dihedral_transform(raw_tiles, op)).argmax(axis=1) for op in range(8)]
    )


def dihedral_agreement(classifier, raw_tiles: np.ndarray) -> float | None:
    """Share of tiles whose predicted class is the same under all 8 rotations/reflections
    (None for no tiles). Microscopy has no preferred orientation, so a trustworthy model
    scores near 1; `raw_tiles` are (N, C, T, T) raw intensities, as for predict_tiles."""
    raw_tiles = np.asarray(raw_tiles)
    if len(raw_tiles) == 0:
        return None
    predictions = dihedral_predictions(classifier, raw_tiles)
    return float((predictions == predictions[0]).all(axis=0).mean())


@dataclass
class Evaluation:
    metrics: ClassificationMetrics
    probabilities: np.ndarray  # (N, K) in the model's class order
    truth: np.ndarray  # (N,) true class indices in the model's class order
    predicted: np.ndarray  # (N,)
    # What was evaluated, kept for what follows (gallery.gallery_tiles, attribution checks).
    dataset: Any = field(default=None, repr=False)  # data.TileDataset
    classifier: Any = field(default=None, repr=False)  # inference.Classifier


def model_labels(dataset, class_names: Sequence[str]) -> np.ndarray:
    """The dataset's labels as indices into `class_names` (matched by name). ValueError naming
    any labelled class the model does not know."""
    names = list(class_names)
    counts = dataset.class_counts()
    unknown = [name for name in dataset.class_names if name not in names and counts.get(name)]
    if unknown:
        raise ValueError(
            f"the data has tiles of class(es) {', '.join(map(repr, unknown))} that "
            f"the model does not know (its classes: {', '.join(names)})"
        )
    mapping = np.array(
        [names.index(name) if name in names else -1 for name in dataset.class_names], dtype=np.int64
    )
    return (
        mapping[np.asarray(dataset.labels, dtype=np.int64)]
        if len(dataset.labels)
        else np.zeros(0, dtype=np.int64)
    )


def evaluate(classifier, dataset, chunk: int = 1024, on_progress=None) -> Evaluation:
    """Predict every tile of a labelled data.TileDataset with an inference.Classifier
    (predict_tiles: the model's own normalisation) and score it. Classes are matched by name.
    `on_progress(done, total)` is called after every chunk."""
    truth = model_labels(dataset, classifier.class_names)
    total = len(dataset)
    probabilities = np.zeros((total, len(classifier.class_names)), dtype=np.float32)
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        probabilities[start:stop] = classifier.predict_tiles(dataset.tiles[start:stop])
        if on_progress is not None:
            on_progress(stop, total)
    predicted = probabilities.argmax(axis=1).astype(np.int64) if total else np.zeros(0, np.int64)
    metrics = classification_metrics(truth, predicted, classifier.class_names, probabilities)
    return Evaluation(metrics, probabilities, truth, predicted, dataset, classifier)


def validation_metrics(result, dataset, device: str = "cpu") -> Evaluation | None:
    """The metrics of a training.TrainingResult on its own validation split (re-made exactly as
    training made it: data.split_train_val with the config's val_fraction and seed), for the
    model file (`ModelMeta.extra["evaluation"]`) and the training printout. None without
    validation tiles."""
    from .data import split_train_val
    from .inference import Classifier

    config = result.config
    if not config.val_fraction:
        return None
    _, val_idx = split_train_val(dataset, config.val_fraction, seed=config.seed)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    if len(val_idx) == 0:
        return None
    import copy

    # A copy: the Classifier converts its model in place (device, memory layout).
    classifier = Classifier(copy.deepcopy(result.model), result.meta(), device=device)
    return evaluate(classifier, dataset.subset(val_idx))


def stored_verdict(meta) -> str | None:
    """The verdict a model file carries (`ModelMeta.extra["evaluation"]["verdict"]`), or None
    when it has none or was judged better than chance."""
    evaluation = (getattr(meta, "extra", None) or {}).get("evaluation") or {}
    verdict = evaluation.get("verdict") if isinstance(evaluation, dict) else None
    return str(verdict) if verdict else None


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary_line(document: dict) -> str:
    """'accuracy A (majority M), balanced accuracy B (95% interval L-H; chance C) on N tiles'
    from a metrics dict (ClassificationMetrics.to_dict(), metrics.json, a model file's record)."""
    if not document.get("n"):
        return "no labelled tiles evaluated"
    interval = document.get("balanced_accuracy_interval")
    shown = f"95% interval {_pct(interval[0])}-{_pct(interval[1])}; " if interval else ""
    return (
        f"accuracy {_pct(document.get('accuracy'))} (majority class "
        f"{_pct(document.get('majority'))}), balanced accuracy "
        f"{_pct(document.get('balanced_accuracy'))} ({shown}chance "
        f"{_pct(document.get('chance'))}) on {document['n']} tiles"
    )


def format_metrics(document: dict) -> list[str]:
    """Plain-text lines of a metrics dict: the summary, the verdict (or that the model is
    clearly better than chance), per-class precision/recall/support and the confusion matrix."""
    lines = [summary_line(document)]
    cautions = document.get("warnings") or []
    lines.append(
        f"verdict: {document['verdict']}"
        if document.get("verdict")
        else "better than chance (95% interval of balanced accuracy above chance), but:"
        if cautions
        else "clearly better than chance (95% interval of balanced accuracy above chance)"
    )
    lines += [f"caution: {w}" for w in cautions]
    names = [str(n) for n in document.get("classes", [])]
    if not names:
        return lines
    width = max(9, *(len(n) for n in names))
    lines.append(f"{'class':<{width}}  precision  recall  support  predicted")
    for name in names:
        row = document.get("per_class", {}).get(name, {})
        lines.append(
            f"{name:<{width}}  {_pct(row.get('precision')):>9}  "
            f"{_pct(row.get('recall')):>6}  {row.get('support', 0):>7}  "
            f"{row.get('predicted', 0):>9}"
        )
    confusion = document.get("confusion") or []
    if confusion:
        lines.append("confusion matrix (rows: true class, columns: predicted):")
        cell = max(*(len(n) for n in names), *(len(str(v)) for row in confusion for v in row))
        lines.append(" " * width + "  " + "  ".join(f"{n:>{cell}}" for n in names))
        for name, row in zip(names, confusion):
            lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>{cell}}" for v in row))
    return lines
