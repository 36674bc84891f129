"""Ensembles, test-time augmentation, BatchNorm folding and the step budget (epochs="auto")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellclf import training
from napari_cellclf.inference import Classifier
from napari_cellclf.model import (
    DihedralTTA,
    Ensemble,
    build_model,
    dihedral,
    fold_batchnorm,
    prepare_for_device,
)
from napari_cellclf.modelfile import load_model, read_meta, save_model
from napari_cellclf.training import TrainConfig, epochs_for, run_training
from test_training import accuracy, make_tiles


def _members(n: int = 3, architecture: str = "batchnorm", tile: int = 16):
    members = []
    for seed in range(n):
        torch.manual_seed(seed)
        member = build_model(architecture, 2, 3, tile)
        # Non-trivial BatchNorm statistics, so that folding and eval mode are really exercised.
        member.train()
        with torch.no_grad():
            member(torch.randn(32, 2, tile, tile) * 2 + 1)
        members.append(member.eval())
    return members


def test_ensemble_probabilities_are_the_mean_of_its_members():
    members = _members()
    ensemble = Ensemble(members).eval()
    x = torch.randn(5, 2, 16, 16)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
        got = torch.softmax(ensemble(x), 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected, torch.softmax(members[0](x), 1))  # really an average


def test_tta_is_invariant_under_every_dihedral_transform_of_the_input():
    model = DihedralTTA(_members(1)[0]).eval()
    x = torch.randn(4, 2, 16, 16)
    with torch.no_grad():
        reference = torch.softmax(model(x), 1)
        for op in range(1, 8):
            torch.testing.assert_close(
                torch.softmax(model(dihedral(x, op)), 1), reference, rtol=1e-4, atol=1e-5
            )
        # ... and its probability is the mean over the 8 views of the plain model.
        views = torch.stack([torch.softmax(model.model(dihedral(x, op)), 1) for op in range(8)])
    torch.testing.assert_close(reference, views.mean(0), rtol=1e-5, atol=1e-6)


def test_batchnorm_folds_into_the_convolutions_and_takes_the_fused_inference_path():
    model = _members(1, tile=24)[0]
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy: untouched
    x = torch.randn(6, 2, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert prepare_for_device(build_model("batchnorm", 1, 2, 16), torch.device("cpu")).training
    result = run_training(
        make_tiles(20, tile=24, channels=2), TrainConfig(epochs=1, device="cpu", compare_baseline=False)
    )
    classifier = Classifier(result.model, result.meta(), device="cpu")
    if torch.backends.mkldnn.is_available():
        assert classifier.backend == "onednn"


def test_runs_deliver_their_ensemble_in_one_model_file(tmp_path):
    dataset, held_out = make_tiles(40, tile=16, seed=3), make_tiles(30, tile=16, seed=4)
    config = TrainConfig(epochs=2, batch_size=16, device="cpu", seed=5, runs=3, compare_baseline=False)
    result = run_training(dataset, config)
    assert isinstance(result.model, Ensemble) and len(result.model.members) == 3
    assert result.history.delivered["kind"] == "ensemble" and result.history.delivered["runs"] == [0, 1, 2]
    meta = result.meta()
    assert meta.n_members == 3
    path = save_model(tmp_path / "ensemble", result.model, meta)
    assert read_meta(path).n_members == 3
    loaded, loaded_meta = load_model(path)
    assert isinstance(loaded, Ensemble) and loaded_meta == meta
    x = torch.from_numpy(result.normalization.apply(held_out.tiles))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), result.model(x))
    # The first member is the run that seed trains alone (same split, same recipe).
    alone = run_training(
        dataset, TrainConfig(epochs=2, batch_size=16, device="cpu", seed=5, compare_baseline=False)
    ).model
    with torch.no_grad():
        torch.testing.assert_close(result.model.members[0](x), alone(x))
    assert 0.0 <= accuracy(result, held_out) <= 1.0

    best = run_training(
        dataset,
        TrainConfig(
            epochs=2, batch_size=16, device="cpu", seed=5, runs=3, combine="best", compare_baseline=False
        ),
    )
    assert not isinstance(best.model, Ensemble) and best.meta().n_members == 1
    assert best.history.delivered["runs"] == [best.history.summary()["best_run"]]


def test_tta_option_is_stored_and_restored(tmp_path):
    dataset = make_tiles(30, tile=16, channels=2)
    result = run_training(dataset, TrainConfig(epochs=1, device="cpu", tta=True, compare_baseline=False))
    assert isinstance(result.model, DihedralTTA)
    meta = result.meta()
    assert meta.extra["tta"] is True
    loaded, _ = load_model(save_model(tmp_path / "tta", result.model, meta))
    assert isinstance(loaded, DihedralTTA)
    x = torch.randn(3, 2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), result.model(x))
    with pytest.raises(ValueError, match="DihedralTTA"):
        save_model(tmp_path / "bad", result.model.model, meta)  # metadata says tta, model is not


@pytest.mark.parametrize(
    "n_train, expected",
    [
        (40, 150),  # 2 steps an epoch: the 300-step floor
        (160, 60),  # 5 steps an epoch
        (2400, 30),  # 75 steps an epoch: 30 epochs = 2250 steps
        (100_000, 4),  # 3125 steps an epoch: capped at 10,000 steps
        (5, training.MAX_AUTO_EPOCHS),
    ],
)
def test_auto_epochs_follow_the_step_budget(n_train, expected):
    assert epochs_for(TrainConfig(), n_train) == expected
    assert epochs_for(TrainConfig(epochs=7), n_train) == 7
    assert epochs_for(TrainConfig(epochs="auto"), n_train) == expected


def test_auto_epochs_are_reported_in_events_and_history():
    dataset = make_tiles(16, tile=16)  # ~26 training tiles: 1 step an epoch
    config = TrainConfig(device="cpu", batch_size=32, compare_baseline=False)
    stop_after = 3
    events = []
    stop = __import__("threading").Event()

    def on_progress(event):
        events.append(event)
        if isinstance(event, training.EpochEnd) and event.epoch + 1 == stop_after:
            stop.set()

    result = run_training(dataset, config, on_progress=on_progress, stop=stop)
    planned = epochs_for(config, int(np.round(len(dataset) * 0.8)))
    assert result.epochs == result.history.runs[0]["epochs_planned"] >= 250  # 1 step an epoch
    assert abs(result.epochs - planned) <= 50  # the split's exact size varies a little
    assert all(e.n_epochs == result.epochs for e in events if isinstance(e, training.EpochEnd))
    # select="last": the kept epoch is the last one that finished.
    assert result.history.runs[0]["best_epoch"] == stop_after - 1


def test_baseline_comparison_is_recorded_and_warns_when_the_cnn_loses():
    pytest.importorskip("napari_cellclf.baseline")
    dataset = make_tiles(30, tile=16)
    # One epoch at a tiny learning rate: the CNN cannot beat classical features here.
    result = run_training(dataset, TrainConfig(epochs=1, learning_rate=1e-6, device="cpu"))
    comparison = result.history.baseline
    assert comparison and "best" in comparison and "cnn" in comparison
    assert comparison["cnn"]["balanced_accuracy"] == result.history.delivered["val_balanced_accuracy"]
    best = comparison[comparison["best"]]["balanced_accuracy"]
    if comparison["cnn"]["balanced_accuracy"] <= best:
        assert any("does not beat classical features" in w for w in result.history.warnings)
    assert result.meta().extra["baseline"] == comparison
    assert result.meta().history["baseline"] == comparison
    skipped = run_training(dataset, TrainConfig(epochs=1, device="cpu", compare_baseline=False))
    assert skipped.history.baseline == {}
