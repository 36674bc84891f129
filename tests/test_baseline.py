"""The classical baseline: features on real pixels, models that travel without pickle, and the
comparison on a split (synthetic puncta-vs-diffuse fields; real cells when ../shared/data is there)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_cellclf import baseline, data, synthetic
from napari_cellclf.baseline import FeatureModel, compare_on_split, crude_features, extract_features
from napari_cellclf.baseline import features as baseline_features

TILE = 24


def _cell_dataset(seeds=(0, 1, 2)) -> data.TileDataset:
    """Tiles of synthetic puncta and diffuse fields labelled with the ground truth (Control /
    Aggregates), one group per field."""
    images, labels, sources = [], [], []
    for seed in seeds:
        for phenotype in synthetic.PHENOTYPES:
            field = synthetic.make_field(phenotype, shape=(192, 192), seed=seed, cell_radius=9.0)
            images.append(field.image)
            labels.append(field.labels)
            sources.append(f"{phenotype}{seed}")
    return data.from_label_images(
        images,
        labels,
        list(synthetic.CLASS_NAMES),
        tile_size=TILE,
        min_fraction=0.3,
        channel_names=list(synthetic.CHANNEL_NAMES),
        sources=sources,
    )


@pytest.fixture(scope="module")
def cells() -> data.TileDataset:
    return _cell_dataset()


def _split_by_field(dataset: data.TileDataset, val_fields=("puncta2", "diffuse2")):
    val_groups = [dataset.sources.index(name) for name in val_fields]
    is_val = np.isin(dataset.groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def test_classical_baseline_beats_chance_on_puncta_vs_diffuse(cells):
    train_idx, val_idx = _split_by_field(cells)
    assert set(np.unique(cells.labels[val_idx])) == {0, 1}
    result = compare_on_split(cells, train_idx, val_idx, seed=0)

    assert result["chance"] == 0.5 and 0.5 <= result["majority"] < 1
    assert set(result["methods"]) == {"logistic_5", "logistic", "random_forest"}
    for name, scores in result["methods"].items():
        assert 0 <= scores["accuracy"] <= 1 and 0 <= scores["balanced_accuracy"] <= 1
        assert scores["seconds"] > 0 and scores["label"]
        assert result[name] is scores
    best = result["methods"][result["best"]]
    assert best["balanced_accuracy"] == max(s["balanced_accuracy"] for s in result["methods"].values())
    # Texture (GLCM, LBP, object count) tells puncta from diffuse protein; the total amount of
    # protein is drawn from the same distribution in both, so crude intensity features do worse.
    assert result["logistic"]["balanced_accuracy"] >= 0.8
    assert result["random_forest"]["balanced_accuracy"] >= 0.8
    json.dumps(result)  # goes into ModelMeta.history as it is


@pytest.mark.parametrize("kind", baseline.KINDS)
def test_to_from_tensors_round_trip_gives_identical_probabilities(cells, kind):
    train_idx, val_idx = _split_by_field(cells)
    model = FeatureModel(kind=kind, n_estimators=20).fit(
        cells.tiles[train_idx], cells.labels[train_idx], n_classes=2, channel_names=cells.channel_names
    )
    before = model.predict_proba(cells.tiles[val_idx])
    tensors, spec = model.to_tensors()
    spec = json.loads(json.dumps(spec))  # travels as JSON
    assert all(isinstance(v, np.ndarray) for v in tensors.values())
    assert spec["feature_names"][0] == "nuclei:mean"
    import torch

    rebuilt = FeatureModel.from_tensors({k: torch.from_numpy(v) for k, v in tensors.items()}, spec)
    after = rebuilt.predict_proba(cells.tiles[val_idx])
    np.testing.assert_array_equal(before, after)
    np.testing.assert_allclose(after.sum(axis=1), 1.0)
    assert before.shape == (len(val_idx), 2)


@pytest.mark.parametrize("kind", baseline.KINDS)
def test_numpy_predictor_matches_scikit_learn(kind):
    """The exported arrays predict what scikit-learn itself predicts (3 classes, one absent)."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(150, 6))
    labels = np.where(features[:, 0] + 0.3 * rng.normal(size=150) > 0, 3, 0)
    labels[features[:, 1] > 1] = 1
    model = FeatureModel(kind=kind, n_estimators=15, seed=3).fit_features(features, labels, n_classes=4)
    probabilities = model.predict_proba_features(features)
    assert probabilities.shape == (150, 4) and np.all(probabilities[:, 2] == 0)
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(features)
        ref = (
            LogisticRegression(class_weight="balanced", max_iter=2000, random_state=3)
            .fit(scaler.transform(features), labels)
            .predict_proba(scaler.transform(features))
        )
    else:
        from sklearn.ensemble import RandomForestClassifier

        ref = (
            RandomForestClassifier(n_estimators=15, class_weight="balanced", random_state=3, n_jobs=1)
            .fit(features, labels)
            .predict_proba(features)
        )
    np.testing.assert_allclose(probabilities[:, [0, 1, 3]], ref, atol=1e-9)


