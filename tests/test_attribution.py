"""Gradient x input: where a model looks, with which sign, stitched over the original pixels."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from evaluation_support import kind_tiles, trained
from napari_cellclf.attribution import (
    attribute,
    attribution_checks,
    explain_field,
    explain_field_sync,
    gradient_x_input,
    reinitialised_copy,
    smoothgrad,
    spearman_per_tile,
)
from napari_cellclf.data import Normalization
from napari_cellclf.inference import Classifier
from napari_cellclf.model import build_model
from napari_cellclf.modelfile import ModelMeta, default_class_colors

TILE = 16
HALF = TILE // 2


class TopLeftQuadrant(nn.Module):
    """Class 1 when the mean of the tile's top-left quadrant (both channels) exceeds 0.5; the rest
    of the tile is never looked at."""

    def __init__(self):
        super().__init__()
        self.sharpness = nn.Parameter(torch.tensor(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        excess = x[:, :, :HALF, :HALF].mean(dim=(1, 2, 3)) - 0.5
        return torch.stack([-excess, excess], dim=1) * self.sharpness


def meta_for(n_classes=2, high=100.0):
    return ModelMeta(
        class_names=[f"class {k}" for k in range(n_classes)],
        class_colors=default_class_colors(n_classes),
        channel_names=["nuclei", "protein"],
        tile_size=TILE,
        architecture="original",
        normalization=Normalization(low=[0.0, 0.0], high=[high, high]).to_dict(),
    )


def uniform_field(height=45, width=61, value=60):
    """Odd-sized: the padded grid has partial tiles at the bottom and right."""
    return np.full((2, height, width), value, dtype=np.uint16)


def test_attribution_lies_where_the_model_looks():
    classifier = Classifier(TopLeftQuadrant(), meta_for(), device="cpu", batch_size=5)
    field = uniform_field()
    attributions = explain_field_sync(classifier, field, target=1)
    assert attributions.shape == (45, 61) and attributions.dtype == np.float32

    in_quadrant = np.zeros((45, 61), dtype=bool)
    for y0 in range(0, 45, TILE):
        for x0 in range(0, 61, TILE):
            in_quadrant[y0 : y0 + HALF, x0 : x0 + HALF] = True
    # d logit_1 / dx = sharpness / (C * HALF^2) inside the quadrant; x = 0.6 normalised;
    # summed over both channels.
    expected = 2 * 4.0 / (2 * HALF * HALF) * 0.6
    np.testing.assert_allclose(attributions[in_quadrant], expected, rtol=1e-5)
    assert (attributions[~in_quadrant] == 0).all()

    per_channel = explain_field_sync(classifier, field, target=1, per_channel=True)
    assert per_channel.shape == (2, 45, 61)
    np.testing.assert_allclose(per_channel.sum(axis=0), attributions, rtol=1e-6)


def test_target_class_sets_the_sign_and_default_is_the_prediction():
    classifier = Classifier(TopLeftQuadrant(), meta_for(), device="cpu")
    field = uniform_field(48, 48, value=10)  # dim everywhere: predicted class 0
    field[:, :TILE, :TILE] = 90  # except the first tile: class 1
    for_bright = explain_field_sync(classifier, field, target=1)
    for_dim = explain_field_sync(classifier, field, target=0)
    np.testing.assert_allclose(for_dim, -for_bright, rtol=1e-6)
    assert for_bright[:HALF, :HALF].min() > 0

    predicted = explain_field_sync(classifier, field)
    np.testing.assert_allclose(predicted[:TILE, :TILE], for_bright[:TILE, :TILE])
    np.testing.assert_allclose(predicted[TILE:, :], for_dim[TILE:, :])

    with pytest.raises(ValueError, match="target must be a class index in 0..1"):
        explain_field_sync(classifier, field, target=2)
    with pytest.raises(ValueError, match="model expects 2 channels"):
        explain_field_sync(classifier, field[:1])


def test_one_bright_patch_draws_the_attribution_of_a_trained_like_network():
    """A ReLU network without biases is positively homogeneous, so each tile's gradient x input
    sums exactly to its target logit (completeness): a real check of the gradient, not just its
    shape. The bright patch carries the largest attributions."""
    torch.manual_seed(0)
    model = build_model("original", 2, 3, TILE)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.bias.zero_()
    rng = np.random.default_rng(0)
    field = rng.integers(0, 10, (2, 48, 64)).astype(np.uint16)
    field[:, 20:28, 36:44] = 95  # one bright patch
    classifier = Classifier(model, meta_for(n_classes=3), device="cpu", batch_size=4)

    prepared = classifier.prepare_field(field)
    inputs = classifier.to_tensor(prepared.tiles(prepared.indices))
    with torch.no_grad():
        logits = classifier.model(inputs)
    attributions = gradient_x_input(classifier.model, inputs, target=2)
    np.testing.assert_allclose(
        attributions.sum(dim=(1, 2, 3)).numpy(), logits[:, 2].numpy(), rtol=1e-3, atol=1e-4
    )

    stitched = explain_field_sync(classifier, field, target=2)
    per_tile = stitched.reshape(3, TILE, 4, TILE).sum(axis=(1, 3)).ravel()
    np.testing.assert_allclose(per_tile, logits[:, 2].numpy(), rtol=1e-3, atol=1e-4)
    magnitude = np.abs(stitched)
    assert magnitude[20:28, 36:44].mean() > 5 * magnitude.mean()

    # The oneDNN network's hand-written input gradient equals autograd's through the plain model.
    plain = Classifier(model, meta_for(n_classes=3), device="cpu", backend="eager")
    np.testing.assert_allclose(explain_field_sync(plain, field, target=2), stitched, rtol=1e-4, atol=1e-6)

    # Batched like inference: the batch size does not change the result.
    one_by_one = Classifier(model, meta_for(n_classes=3), device="cpu", batch_size=1)
    np.testing.assert_allclose(
        explain_field_sync(one_by_one, field, target=2), stitched, rtol=1e-4, atol=1e-6
    )


def test_gradient_x_input_leaves_the_model_and_inputs_alone():
    model = build_model("fast", 2, 2, TILE).eval()
    inputs = torch.rand(3, 2, TILE, TILE)
    with torch.inference_mode():
        frozen = inputs.clone()  # an inference tensor
    per_tile_target = torch.tensor([0, 1, 0])
    result = gradient_x_input(model, frozen, per_tile_target)
    assert result.shape == inputs.shape and not result.requires_grad
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert not model.training
    np.testing.assert_allclose(
        result[1].numpy(), gradient_x_input(model, inputs[1:2], 1)[0].numpy(), rtol=1e-4, atol=1e-7
    )
    with pytest.raises(ValueError, match="3 tiles"):
        gradient_x_input(model, inputs, torch.tensor([0, 1]))


def test_stop_between_batches():
    classifier = Classifier(TopLeftQuadrant(), meta_for(), device="cpu", batch_size=4)
    field = uniform_field(64, 64)  # 16 tiles, 4 batches
    stop = threading.Event()
    generator = explain_field(classifier, field, target=1, stop=stop)
    stages = []
    try:
        while True:
            event = next(generator)
            stages.append((event.stage, event.done, event.total))
            if event.done == 4:
                stop.set()
    except StopIteration as finished:
        partial = finished.value
    assert stages == [("explain", 0, 16), ("explain", 4, 16)]
    assert partial.shape == (64, 64)
    assert partial[:HALF, :HALF].min() > 0  # first row of tiles explained
    assert (partial[TILE:] == 0).all()  # the rest never computed


def test_onednn_gradient_matches_autograd_with_overlapping_pools():
    """The fused steps apply each ReLU's mask on the pooled gradient; that must hold for any
    max pool, overlapping and padded windows included (a plain Sequential, not our CNN)."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(8, 8, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 4, 3),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 2),
    )
    classifier = Classifier(model, meta_for(), device="cpu", batch_size=3)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("PyTorch built without oneDNN")
    assert classifier.backend == "onednn"
    inputs = torch.randn(5, 2, TILE, TILE).contiguous(memory_format=torch.channels_last)
    for target in (None, 0, 1):
        np.testing.assert_allclose(
            gradient_x_input(classifier.gradient_model, inputs, target),
            gradient_x_input(model, inputs, target),
            rtol=1e-4,
            atol=1e-6,
        )


