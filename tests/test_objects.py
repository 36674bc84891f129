"""Object mode: one tile per cell of an instance mask (objects.py, datasets.InstanceObjects, the
`<stem>_objects.tif` layout of `cellclf train` and `cellclf predict --objects`)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cellclf import synthetic
from napari_cellclf.cli import main
from napari_cellclf.datasets import (
    InstanceObjects,
    TileSpec,
    build_dataset,
    count_tiles,
    detect_layout,
    load_folder,
    problem_messages,
)
from napari_cellclf.objects import measure_objects, object_classes, object_tiles

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
SAMPLE_SEEDS = {"puncta": 11, "diffuse": 12}  # sample_data/make_sample_data.py


def test_tile_is_centred_on_the_rounded_centroid():
    image = np.arange(40 * 50, dtype=np.float32).reshape(1, 40, 50)
    masks = np.zeros((40, 50), np.int32)
    masks[10:15, 20:23] = 7  # centroid (12, 21)
    masks[30:32, 40:44] = 3  # centroid (30.5, 41.5) -> rounds to (31, 42)
    table = measure_objects(masks)
    assert table.labels.tolist() == [3, 7]
    assert table.areas.tolist() == [8, 15]
    np.testing.assert_allclose(table.centroids, [[30.5, 41.5], [12, 21]])
    tiles = object_tiles(image, masks, 8, table)
    assert tiles.shape == (2, 1, 8, 8)
    # the centre pixel sits at T // 2 of the tile
    assert tiles[1, 0, 4, 4] == image[0, 12, 21]
    assert tiles[0, 0, 4, 4] == image[0, 31, 42]
    np.testing.assert_array_equal(tiles[1, 0], image[0, 8:16, 17:25])


def test_edge_objects_are_reflect_padded_and_background_can_be_blanked():
    image = np.random.default_rng(0).random((2, 20, 20)).astype(np.float32)
    masks = np.zeros((20, 20), np.int64)
    masks[0:3, 0:3] = 1  # corner cell, centroid (1, 1)
    masks[5:7, 5:7] = 2
    tiles = object_tiles(image, masks, 8)
    expected = np.pad(image, ((0, 0), (8, 8), (8, 8)), mode="reflect")[
        :, 1 - 4 + 8 : 1 + 4 + 8, 1 - 4 + 8 : 1 + 4 + 8
    ]
    np.testing.assert_array_equal(tiles[0], expected)
    assert np.isfinite(tiles).all()
    blanked = object_tiles(image, masks, 8, blank_background=True)
    keep = np.zeros((8, 8), bool)
    keep[3:6, 3:6] = True  # the cell's own 3x3 pixels; its mirror images are blanked
    np.testing.assert_array_equal(blanked[0][:, keep], tiles[0][:, keep])
    assert not blanked[0][:, ~keep].any()


def test_class_of_an_object_is_its_majority_painted_label():
    masks = np.zeros((10, 10), np.int64)
    masks[0:4, 0:4] = 5  # 16 px: 3 px class 1, 5 px class 2 -> 2
    masks[5:10, 5:10] = 9  # painted only with 1 on a single pixel -> 1
    masks[0:3, 6:9] = 2  # unpainted -> 0
    masks[6:8, 0:2] = 4  # tie 2 vs 2 -> the lower class
    painted = np.zeros((10, 10), np.int64)
    painted[0, 0:3] = 1
    painted[1, 0:4] = 2
    painted[2, 0] = 2
    painted[9, 9] = 1
    painted[6, 0:2] = 2
    painted[7, 0:2] = 1
    table, classes = object_classes(masks, painted, 2)
    assert dict(zip(table.labels.tolist(), classes.tolist())) == {2: 0, 4: 1, 5: 2, 9: 1}
    source = InstanceObjects("f", masks, painted, np.ones((1, 10, 10), np.float32))
    counts = count_tiles([source], TileSpec(8), ["A", "B"])
    assert counts.per_class == [2, 1]
    dataset = build_dataset([source], TileSpec(8), ["A", "B"], ["ch0"])
    assert len(dataset) == 3 and sorted(dataset.labels.tolist()) == [0, 0, 1]  # the count is what trains
    assert any("B" in m for m in problem_messages(counts, ["A", "B"]))  # one B object: the usual problem


def _sample_fields():
    fields = {}
    for phenotype, seed in SAMPLE_SEEDS.items():
        image = tifffile.imread(SAMPLE / f"{phenotype}_field.ome.tif")
        labels = tifffile.imread(SAMPLE / f"{phenotype}_field_labels.tif")
        # The sample files keep the class labels; their instance masks come from the same seeds.
        truth = synthetic.make_field(phenotype, labels.shape, seed=seed)
        assert np.array_equal(truth.labels, labels)
        fields[phenotype] = (image, labels, truth.cells)
    return fields


@pytest.mark.slow
def test_object_mode_on_the_sample_fields_gets_held_out_cells_right(tmp_path, capsys):
    """Train (CLI objects layout) on the cells of the left half of both sample fields, predict
    the cells whose centre lies in the right half (CLI predict --objects): >= 90 % right."""
    fields = _sample_fields()
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    held_out = {}
    for phenotype, (image, labels, cells) in fields.items():
        table = measure_objects(cells)
        left = table.labels[table.centroids[:, 1] < 512]
        train_labels = np.where(np.isin(cells, left), labels, 0).astype(np.uint8)
        tifffile.imwrite(train_dir / f"{phenotype}.ome.tif", image, metadata={"axes": "CYX"})
        tifffile.imwrite(train_dir / f"{phenotype}_labels.tif", train_labels)
        tifffile.imwrite(train_dir / f"{phenotype}_objects.tif", cells.astype(np.int32))
        right = np.where(np.isin(cells, left), 0, cells).astype(np.int32)
        tifffile.imwrite(tmp_path / f"{phenotype}_test_objects.tif", right)
        _, truth = object_classes(right, labels, 2)
        held_out[phenotype] = truth
    assert detect_layout(train_dir) == "objects"
    model = tmp_path / "model.safetensors"
    status = main(
        [
            "train",
            str(train_dir),
            "--out",
            str(model),
            "--tile-size",
            "48",
            "--classes",
            "Control,Aggregates",
            "--arch",
            "fast",
            "--epochs",
            "20",
            "--batch-size",
            "16",
            "--lr",
            "3e-3",
            "--seed",
            "0",
            "--no-compare-baseline",
            "--no-tta",
            "--device",
            "cpu",
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "objects" in out
    right_total = n_right = 0
    for phenotype in fields:
        csv_path = tmp_path / f"{phenotype}.csv"
        status = main(
            [
                "predict",
                str(model),
                str(train_dir / f"{phenotype}.ome.tif"),
                "--objects",
                str(tmp_path / f"{phenotype}_test_objects.tif"),
                "--out",
                str(csv_path),
                "--device",
                "cpu",
            ]
        )
        out, err = capsys.readouterr()
        assert status == 0, err
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        truth = held_out[phenotype]
        assert len(rows) == len(truth) > 100
        assert {
            "label",
            "centroid_y",
            "centroid_x",
            "area",
            "class",
            "confidence",
            "p_Control",
            "p_Aggregates",
        } <= set(rows[0])
        predicted = np.array([int(r["class"]) for r in rows])
        right_total += len(rows)
        n_right += int((predicted == truth).sum())
    accuracy = n_right / right_total
    print(f"held-out cells right: {accuracy:.3f} of {right_total}")
    assert accuracy >= 0.90


def test_objects_layout_loads_one_sample_per_labelled_cell(tmp_path):
    field = synthetic.make_field("puncta", shape=(128, 128), seed=3, cell_radius=8)
    tifffile.imwrite(tmp_path / "a.tif", field.image, metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "a_labels.tif", field.labels)
    tifffile.imwrite(tmp_path / "a_objects.tif", field.cells)
    assert detect_layout(tmp_path) == "objects"
    dataset = load_folder(tmp_path, "objects", TileSpec(16), class_names=["Control", "Aggregates"])
    assert len(dataset) == len(np.unique(field.cells)) - 1
    assert dataset.tiles.shape[1:] == (2, 16, 16)


def test_cli_trains_on_objects_and_predicts_one_row_per_cell(tmp_path, capsys):
    for seed, phenotype in ((3, "puncta"), (4, "diffuse")):
        field = synthetic.make_field(phenotype, shape=(128, 128), seed=seed, cell_radius=8)
        tifffile.imwrite(tmp_path / f"{phenotype}.tif", field.image, metadata={"axes": "CYX"})
        tifffile.imwrite(tmp_path / f"{phenotype}_labels.tif", field.labels)
        tifffile.imwrite(tmp_path / f"{phenotype}_objects.tif", field.cells)
    model = tmp_path / "m.safetensors"
    status = main(
        [
            "train",
            str(tmp_path),
            "--out",
            str(model),
            "--tile-size",
            "16",
            "--classes",
            "Control,Aggregates",
            "--arch",
            "fast",
            "--epochs",
            "1",
            "--no-compare-baseline",
            "--no-tta",
            "--blank-background",
            "--device",
            "cpu",
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "objects" in out
    status = main(
        [
            "predict",
            str(model),
            str(tmp_path / "puncta.tif"),
            "--objects",
            str(tmp_path / "puncta_objects.tif"),
            "--out",
            str(tmp_path / "p.csv"),
            "--device",
            "cpu",
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    cells = tifffile.imread(tmp_path / "puncta_objects.tif")
    assert [int(r["label"]) for r in rows] == measure_objects(cells).labels.tolist()
    assert {
        "source",
        "centroid_y",
        "centroid_x",
        "area",
        "class",
        "class_name",
        "confidence",
        "p_Control",
        "p_Aggregates",
    } <= set(rows[0])
    assert f"{len(rows)} cells" in out

    # evaluate and report read the cells as the model was trained (background blanked): a model
    # scored on tiles it never saw the like of would be judged on the wrong task.
    from napari_cellclf.cli import build_parser
    from napari_cellclf.cli._labelled import load_labelled

    args = build_parser().parse_args(["evaluate", str(model), str(tmp_path), "--device", "cpu"])
    _, _, scored, layout = load_labelled(args)
    assert layout == "objects"
    spec = TileSpec(16)
    blanked = load_folder(
        tmp_path, "objects", spec, class_names=["Control", "Aggregates"], blank_background=True
    )
    unblanked = load_folder(tmp_path, "objects", spec, class_names=["Control", "Aggregates"])
    assert not np.array_equal(blanked.tiles, unblanked.tiles)
    np.testing.assert_array_equal(scored.tiles, blanked.tiles)
    assert main(["evaluate", str(model), str(tmp_path), "--device", "cpu"]) == 0
