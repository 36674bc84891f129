"""Uncertainty scores and the order in which unlabelled tiles are asked about (uncertainty.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellclf import uncertainty
from napari_cellclf.model import DihedralTTA, Ensemble


def test_entropy_and_margin_order_sure_over_unsure():
    p = np.array([[1.0, 0.0, 0.0], [0.7, 0.2, 0.1], [0.45, 0.45, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    h = uncertainty.entropy(p)
    assert h[0] == 0 and h[-1] == pytest.approx(1.0)
    assert np.all(np.diff(h) > 0)
    m = uncertainty.margin(p)
    np.testing.assert_allclose(m, [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(uncertainty.scores(p, "margin"), m)
    with pytest.raises(ValueError, match="uncertainty method"):
        uncertainty.scores(p, "variance")


def test_disagreement_is_high_where_confident_members_disagree():
    agree_sure = [[0.99, 0.01]] * 2
    agree_unsure = [[0.5, 0.5]] * 2
    disagree = [[0.99, 0.01], [0.01, 0.99]]
    members = np.array([agree_sure, agree_unsure, disagree]).transpose(1, 0, 2)  # (M, N, K)
    d = uncertainty.disagreement(members)
    assert d[2] > 0.8 and d[0] < 1e-6 and d[1] < 1e-6
    with pytest.raises(ValueError, match="ensemble member"):
        uncertainty.scores(members[0], "disagreement")


def test_rank_skips_labelled_and_visited_and_breaks_ties_by_index():
    s = np.array([0.2, 0.9, 0.9, 0.5, 0.95])
    assert list(uncertainty.rank_unlabelled(s, [0, 1, 2, 3, 4], exclude=[4])) == [1, 2, 3, 0]
    assert uncertainty.next_uncertain(s, [3, 0, 2], exclude=[2]) == 3
    assert uncertainty.next_uncertain(s, [2], exclude=[2]) is None


def test_member_probabilities_of_an_ensemble_average_to_its_output():
    from napari_cellclf.inference import Classifier
    from napari_cellclf.model import build_model
    from napari_cellclf.modelfile import ModelMeta

    torch.manual_seed(0)
    members = [build_model("fast", 1, 2, 16) for _ in range(3)]
    meta = ModelMeta(
        architecture="fast",
        tile_size=16,
        class_names=["a", "b"],
        class_colors=["#000000", "#ffffff"],
        channel_names=["c"],
        n_members=3,
        normalization={"mode": "dataset", "low": [0.0], "high": [1.0]},
    )
    tiles = np.random.default_rng(0).random((5, 1, 16, 16), dtype=np.float32)
    for model in (Ensemble(members), DihedralTTA(Ensemble(members))):
        classifier = Classifier(model, meta, device="cpu", precision="fp32")
        per_member = uncertainty.member_probabilities(classifier, tiles)
        assert per_member.shape == (3, 5, 2)
        np.testing.assert_allclose(per_member.mean(0), classifier.predict_tiles(tiles), atol=1e-5)
    single = Classifier(members[0], meta, device="cpu", precision="fp32")
    assert uncertainty.member_probabilities(single, tiles) is None
