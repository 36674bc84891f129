"""Inference over whole fields: known answers from a hand-built model, batching, cancelling, CSV."""

from __future__ import annotations

import csv
import threading

import numpy as np
import pytest
import torch
from torch import nn

from napari_cellclf.data import Normalization
from napari_cellclf.inference import (
    CPU_ACTIVATION_BUDGET,
    Classifier,
    FieldPrediction,
    InferenceProgress,
    write_predictions_csv,
)
from napari_cellclf.model import build_model
from napari_cellclf.modelfile import ModelMeta, default_class_colors, save_model

TILE = 16


class MeanBrightness(nn.Module):
    """Class 1 ("bright") when a tile's mean normalised nuclei intensity is above 0.5."""

    def __init__(self):
        super().__init__()
        self.sharpness = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        excess = x[:, 0].mean(dim=(1, 2)) - 0.5
        return torch.stack([-excess, excess], dim=1) * self.sharpness


def make_meta(n_classes=2, tile_size=TILE, architecture="original", high=100.0, mode="dataset"):
    names = ["dim", "bright"] if n_classes == 2 else [f"class {k}" for k in range(n_classes)]
    return ModelMeta(
        class_names=names,
        class_colors=default_class_colors(n_classes),
        channel_names=["nuclei", "protein"],
        tile_size=tile_size,
        architecture=architecture,
        normalization=Normalization(low=[0.0, 0.0], high=[high, high], mode=mode).to_dict(),
    )


def brightness_classifier(**kwargs) -> Classifier:
    return Classifier(MeanBrightness(), make_meta(), device="cpu", **kwargs)


def half_bright_field(height=75, width=101, split=48) -> np.ndarray:
    """Raw uint16 field: nuclei at 80 left of column `split`, 20 right of it (normalised by
    high=100: 0.8 and 0.2; unnormalised both would read as bright)."""
    rng = np.random.default_rng(0)
    field = np.empty((2, height, width), dtype=np.uint16)
    field[0] = 20
    field[0, :, :split] = 80
    field[1] = rng.integers(0, 100, (height, width))
    return field


def run_to_end(generator):
    events = []
    while True:
        try:
            events.append(next(generator))
        except StopIteration as finished:
            return events, finished.value


def test_class_map_matches_known_regions_on_odd_field():
    classifier = brightness_classifier(batch_size=4)
    field = half_bright_field()
    events, prediction = run_to_end(classifier.predict_field(field))

    assert isinstance(prediction, FieldPrediction) and not prediction.cancelled
    grid = prediction.grid
    assert (grid.rows, grid.cols) == (5, 7)  # 75/16 and 101/16 rounded up: padded
    class_map = prediction.class_map()
    assert class_map.shape == (75, 101) and class_map.dtype == np.uint8
    expected = np.where(np.arange(101) < 48, 2, 1)[None, :].repeat(75, axis=0)
    np.testing.assert_array_equal(class_map, expected)  # every pixel covered, none 0
    confidence = prediction.confidence_map()
    assert confidence.shape == (75, 101) and confidence.dtype == np.float32
    assert confidence.min() > 0.99  # 0.8/0.2 are far from the 0.5 boundary

    assert all(isinstance(e, InferenceProgress) for e in events)
    assert [e.done for e in events] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 35]
    assert {e.total for e in events} == {35}