# --------------------------------------------------------------------------------------------
# Sanity checks, SmoothGrad, ensembles


def test_planted_corner_artefact_is_flagged():
    """Both classes hold the same cells; one class also has a bright 2x2 corner mark. The
    model learns the mark, and the checks must say so in words."""
    classifier = trained("artefact")
    checks = attribution_checks(classifier, kind_tiles("artefact", 128, seed=3).tiles)
    assert checks.warnings, checks
    text = " ".join(checks.warnings)
    assert "'puncta'" in text and ("border" in text or "same" in text)
    marked = checks.border_share_by_class["puncta"]
    assert marked > 2 * checks.border_share_by_class["diffuse"]
    document = checks.to_dict()
    for key in (
        "randomisation_similarity",
        "gradient_randomisation_similarity",
        "foreground_share",
        "border_share",
        "warnings",
    ):
        assert key in document


def test_model_that_learnt_the_cells_gets_no_location_warning():
    checks = attribution_checks(trained("cells"), kind_tiles("cells", 128, seed=4).tiles)
    assert not [w for w in checks.warnings if "border" in w or "same" in w], checks.warnings
    assert checks.foreground_share > checks.foreground_pixel_share  # it looks at the cells
    assert -1 <= checks.randomisation_similarity <= 1
    assert -1 <= checks.gradient_randomisation_similarity <= 1
    # x input makes the map look like the image whatever the weights (Adebayo et al. 2018):
    # gradient x input resembles the random network's far more than the plain gradient does.
    assert checks.randomisation_similarity > checks.gradient_randomisation_similarity