def test_from_tensors_refuses_inconsistent_arrays(cells):
    model = FeatureModel(kind="random_forest", n_estimators=3).fit(
        cells.tiles[:60], cells.labels[:60], n_classes=2
    )
    tensors, spec = model.to_tensors()
    broken = dict(tensors, feature=np.full_like(tensors["feature"], 10_000))
    with pytest.raises(ValueError, match="inconsistent"):
        FeatureModel.from_tensors(broken, spec)
    with pytest.raises(ValueError, match="lacks arrays"):
        FeatureModel.from_tensors({k: v for k, v in tensors.items() if k != "value"}, spec)
    with pytest.raises(ValueError, match="expects .* features"):
        model.predict_proba(cells.tiles[:2, :1])  # one channel instead of two


def test_features_finite_on_constant_empty_and_odd_tiles():
    tiles = np.stack(
        [
            np.zeros((2, 16, 16)),
            np.full((2, 16, 16), 7.0),
            np.pad(np.ones((2, 1, 1)) * 1000, ((0, 0), (8, 7), (8, 7))),
            np.full((2, 16, 16), 65535.0),
        ]
    ).astype(np.float32)
    features, names = extract_features(tiles, ["a", "b"])
    assert features.shape == (4, len(names)) and np.isfinite(features).all()
    assert len(set(names)) == len(names) and "a~b:correlation" in names
    crude, crude_names = crude_features(tiles)
    assert crude.shape == (4, 10) and np.isfinite(crude).all()
    assert crude_names[:5] == ["ch0:total", "ch0:std", "ch0:max", "ch0:median", "ch0:foreground_area"]
    # A single bright pixel is one object of area 1 (foreground found by Otsu).
    spot = dict(zip(names, features[2]))
    assert spot["a:n_objects"] == 1 and spot["a:object_area"] == 1
    empty, empty_names = extract_features(np.zeros((0, 2, 16, 16), np.float32), ["a", "b"])
    assert empty.shape == (0, len(names)) and empty_names == names


def test_features_agree_with_scikit_image():
    """The vectorised texture and shape features are scikit-image's numbers."""
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
    from skimage.measure import label, regionprops

    rng = np.random.default_rng(1)
    quantised = rng.integers(0, 16, (4, 20, 23))
    glcm = baseline.glcm_features(quantised)
    for i in range(4):
        matrix = graycomatrix(
            quantised[i].astype(np.uint8),
            [1, 2],
            list(baseline_features._GLCM_ANGLES),
            levels=16,
            symmetric=True,
            normed=True,
        )
        ref = np.stack([graycoprops(matrix, p).mean(axis=1) for p in baseline_features._GLCM_PROPS], 1)
        np.testing.assert_allclose(glcm[i], ref.ravel())
    images = rng.integers(0, 256, (3, 17, 19)).astype(np.uint8)
    ref = [
        np.bincount(local_binary_pattern(im, 8, 1, method="uniform").astype(int).ravel(), minlength=10)
        / im.size
        for im in images
    ]
    np.testing.assert_array_equal(baseline.lbp_histograms(images), np.stack(ref))

    yy, xx = np.mgrid[0:30, 0:30]
    masks = np.stack(
        [
            ((yy - 12) / 8) ** 2 + ((xx - 15) / 5) ** 2 < 1,
            (((yy - 8) / 4) ** 2 + ((xx - 8) / 4) ** 2 < 1) | ((yy > 20) & (xx > 3)),
        ]
    )
    n_objects, objects = baseline_features._largest_objects(masks)
    shape = baseline_features._shape_features(objects)
    for i, mask in enumerate(masks):
        regions = regionprops(label(mask, connectivity=2))
        assert n_objects[i] == len(regions)
        r = max(regions, key=lambda region: region.area)
        np.testing.assert_allclose(
            shape[i, [0, 1, 2, 4, 5, 6]],
            [r.area, r.perimeter, r.eccentricity, r.extent, r.axis_major_length, r.axis_minor_length],
            rtol=1e-9,
        )
        # Solidity: hull of the pixel squares, a little larger than skimage's rasterised hull.
        assert r.solidity - 0.05 < shape[i, 3] <= r.solidity + 1e-9