def test_table_columns_and_lengths():
    prediction = brightness_classifier().predict_field_sync(half_bright_field())
    table = prediction.table()
    assert list(table) == [
        "index",
        "row",
        "col",
        "y",
        "x",
        "class",
        "class_name",
        "confidence",
        "p_dim",
        "p_bright",
    ]
    assert {len(v) for v in table.values()} == {35}
    # tiles counted from 1 (the label value of the tile in the widget's classes layer)
    np.testing.assert_array_equal(table["index"], np.arange(1, 36))
    np.testing.assert_array_equal(table["row"], np.arange(35) // 7)
    np.testing.assert_array_equal(table["col"], np.arange(35) % 7)
    np.testing.assert_array_equal(table["y"], table["row"] * TILE)
    np.testing.assert_array_equal(table["x"], table["col"] * TILE)
    np.testing.assert_array_equal(table["class"], np.where(table["col"] < 3, 2, 1))
    assert list(table["class_name"][:4]) == ["bright", "bright", "bright", "dim"]
    np.testing.assert_allclose(table["p_dim"] + table["p_bright"], 1.0, atol=1e-6)
    np.testing.assert_allclose(table["confidence"], np.maximum(table["p_dim"], table["p_bright"]))


def test_foreground_only_skips_empty_tiles():
    field = np.zeros((2, 64, 80), dtype=np.uint16)  # 4 x 5 tiles, all background...
    field[0, 16:32, 16:32] = 90  # ...but tile (1, 1)
    field[0, 48:64, 64:70] = 90  # ...and tile (3, 4): bright nuclei
    # on 6/16 of it, a dim mean
    prediction = brightness_classifier().predict_field_sync(field, foreground_only=True)
    np.testing.assert_array_equal(prediction.indices, [1 * 5 + 1, 3 * 5 + 4])
    np.testing.assert_array_equal(prediction.predicted, [1, 0])
    class_map = prediction.class_map()
    assert (class_map[16:32, 16:32] == 2).all() and (class_map[48:64, 64:80] == 1).all()
    assert prediction.grid.n_tiles == 20
    assert (class_map > 0).sum() == 2 * TILE * TILE  # skipped tiles stay unclassified (0)
    assert prediction.confidence_map()[0, 0] == 0
    assert len(prediction.table()["index"]) == 2


def test_stop_between_batches_returns_partial_result():
    classifier = brightness_classifier(batch_size=4)
    stop = threading.Event()
    generator = classifier.predict_field(half_bright_field(), stop=stop)
    seen = []
    try:
        while True:
            event = next(generator)
            seen.append(event.done)
            if event.done >= 8:
                stop.set()
    except StopIteration as finished:
        prediction = finished.value
    assert seen == [0, 4, 8]  # no batch ran after the stop
    assert prediction.cancelled
    np.testing.assert_array_equal(prediction.indices, np.arange(8))
    assert prediction.probabilities.shape == (8, 2)
    assert (prediction.class_map()[32:] == 0).all()  # rows 2.. never classified


def test_channel_mismatch_is_a_clear_error():
    classifier = brightness_classifier()
    three = np.zeros((3, 40, 40), dtype=np.uint16)
    with pytest.raises(ValueError, match=r"model expects 2 channels \(nuclei, protein\), image has 3"):
        classifier.predict_field_sync(three)
    with pytest.raises(ValueError, match="last axis"):
        classifier.predict_field_sync(np.zeros((40, 40, 2), dtype=np.uint16))
    with pytest.raises(ValueError, match="tiles must be"):
        classifier.predict_tiles(np.zeros((5, 3, TILE, TILE)))


def test_batched_equals_one_at_a_time_with_the_real_network():
    torch.manual_seed(0)
    model = build_model("original", 2, 3, TILE)
    meta = make_meta(n_classes=3)
    field = np.random.default_rng(1).integers(0, 100, (2, 53, 70)).astype(np.uint16)
    batched = Classifier(model, meta, device="cpu", batch_size=7)
    one_by_one = Classifier(model, meta, device="cpu", batch_size=1)
    many = batched.predict_field_sync(field, stride=12)
    single = one_by_one.predict_field_sync(field, stride=12)
    np.testing.assert_array_equal(many.indices, single.indices)
    np.testing.assert_allclose(many.probabilities, single.probabilities, rtol=1e-4, atol=1e-6)
    assert not np.allclose(many.probabilities, many.probabilities[0])  # a real, varied answer

    # The default CPU backend (fused oneDNN convolutions) gives the plain model's answer.
    assert batched.backend == ("onednn" if torch.backends.mkldnn.is_available() else "eager")
    plain = Classifier(model, meta, device="cpu", batch_size=7, backend="eager")
    assert plain.backend == "eager"
    np.testing.assert_allclose(
        plain.predict_field_sync(field, stride=12).probabilities, many.probabilities, rtol=1e-4, atol=1e-6
    )

    # The tile path agrees with the field path (normalisation applied in both).
    from napari_cellclf.tiling import extract_tiles

    tiles = extract_tiles(field, many.grid)
    np.testing.assert_allclose(batched.predict_tiles(tiles), many.probabilities, rtol=1e-4, atol=1e-6)


def test_default_batch_size_is_bounded_by_activation_bytes():
    model = build_model("original", 2, 2, 64)
    classifier = Classifier(model, make_meta(tile_size=64), device="cpu")
    per_tile = classifier.activation_bytes_per_tile()
    assert per_tile == 16 * 64 * 64 * 4  # the first conv block's output
    budget = CPU_ACTIVATION_BUDGET
    assert classifier.batch_size * per_tile <= budget < (classifier.batch_size + 1) * per_tile
    small = Classifier(build_model("original", 2, 2, 16), make_meta(), device="cpu")
    assert small.batch_size > classifier.batch_size  # smaller tiles, more per batch


def test_saved_model_classifies_like_the_in_memory_one(tmp_path):
    torch.manual_seed(2)
    model = build_model("fast", 2, 2, TILE)
    meta = make_meta(architecture="fast")
    path = save_model(tmp_path / "net", model, meta)
    field = np.random.default_rng(3).integers(0, 100, (2, 40, 40)).astype(np.uint16)
    in_memory = Classifier(model, meta, device="cpu").predict_field_sync(field)
    loaded = Classifier.from_file(path, device="cpu").predict_field_sync(field)
    np.testing.assert_allclose(loaded.probabilities, in_memory.probabilities, atol=1e-6)


def test_csv_written_atomically_and_parsed_back(tmp_path):
    prediction = brightness_classifier().predict_field_sync(half_bright_field())
    table = prediction.table()
    out = tmp_path / "predictions.csv"
    out.write_text("old content\n")
    write_predictions_csv(out, table, source="field 1.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]  # no temp left
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 35
    assert list(rows[0]) == ["source"] + list(table)
    assert {row["source"] for row in rows} == {"field 1.tif"}
    np.testing.assert_array_equal([int(r["class"]) for r in rows], table["class"])
    assert [r["class_name"] for r in rows] == list(table["class_name"])
    np.testing.assert_allclose([float(r["p_bright"]) for r in rows], table["p_bright"], rtol=1e-5)

    with pytest.raises(ValueError, match="differ in length"):
        write_predictions_csv(out, {"a": np.arange(3), "b": np.arange(2)})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_predictions_csv(tmp_path / "missing" / "p.csv", table)
    assert out.read_text().startswith("source,index,")  # the old file survived


class Residual(nn.Module):
    """Its layers, read in order, are conv-ReLU-flatten-linear, but it adds a skip connection:
    a re-expression that just chains the layers would be wrong and must not be used."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * TILE * TILE, 2))

    def forward(self, x):
        return self.head(self.body(x) + x)


def test_backends_fall_back_to_the_plain_model_when_they_do_not_apply(monkeypatch):
    field = np.random.default_rng(4).integers(0, 100, (2, 32, 32)).astype(np.uint16)
    torch.manual_seed(0)
    residual = Residual()
    with torch.inference_mode():
        reference = torch.softmax(
            residual(
                torch.from_numpy(
                    field.reshape(2, 2, 16, 2, 16).transpose(1, 3, 0, 2, 4).reshape(4, 2, 16, 16) / 100.0
                ).float()
            ),
            dim=1,
        ).numpy()
    auto = Classifier(residual, make_meta(), device="cpu")
    assert auto.backend == "eager"
    np.testing.assert_allclose(auto.predict_field_sync(field).probabilities, reference, atol=1e-5)
    with pytest.warns(RuntimeWarning, match="oneDNN backend does not apply"):
        assert Classifier(residual, make_meta(), device="cpu", backend="onednn").backend == "eager"

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken_compile)
    compiled = Classifier(residual, make_meta(), device="cpu", backend="compile")
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*no C\\+\\+ compiler"):
        result = compiled.predict_field_sync(field)
    assert compiled.backend == "eager"
    np.testing.assert_allclose(result.probabilities, reference, atol=1e-5)
    with pytest.raises(ValueError, match="backend must be one of"):
        Classifier(residual, make_meta(), device="cpu", backend="fastest")


def test_nan_fields_are_refused_for_prediction_explanation_and_training():
    """NaN spreads through normalisation and convolutions: refused, not classified silently."""
    from napari_cellclf import attribution
    from napari_cellclf.data import from_label_images

    classifier = brightness_classifier()
    field = half_bright_field().astype(np.float32)
    field[0, 10, 20] = np.nan
    with pytest.raises(ValueError, match=r"1 pixel\(s\) are NaN or infinite .*y 10, x 20"):
        classifier.predict_field_sync(field)
    with pytest.raises(ValueError, match="NaN"):
        attribution.explain_field_sync(classifier, field)
    labels = np.ones(field.shape[1:], np.int64)
    with pytest.raises(ValueError, match="field.tif: 1 pixel"):
        from_label_images([field], [labels], ["a", "b"], 16, sources=["field.tif"])