def test_reinitialised_copy_is_fresh_and_leaves_the_model_alone():
    model = build_model("fast", 1, 2, 16)
    before = [p.detach().clone() for p in model.parameters()]
    fresh = reinitialised_copy(model, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before, fresh.parameters()))
    again = reinitialised_copy(model, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), again.parameters()))


def test_spearman_per_tile():
    a = np.arange(10.0).reshape(1, 10)
    np.testing.assert_allclose(spearman_per_tile(np.vstack([a, a]), np.vstack([a**3, -a])), [1.0, -1.0])
    assert np.isnan(spearman_per_tile(a, np.zeros_like(a))[0])


def test_smoothgrad_without_noise_is_gradient_x_input_and_explains_fields():
    torch.manual_seed(0)
    model = build_model("fast", 2, 2, TILE).eval()
    x = torch.rand(3, 2, TILE, TILE)
    plain = gradient_x_input(model, x)
    torch.testing.assert_close(smoothgrad(model, x, samples=1, noise=0.0), plain)
    smooth = attribute(model, x, method="smoothgrad", samples=4)
    assert smooth.shape == x.shape and not torch.equal(smooth, plain)
    classifier = Classifier(TopLeftQuadrant(), meta_for(), device="cpu", batch_size=5)
    field = uniform_field()
    a = explain_field_sync(classifier, field, target=1, method="smoothgrad", noise=0.0, samples=2)
    np.testing.assert_allclose(a, explain_field_sync(classifier, field, target=1), rtol=1e-5)
    with pytest.raises(ValueError, match="method"):
        explain_field_sync(classifier, field, method="occlusion")


class _MeanOfMembers(nn.Module):
    """model.Ensemble's contract, for when model.py has none yet."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        return torch.log(torch.stack([torch.softmax(m(x), dim=1) for m in self.members]).mean(0))


def test_ensemble_attribution_is_the_mean_of_its_members_maps():
    import napari_cellclf.model as model_module

    torch.manual_seed(0)
    members = [build_model("fast", 2, 2, TILE).eval() for _ in range(3)]
    ensemble_class = getattr(model_module, "Ensemble", _MeanOfMembers)
    try:
        ensemble = ensemble_class(members).eval()
    except TypeError:
        ensemble = _MeanOfMembers(members).eval()
    x = torch.rand(4, 2, TILE, TILE)
    target = ensemble(x).argmax(dim=1)
    expected = torch.stack([gradient_x_input(m, x, target) for m in members]).mean(0)
    torch.testing.assert_close(gradient_x_input(ensemble, x), expected)