def test_compare_on_split_skips_what_it_cannot_score(cells):
    control = np.flatnonzero(cells.labels == 0)
    assert "skipped" in compare_on_split(cells, control, np.flatnonzero(cells.labels == 1))
    assert "skipped" in compare_on_split(cells, np.arange(len(cells)), np.zeros(0, int))


MITOTIC = ("Prophase", "Metaphase", "Anaphase", "Telophase")


@pytest.mark.slow
def test_real_cells_interphase_vs_mitotic_near_known_numbers():
    """MLCP DNA channel, interphase vs mitotic, 30 % of every class held out (as in
    test_training). SOURCE.md: four crude intensity features reach about 0.92 accuracy; the
    issue measured 0.936 accuracy / 0.899 balanced for the best classical pipeline (unweighted);
    ours weights the classes, trading some accuracy for balanced accuracy."""
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not root.is_dir():
        root = Path("/work/shared/data")
    if not (root / "mlcp_cellcycle").is_dir():
        pytest.skip("../shared/data/mlcp_cellcycle is absent")
    cells = data.from_class_folders(root / "mlcp_cellcycle", tile_size=40, channels=[1])
    original = cells.labels
    cells.labels = np.isin(np.asarray(cells.class_names)[original], MITOTIC).astype(np.int64)
    cells.class_names = ["interphase", "mitotic"]
    rng = np.random.default_rng(0)
    held_out = np.zeros(len(cells), bool)
    for k in np.unique(original):
        members = np.flatnonzero(original == k)
        held_out[rng.choice(members, round(0.3 * len(members)), replace=False)] = True
    result = compare_on_split(cells, np.flatnonzero(~held_out), np.flatnonzero(held_out))
    print(
        "\n"
        + "\n".join(
            f"{name}: accuracy {s['accuracy']:.3f} balanced "
            f"{s['balanced_accuracy']:.3f} ({s['seconds']:.1f} s)"
            for name, s in result["methods"].items()
        )
    )
    assert 0.78 < result["majority"] < 0.80
    # Measured (seed 0): 5-feature 0.902 / 0.910, logistic 0.912 / 0.914, forest 0.919 / 0.908.
    for name in ("logistic", "random_forest"):
        assert result[name]["accuracy"] >= 0.89
        assert result[name]["balanced_accuracy"] >= 0.88
    assert result["logistic_5"]["balanced_accuracy"] >= 0.85


# ------------------------------------------------------------------- a model of its own


def test_features_model_trains_saves_loads_and_classifies_like_a_cnn(cells, tmp_path):
    from napari_cellclf import attribution, modelfile
    from napari_cellclf._generators import drive
    from napari_cellclf.inference import Classifier
    from napari_cellclf.training import EpochEnd, RunFinished, TrainConfig

    events = []
    result = drive(baseline.train_features(cells, TrainConfig(val_fraction=0.25, seed=0)), events.append)
    assert [type(e) for e in events] == [EpochEnd, RunFinished]
    run = result.history.runs[0]
    assert run["features"]["kind"] in baseline.KINDS
    assert set(run["features"]["candidates"]) == set(baseline.KINDS)
    assert run["best_val_accuracy"] >= 0.75 and run["val_balanced_accuracy"][0] >= 0.75

    # evaluation scores it on the same validation split through the Classifier, as a CNN.
    from napari_cellclf import evaluation

    scored = evaluation.validation_metrics(result, cells)
    assert abs(scored.metrics.accuracy - run["best_val_accuracy"]) <= 1.0 / scored.metrics.n

    meta = result.meta()
    assert meta.architecture == "features"
    path = modelfile.save_model(tmp_path / "features", result.model, meta)
    assert modelfile.read_meta(path).extra["feature_model"]["kind"] == run["features"]["kind"]
    loaded, loaded_meta = modelfile.load_model(path)
    assert baseline.is_feature_model(loaded) and loaded_meta.history == meta.history

    classifier = Classifier.from_file(path)
    probabilities = classifier.predict_tiles(cells.tiles[:40])
    expected = result.model.feature_model.predict_proba(cells.tiles[:40])
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)

    field = synthetic.make_field("puncta", shape=(96, 120), seed=5, cell_radius=9.0)
    prediction = classifier.predict_field_sync(field.image)
    assert prediction.probabilities.shape == (prediction.grid.n_tiles, 2)
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, rtol=1e-5)

    with pytest.raises(ValueError, match="attributions need a CNN; this model uses classical features"):
        attribution.explain_field_sync(classifier, field.image)


