"""Honest metrics: accuracy beside balanced accuracy and chance, an interval, a verdict; rotation
and flip consistency; evaluating a labelled dataset through the Classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from evaluation_support import TILE, kind_tiles, trained
from napari_cellclf import model as model_module
from napari_cellclf.data import Normalization
from napari_cellclf.evaluation import (
    classification_metrics,
    dihedral_agreement,
    dihedral_transform,
    evaluate,
)
from napari_cellclf.inference import Classifier
from napari_cellclf.modelfile import ModelMeta, default_class_colors


def test_metrics_of_a_known_confusion():
    truth = [0, 0, 0, 0, 1, 1, 2, 2]
    predicted = [0, 0, 0, 1, 1, 1, 1, 1]
    m = classification_metrics(truth, predicted, ["a", "b", "c"])
    assert m.n == 8
    assert m.accuracy == pytest.approx(5 / 8)
    assert m.balanced_accuracy == pytest.approx((3 / 4 + 1 + 0) / 3)
    assert m.chance == pytest.approx(1 / 3)
    assert m.majority == pytest.approx(4 / 8)
    np.testing.assert_array_equal(m.confusion, [[3, 1, 0], [0, 2, 0], [0, 2, 0]])
    assert m.per_class["a"] == {
        "precision": 1.0,
        "recall": 0.75,
        "f1": pytest.approx(6 / 7),
        "support": 4,
        "predicted": 3,
    }
    assert m.per_class["b"]["precision"] == pytest.approx(2 / 5)
    assert m.per_class["c"]["precision"] is None and m.per_class["c"]["recall"] == 0.0
    low, high = m.balanced_accuracy_interval
    assert low <= m.balanced_accuracy <= high
    document = json.loads(json.dumps(m.to_dict()))
    for key in (
        "accuracy",
        "balanced_accuracy",
        "chance",
        "majority",
        "better_than_chance",
        "confusion",
        "per_class",
        "verdict",
        "balanced_accuracy_interval",
    ):
        assert key in document


def test_clear_model_is_better_than_chance_and_has_no_verdict():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    predicted = np.where(rng.random(200) < 0.9, truth, 1 - truth)
    m = classification_metrics(truth, predicted, ["a", "b"])
    assert m.better_than_chance and m.verdict is None
    assert m.balanced_accuracy_interval[0] > 0.5


def test_majority_guess_on_imbalanced_data_is_called_chance():
    """90 % accuracy from always saying the big class is chance: balanced accuracy says so."""
    truth = np.array([0] * 90 + [1] * 10)
    m = classification_metrics(truth, np.zeros(100, int), ["control", "treated"])
    assert m.accuracy == pytest.approx(0.9) and m.balanced_accuracy == pytest.approx(0.5)
    assert not m.better_than_chance and not m.accuracy_above_majority
    assert "not clearly better than chance" in m.verdict.lower()
    assert "100% of the tiles 'control'" in m.verdict
    assert "largest class" in m.verdict


def test_few_tiles_are_not_enough_evidence():
    m = classification_metrics([0, 1], [0, 1], ["a", "b"])
    assert m.accuracy == 1.0 and not m.better_than_chance and m.verdict


def test_no_tiles_and_one_class_get_a_verdict():
    empty = classification_metrics([], [], ["a", "b"])
    assert empty.accuracy is None and not empty.better_than_chance and empty.verdict
    assert json.dumps(empty.to_dict())
    single = classification_metrics([0] * 50, [0] * 50, ["a", "b"])
    assert not single.better_than_chance and "one class" in single.verdict


def test_probabilities_are_checked_and_summarised():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    m = classification_metrics([0, 1, 1], [0, 1, 0], ["a", "b"], probabilities)
    assert m.mean_confidence == pytest.approx((0.9 + 0.8 + 0.6) / 3)
    assert m.log_loss == pytest.approx(-np.log([0.9, 0.8, 0.4]).mean())
    with pytest.raises(ValueError, match="probabilities"):
        classification_metrics([0, 1], [0, 1], ["a", "b"], probabilities)
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 2], [0, 1], ["a", "b"])


def test_pure_noise_labels_give_the_not_better_than_chance_verdict():
    """A CNN trained on labels that have nothing to do with the pixels, tested on new tiles."""
    classifier = trained("noise")
    result = evaluate(classifier, kind_tiles("noise", 200, seed=5))
    m = result.metrics
    assert not m.better_than_chance
    assert m.verdict is not None and "not clearly better than chance" in m.verdict.lower()
    assert m.balanced_accuracy_interval[0] <= 0.5 <= m.balanced_accuracy_interval[1]
    assert result.probabilities.shape == (200, 2)


def test_a_model_that_learnt_the_cells_is_better_than_chance():
    result = evaluate(trained("cells"), kind_tiles("cells", 120, seed=6))
    assert result.metrics.better_than_chance and result.metrics.verdict is None
    assert result.metrics.balanced_accuracy > 0.9


def test_evaluate_matches_classes_by_name():
    classifier = trained("cells")
    data = kind_tiles("cells", 40, seed=7)
    swapped = data.subset(np.arange(len(data)))
    swapped.class_names = ["puncta", "diffuse"]
    swapped.labels = 1 - data.labels
    a, b = evaluate(classifier, data), evaluate(classifier, swapped)
    np.testing.assert_array_equal(a.truth, b.truth)
    unknown = data.subset(np.arange(len(data)))
    unknown.class_names = ["diffuse", "mitotic"]
    with pytest.raises(ValueError, match="mitotic"):
        evaluate(classifier, unknown)


# ----------------------------------------------------------------------------- dihedral checks


class TopLeftBright(nn.Module):
    """Orientation-sensitive on purpose: class 1 when the top-left quadrant is bright."""

    def forward(self, x):
        h = x.shape[-1] // 2
        diff = x[..., :h, :h].mean(dim=(1, 2, 3)) - 0.15
        return torch.stack([-diff, diff], dim=1) * 10


class MeanBrightness(nn.Module):
    """Rotation-invariant: class 1 when the tile is bright on average."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3)) - 0.15
        return torch.stack([-m, m], dim=1) * 10


