"""Memorisation detector: the rule on hand-made curves, then real training runs with true and
shuffled labels on generated fields (fast) and on real cells (slow, skips without the data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_cellclf import data, synthetic
from napari_cellclf.memorisation import GAP, MARGIN, WINDOW, guess_spread, memorisation_message
from napari_cellclf.training import MemorisationWarning, TrainConfig, run_training

MLCP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mlcp_cellcycle"
if not MLCP.is_dir():
    MLCP = Path("/work/shared/data/mlcp_cellcycle")


def message(train, val, chance=0.5, **kwargs):
    return memorisation_message(train, val, chance, run=0, seed=3, **kwargs)


def test_validation_at_chance_for_the_window_fires_once_the_window_is_full():
    val = [0.5] * WINDOW
    train = [0.3] * WINDOW
    assert message(train[:-1], val[:-1]) is None
    text = message(train, val)
    assert text.startswith(
        f"run 1 (seed 3): validation accuracy (class-balanced) stayed at chance level in epochs 1-{WINDOW}"
    )
    assert "learning nothing" in text and "50%" in text


def test_training_far_above_chance_validation_is_memorising_after_three_epochs():
    train, val = [0.82, 0.9, 0.95], [0.5, 0.52, 0.49]
    text = message(train, val, val_accuracy=[0.55, 0.5, 0.5])
    assert "memorising" in text and "95%" in text and "epochs 1-3" in text
    # the gap is judged against plain validation accuracy when given
    assert message(train, val, val_accuracy=[0.55, 0.8, 0.8]) is None


def test_learning_validation_stays_quiet():
    # Real-cell curves with true labels (7 classes, chance 1/7; benchmarks/calibrate_memorisation.py)
    val = [0.303, 0.354, 0.326, 0.415, 0.557, 0.535, 0.515, 0.608, 0.53, 0.616]
    train = [0.007, 0.107, 0.189, 0.159, 0.231, 0.31, 0.374, 0.37, 0.414, 0.471]
    for n in range(1, len(val) + 1):
        assert message(train[:n], val[:n], chance=1 / 7) is None
    # a slow start that takes off before the window is full
    val = [0.5, 0.5, 0.5, 0.5, 0.55, 0.7, 0.8]
    assert all(message([0.5] * n, val[:n]) is None for n in range(1, len(val) + 1))


def test_one_epoch_above_the_margin_restarts_the_window_and_unknowns_never_fire():
    chance = 0.25
    val = [chance] * 5 + [chance + MARGIN + 0.01] + [chance] * 5
    assert all(message([0.25] * n, val[:n], chance) is None for n in range(1, len(val) + 1))
    assert message([0.25] * 12, val + [chance], chance) is not None
    assert message([0.3] * WINDOW, [None] + [0.5] * (WINDOW - 1)) is None
    assert message([0.3] * WINDOW, [0.5] * WINDOW, window=0) is None
    assert message([1.0] * 3, [0.5] * 3, val_accuracy=[0.5] * 3) is not None
    assert message([0.5 + GAP - 0.01] * 3, [0.5] * 3, val_accuracy=[0.5] * 3) is None


def test_small_validation_sets_widen_the_margin():
    assert guess_spread([540, 145]) == pytest.approx(0.0234, abs=1e-3)
    assert guess_spread([5, 0]) == 0.0
    val = [0.5, 0.62, 0.55, 0.6, 0.58, 0.61]  # noise of a guess on 20 + 20 tiles
    assert message([0.5] * 6, val) is None
    assert "learning nothing" in message([0.5] * 6, val, val_counts=[20, 20])
    assert message([0.5] * 6, val, val_counts=[2000, 2000]) is None


def field_tiles(seeds=(0, 1, 2, 3), tile=32) -> data.TileDataset:
    images, labels = [], []
    for seed in seeds:
        for phenotype in synthetic.PHENOTYPES:
            field = synthetic.make_field(phenotype, shape=(256, 256), seed=seed, cell_radius=9.0)
            images.append(field.image)
            labels.append(field.labels)
    return data.from_label_images(images, labels, list(synthetic.CLASS_NAMES), tile, min_fraction=0.3)


def train_events(dataset, config):
    events = []
    result = run_training(dataset, config, on_progress=events.append)
    return result.history, [e for e in events if isinstance(e, MemorisationWarning)]


def test_generated_fields_true_labels_stay_quiet_and_shuffled_labels_fire():
    dataset = field_tiles()
    # Measured (CPU, deterministic for the seed): true labels 0.50 0.59 0.59 0.62 0.66 0.75 ...;
    # shuffled 0.52 0.50 0.59 0.57 0.45 0.46, then early stopping (epoch 6).
    config = TrainConfig(epochs=10, architecture="fast", device="cpu", seed=0)
    history, warnings = train_events(dataset, config)
    assert warnings == [] and history.runs[0]["memorisation"] is None
    assert max(history.runs[0]["val_balanced_accuracy"]) > 0.5 + MARGIN

    shuffled = dataset.subset(np.arange(len(dataset)))
    shuffled.labels = np.random.default_rng(0).permutation(shuffled.labels)
    history, warnings = train_events(shuffled, config)
    assert len(warnings) == 1
    assert history.runs[0]["memorisation"] == warnings[0].message
    assert warnings[0].message in history.warnings
    assert history.runs[0]["chance"] == pytest.approx(0.5)


@pytest.mark.slow
@pytest.mark.skipif(not MLCP.is_dir(), reason="needs ../shared/data/mlcp_cellcycle")
def test_real_cells_true_labels_stay_quiet_and_shuffled_labels_fire_with_the_default_recipe():
    # Interphase vs mitotic from the DNA channel, the default TrainConfig (auto step budget).
    cells = data.from_class_folders(MLCP, 40, channels=[1])
    mitotic = np.array([name not in ("G1", "S_phase", "G2") for name in cells.class_names])
    cells.labels = mitotic[cells.labels].astype(np.int64)
    cells.class_names = ["interphase", "mitotic"]
    config = TrainConfig(device="cpu", seed=0)
    history, warnings = train_events(cells, config)
    assert warnings == [], warnings
    cells.labels = np.random.default_rng(100).permutation(cells.labels)
    history, warnings = train_events(cells, config)
    assert len(warnings) == 1
    # Within the default budget: the epochs the run planned (the auto step budget, epochs=0).
    run = history.runs[0]
    assert warnings[0].epoch < run["epochs_completed"] <= run["epochs_planned"]


def test_too_few_validation_tiles_to_tell_gives_no_chance_level_claim():
    """2 validation tiles per class: a guess's spread (2.5 sd) reaches past 100 %, so a model that
    got every validation tile right must not be told it 'stayed at chance level'."""
    perfect = [1.0] * WINDOW
    assert memorisation_message([1.0] * WINDOW, perfect, 0.5, run=0, seed=0, val_counts=[2, 2]) is None
    # with enough tiles the same perfect curve is (of course) not at chance either, and a flat
    # chance curve still fires
    assert memorisation_message([1.0] * WINDOW, perfect, 0.5, run=0, seed=0, val_counts=[50, 50]) is None
    flat = [0.5] * WINDOW
    assert memorisation_message([0.5] * WINDOW, flat, 0.5, run=0, seed=0, val_counts=[50, 50])