def test_features_model_file_refuses_tampered_trees(cells, tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from napari_cellclf import modelfile
    from napari_cellclf._generators import drive
    from napari_cellclf.training import TrainConfig

    result = drive(baseline.train_features(cells, TrainConfig(seed=0), kind="random_forest"))
    path = modelfile.save_model(tmp_path / "forest.safetensors", result.model, result.meta())
    with safe_open(str(path), framework="pt") as reader:
        header = reader.metadata()
    tensors = load_file(str(path))
    tensors["features.feature"] = torch.full_like(tensors["features.feature"], 999)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=header)
    with pytest.raises(modelfile.ModelFileError, match="checksum"):
        modelfile.load_model(tmp_path / "bad.safetensors")
    # Without the checksum (an older file), rebuilding the trees still finds the damage.
    header.pop(modelfile.CHECKSUM_KEY)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=header)
    with pytest.raises(modelfile.ModelFileError, match="classical-features"):
        modelfile.load_model(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="classical-features model"):
        from napari_cellclf.model import build_model

        cnn = build_model("original", 2, 2, TILE)
        modelfile.save_model(tmp_path / "cnn", cnn, result.meta())


def test_comparison_sentence_says_which_is_better():
    comparison = {
        "methods": {
            "logistic": {
                "accuracy": 0.9,
                "balanced_accuracy": 0.85,
                "label": "classical features, logistic regression",
            }
        },
        "best": "logistic",
        "chance": 0.5,
        "majority": 0.7,
    }
    assert "the CNN is better" in baseline.comparison_sentence(0.95, 0.93, comparison)
    worse = baseline.comparison_sentence(0.8, 0.7, comparison)
    assert "classical features are better" in worse and "chance 0.500" in worse
    assert "tie" in baseline.comparison_sentence(0.9, 0.855, comparison)
    assert "not scored" in baseline.comparison_sentence(None, None, comparison)
    assert "no validation tiles" in baseline.comparison_sentence(0.9, 0.9, {"skipped": "no validation tiles"})


def test_cli_predicts_with_a_features_model_and_explain_refuses_it(cells, tmp_path, capsys):
    """Nothing in the CLI is special to a features model: predict classifies, explain says why not."""
    import tifffile

    from napari_cellclf import modelfile
    from napari_cellclf._generators import drive
    from napari_cellclf.cli import main

    result = drive(baseline.train_features(cells, kind="logistic"))
    model_path = modelfile.save_model(tmp_path / "features", result.model, result.meta())
    field = synthetic.make_field("puncta", shape=(96, 96), seed=9, cell_radius=9.0)
    image_path = tmp_path / "field.tif"
    tifffile.imwrite(image_path, field.image, imagej=True, metadata={"axes": "CYX"})
    status = main(["predict", str(model_path), str(image_path), "--out", str(tmp_path / "p.csv")])
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "p.csv").read_text().count("\n") == 1 + 16  # header + 4 x 4 tiles
    capsys.readouterr()
    status = main(["explain", str(model_path), str(image_path), "--out", str(tmp_path / "e.tif")])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert "attributions need a CNN; this model uses classical features" in err
    assert not (tmp_path / "e.tif").exists()


def test_compare_on_training_split_uses_the_cnn_split(cells):
    from napari_cellclf.data import split_train_val
    from napari_cellclf.training import TrainConfig

    config = TrainConfig(val_fraction=0.25, seed=3)
    train_idx, val_idx = split_train_val(cells, 0.25, seed=3)
    result = baseline.compare_on_training_split(cells, config)
    assert (result["n_train"], result["n_val"]) == (len(train_idx), len(val_idx))
    direct = compare_on_split(cells, train_idx, val_idx, seed=3)
    for name, scores in result["methods"].items():
        assert scores["balanced_accuracy"] == direct[name]["balanced_accuracy"]
        assert scores["accuracy"] == direct[name]["accuracy"]


def test_cli_trains_a_features_model_with_arch_features(cells, tmp_path, capsys):
    """`cellclf train --arch features` goes through training.train like a CNN and saves a model
    file that predict reads."""
    import tifffile

    from napari_cellclf import modelfile
    from napari_cellclf.cli import main

    root = tmp_path / "cells"
    for k, name in enumerate(cells.class_names):
        (root / name).mkdir(parents=True)
        for i in np.flatnonzero(cells.labels == k)[:40]:
            tifffile.imwrite(
                root / name / f"{cells.sources[cells.groups[i]]}_{i:04d}.tif",
                cells.tiles[i].astype(np.uint16),
                imagej=True,
                metadata={"axes": "CYX"},
            )
    status = main(
        ["train", str(root), "--arch", "features", "--tile-size", str(TILE), "--out", str(tmp_path / "model")]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "best validation accuracy" in captured.out
    meta = modelfile.read_meta(tmp_path / "model.safetensors")
    assert meta.architecture == "features" and meta.extra["feature_model"]["kind"] in baseline.KINDS
    assert meta.history["runs"][0]["features"]["candidates"]
