"""Object mode's "mask as a channel" option: each cell's tile gets one more channel, 1 on the
cell's own pixels (objects.object_tiles), left unnormalised (data.Normalization.unscaled), stored
in the model (objects.settings_extra / model_settings) and read back by every consumer: the
model file's checks, channel matching (objects.image_channel_names), `cellclf predict/evaluate`
with and without cell masks, distributed.predict_files and the bioimage.io export."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from napari_cellclf import synthetic
from napari_cellclf.cli import main
from napari_cellclf.data import Normalization, fit_normalization
from napari_cellclf.datasets import (
    InstanceObjects,
    PaintedLabels,
    TileSpec,
    build_dataset,
    channel_problems,
    load_folder,
)
from napari_cellclf.modelfile import ModelFileError, ModelMeta, load_model, read_meta, save_model
from napari_cellclf.objects import (
    MASK_CHANNEL_NAME,
    image_channel_names,
    measure_objects,
    model_settings,
    object_tiles,
    settings_extra,
)

CLASSES = ["Control", "Aggregates"]


def test_mask_channel_is_the_centred_cell_reflected_like_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (2, 20, 20)).astype(np.uint16)
    masks = np.zeros((20, 20), np.int64)
    masks[0:3, 0:3] = 1  # corner cell, centroid (1, 1): its tile reaches beyond the field
    masks[3:5, 3:5] = 2  # a neighbour inside that tile: not the centred cell
    plain = object_tiles(image, masks, 8)
    tiles = object_tiles(image, masks, 8, mask_channel=True)
    assert tiles.shape == (2, 3, 8, 8) and tiles.dtype == np.float32
    np.testing.assert_array_equal(tiles[:, :2], plain)  # image channels unchanged, raw counts
    for n, (label, (cy, cx)) in enumerate(zip(measure_objects(masks).labels, measure_objects(masks).centres)):
        padded = np.pad(masks, 8, mode="reflect") == label
        expected = padded[cy - 4 + 8 : cy + 4 + 8, cx - 4 + 8 : cx + 4 + 8]
        np.testing.assert_array_equal(tiles[n, 2], expected.astype(np.float32))
    corner = tiles[0, 2]
    assert set(np.unique(corner)) == {0.0, 1.0}
    # tile pixel (i, j) is field pixel (i - 3, j - 3): (-1, -1) mirrors the cell's (1, 1)
    assert corner[4, 4] == 1 and corner[2, 2] == 1  # the cell and its mirror image at the edge
    assert corner[6, 6] == 0 and corner[0, 0] == 0  # the neighbour (label 2) and its mirror

    # Both options: the mask marks what the blanking keeps (the cell inside the field).
    both = object_tiles(image, masks, 8, blank_background=True, mask_channel=True)
    blanked = object_tiles(image, masks, 8, blank_background=True)
    np.testing.assert_array_equal(both[:, :2], blanked)
    keep = np.zeros((8, 8), np.float32)
    keep[3:6, 3:6] = 1
    np.testing.assert_array_equal(both[0, 2], keep)


@pytest.mark.parametrize("mode", ["dataset", "per_tile"])
def test_normalisation_leaves_the_mask_channel_as_it_is(mode):
    rng = np.random.default_rng(1)
    tiles = np.concatenate([rng.normal(500, 80, (6, 2, 8, 8)), np.zeros((6, 1, 8, 8))], axis=1).astype(
        np.float32
    )
    tiles[:, 2, 3, 3] = 1  # a one-pixel cell: its 99.8th percentile per tile is below 1
    norm = fit_normalization(tiles, mode=mode, unscaled=1)
    assert len(norm.low) == 2 and norm.n_channels == 3
    out = norm.apply(tiles)
    np.testing.assert_array_equal(out[:, 2], tiles[:, 2])
    image_only = fit_normalization(tiles[:, :2], mode=mode)
    np.testing.assert_allclose(out[:, :2], image_only.apply(tiles[:, :2]), rtol=1e-6)
    again = Normalization.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again.unscaled == 1
    np.testing.assert_array_equal(again.apply(tiles), out)
    assert "unscaled" not in image_only.to_dict()  # files without a mask channel are unchanged
    with pytest.raises(ValueError, match="expects 3"):
        norm.apply(tiles[:, :2])


def test_datasets_name_the_mask_channel_and_refuse_mixing_it():
    field = synthetic.make_field("puncta", shape=(128, 128), seed=3, cell_radius=8)
    source = InstanceObjects("a", field.cells, field.labels, field.image, mask_channel=True)
    dataset = build_dataset([source], TileSpec(16), CLASSES, ["dapi", "gfp"])
    assert dataset.channel_names == ["dapi", "gfp", MASK_CHANNEL_NAME]
    assert dataset.tiles.shape[1:] == (3, 16, 16) and dataset.unscaled_channels == 1
    assert set(np.unique(dataset.tiles[:, 2])) == {0.0, 1.0}
    assert (dataset.tiles[:, 2, 8, 8] == 1).all()  # every tile's centre pixel is its own cell
    painted = PaintedLabels("b", field.labels, field.image)
    with pytest.raises(ValueError, match="merge"):
        build_dataset([source, painted], TileSpec(16), CLASSES, ["dapi", "gfp"])
    # what both faces check before training says why, in words about cell masks
    [problem] = channel_problems([("a", dataset.channel_names), ("b", ["dapi", "gfp"])])
    assert problem.blocking and "'b' has no cell masks" in problem.message


def _write_fields(folder):
    folder.mkdir()
    for seed, phenotype in ((3, "puncta"), (4, "diffuse")):
        field = synthetic.make_field(phenotype, shape=(128, 128), seed=seed, cell_radius=8)
        tifffile.imwrite(folder / f"{phenotype}.tif", field.image, metadata={"axes": "CYX"})
        tifffile.imwrite(folder / f"{phenotype}_labels.tif", field.labels)
        tifffile.imwrite(folder / f"{phenotype}_objects.tif", field.cells)
    return folder


def _train(data, model, *extra):
    return main(
        [
            "train",
            str(data),
            "--out",
            str(model),
            "--tile-size",
            "16",
            "--classes",
            ",".join(CLASSES),
            "--arch",
            "fast",
            "--epochs",
            "1",
            "--no-compare-baseline",
            "--no-tta",
            "--device",
            "cpu",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A mask-channel model trained by `cellclf train --mask-channel` on two synthetic fields."""
    root = tmp_path_factory.mktemp("maskchannel")
    data = _write_fields(root / "data")
    model = root / "m.safetensors"
    assert _train(data, model, "--mask-channel") == 0
    return data, model