class _DihedralMean(nn.Module):
    """Stand-in with model.DihedralTTA's contract (log of the mean softmax over the 8
    transforms), used only while model.py has no DihedralTTA."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        probabilities = []
        for op in range(8):
            t = torch.rot90(x, op & 3, dims=(-2, -1))
            if op & 4:
                t = t.flip(-1)
            probabilities.append(torch.softmax(self.inner(t), dim=1))
        return torch.log(torch.stack(probabilities).mean(dim=0))


def tta(inner):
    return getattr(model_module, "DihedralTTA", _DihedralMean)(inner)


def classifier_for(net):
    meta = ModelMeta(
        class_names=["a", "b"],
        class_colors=default_class_colors(2),
        channel_names=["protein"],
        tile_size=TILE,
        architecture="fast",
        normalization=Normalization(low=[0.0], high=[400.0]).to_dict(),
    )
    return Classifier(net, meta, device="cpu")


def test_dihedral_transforms_are_the_eight_symmetries():
    tile = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    images = {dihedral_transform(tile, op).tobytes() for op in range(8)}
    assert len(images) == 8
    np.testing.assert_array_equal(dihedral_transform(tile, 0), tile)


def test_dihedral_agreement_tells_orientation_sensitive_models_apart():
    tiles = kind_tiles("cells", 64, seed=8).tiles
    sensitive = dihedral_agreement(classifier_for(TopLeftBright()), tiles)
    assert sensitive < 0.5
    assert dihedral_agreement(classifier_for(tta(TopLeftBright())), tiles) == 1.0
    assert dihedral_agreement(classifier_for(MeanBrightness()), tiles) == 1.0
    assert dihedral_agreement(classifier_for(MeanBrightness()), tiles[:0]) is None


def test_validation_metrics_score_the_training_split_and_travel_in_the_model_file():
    from evaluation_support import training_result
    from napari_cellclf.data import split_train_val
    from napari_cellclf.evaluation import stored_verdict, validation_metrics

    result = training_result("noise")
    data = kind_tiles("noise", 240, seed=0)  # the very tiles it was trained on
    evaluation = validation_metrics(result, data)
    _, val_idx = split_train_val(data, result.config.val_fraction, seed=result.config.seed)
    assert evaluation.metrics.n == len(val_idx)
    meta = result.meta()
    assert stored_verdict(meta) is None
    meta.extra["evaluation"] = evaluation.metrics.to_dict()
    assert stored_verdict(meta) == evaluation.metrics.verdict


def test_format_metrics_prints_accuracy_beside_balanced_accuracy_chance_and_verdict():
    from napari_cellclf.evaluation import format_metrics

    lines = format_metrics(
        classification_metrics([0] * 45 + [1] * 5, [0] * 50, ["control", "treated"]).to_dict()
    )
    assert lines[0].startswith("accuracy 0.900 (majority class 0.900), balanced accuracy 0.500")
    assert "chance 0.500" in lines[0]
    assert lines[1].startswith("verdict: Not clearly better than chance")
    assert any(line.split()[:2] == ["treated", "n/a"] for line in lines)
    good = format_metrics(classification_metrics([0, 1] * 50, [0, 1] * 50, ["a", "b"]).to_dict())
    assert good[1].startswith("clearly better than chance")


def test_better_than_chance_but_misleading_counts_get_warnings():
    """The issue's 7-class case in small: balanced accuracy well above 1/K, yet accuracy under
    the majority share and a rare class called for most tiles."""
    truth = np.array([0] * 80 + [1] * 15 + [2] * 5)
    predicted = np.array([2] * 60 + [0] * 20 + [1] * 15 + [2] * 5)
    m = classification_metrics(truth, predicted, ["G1", "Prophase", "Anaphase"])
    assert m.better_than_chance and m.verdict is None
    assert m.accuracy == pytest.approx(0.4) and m.majority == pytest.approx(0.8)
    text = " ".join(m.warnings)
    assert "'G1'" in text and "65% of the tiles 'Anaphase'" in text
    assert m.to_dict()["warnings"] == m.warnings
    clean = classification_metrics([0, 1] * 50, [0, 1] * 50, ["a", "b"])
    assert clean.warnings == []