def test_cli_trains_with_the_mask_channel_and_the_model_says_so(trained):
    data, model = trained
    meta = read_meta(model)
    assert model_settings(meta) == {"blank_background": False, "mask_channel": True}
    assert meta.channel_names[-1] == MASK_CHANNEL_NAME and meta.in_channels == 3
    assert image_channel_names(meta) == meta.channel_names[:2]
    assert meta.channel_indices == [0, 1]  # into the image: the mask channel is not one of its
    assert meta.normalization["unscaled"] == 1 and len(meta.normalization["low"]) == 2


def test_cli_predicts_cells_with_the_mask_and_refuses_tiles(trained, tmp_path, capsys):
    data, model = trained
    capsys.readouterr()
    status = main(
        [
            "predict",
            str(model),
            str(data / "puncta.tif"),
            "--objects",
            str(data / "puncta_objects.tif"),
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
    cells = tifffile.imread(data / "puncta_objects.tif")
    assert [int(r["label"]) for r in rows] == measure_objects(cells).labels.tolist()

    for extra in ([], ["--out-dir", str(tmp_path / "csvs")]):
        status = main(["predict", str(model), str(data / "puncta.tif"), "--device", "cpu", *extra])
        out, err = capsys.readouterr()
        assert status == 2
        # (a 1-epoch model: the warning that it is no better than chance may come first)
        errors = [line for line in err.splitlines() if line.startswith("cellclf: error:")]
        assert len(errors) == 1 and err.strip().endswith(errors[0]), err
        assert MASK_CHANNEL_NAME in errors[0] and "Traceback" not in err
    assert not (tmp_path / "csvs").exists() or not any((tmp_path / "csvs").iterdir())


def test_cli_evaluate_reads_cells_with_the_mask_channel(trained, capsys):
    data, model = trained
    capsys.readouterr()
    status = main(["evaluate", str(model), str(data), "--all-samples", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "accuracy" in out
    # The same data read without the mask channel would give 2-channel tiles: evaluate must not.
    dataset = load_folder(data, "objects", TileSpec(16), class_names=CLASSES, mask_channel=True)
    assert dataset.channel_names[-1] == MASK_CHANNEL_NAME


def test_mask_channel_needs_cell_masks_in_training_data(tmp_path, capsys):
    data = tmp_path / "labels"
    data.mkdir()
    field = synthetic.make_field("puncta", shape=(128, 128), seed=3, cell_radius=8)
    tifffile.imwrite(data / "a.tif", field.image, metadata={"axes": "CYX"})
    tifffile.imwrite(data / "a_labels.tif", field.labels)
    status = _train(data, tmp_path / "m.safetensors", "--mask-channel")
    _, err = capsys.readouterr()
    assert status == 2 and "--mask-channel" in err and "Traceback" not in err
    assert not (tmp_path / "m.safetensors").exists()


def test_model_file_keeps_the_setting_and_old_models_read_without_it(trained, tmp_path):
    _, path = trained
    model, meta = load_model(path)
    again = save_model(tmp_path / "copy.safetensors", model, meta)
    model2, meta2 = load_model(again)
    assert model_settings(meta2)["mask_channel"] and meta2.channel_names == meta.channel_names

    old = meta.to_dict()
    old["channel_names"] = old["channel_names"][:2]
    old["normalization"] = {k: v for k, v in old["normalization"].items() if k != "unscaled"}
    old["extra"]["objects"] = {"blank_background": False}  # saved before the option existed
    before = ModelMeta.from_dict(old)
    assert model_settings(before)["mask_channel"] is False
    assert image_channel_names(before) == before.channel_names

    broken = meta.to_dict()
    broken["channel_indices"] = [0, 1, 2]  # one per name: the mask is not a channel of the image
    with pytest.raises(ModelFileError, match="channel_indices"):
        ModelMeta.from_dict(broken)
    broken = meta.to_dict()
    broken["channel_names"] = ["dapi", "gfp", "mask"]
    with pytest.raises(ModelFileError, match=MASK_CHANNEL_NAME):
        ModelMeta.from_dict(broken)
    broken = meta.to_dict()
    broken["normalization"]["low"] = [0.0, 0.0, 0.0]
    with pytest.raises(ModelFileError, match="normalization low"):
        ModelMeta.from_dict(broken)
    broken = meta.to_dict()
    broken["extra"]["objects"]["mask_channel"] = "yes"
    with pytest.raises(ModelFileError, match="mask_channel"):
        ModelMeta.from_dict(broken)
    assert settings_extra(True, True) == {"blank_background": True, "mask_channel": True}


def test_distributed_predict_files_refuses_a_mask_channel_model(trained, tmp_path):
    from napari_cellclf.distributed import predict_files

    data, model = trained
    with pytest.raises(ValueError, match=MASK_CHANNEL_NAME):
        predict_files(model, [data / "puncta.tif"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_mask_channel_model(trained, tmp_path, capsys):
    pytest.importorskip("bioimageio.spec")
    from napari_cellclf import bioimageio

    data, model = trained
    with pytest.raises(bioimageio.BioimageioError, match=MASK_CHANNEL_NAME):
        bioimageio.export_bioimageio(model, tmp_path / "pkg")
    capsys.readouterr()
    status = main(
        ["export", str(model), "--out", str(tmp_path / "pkg2"), "--sample", str(data / "puncta.tif")]
    )
    _, err = capsys.readouterr()
    assert status == 2 and "bioimage.io" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_intensity_jitter_leaves_the_mask_channel_0_or_1():
    import torch

    from napari_cellclf.training import TrainConfig, _augment

    config = TrainConfig(augment=False, intensity_jitter=0.5)
    xb = torch.ones(16, 3, 8, 8)
    out = _augment(xb, config, torch.Generator().manual_seed(0), unscaled=1)
    assert torch.equal(out[:, 2], xb[:, 2])
    assert not torch.equal(out[:, :2], xb[:, :2])  # the image channels are still jittered
