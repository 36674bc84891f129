"""`cellclf export --format bioimageio`, `cellclf import`, and the pixel-size note of predict/explain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cellclf import synthetic
from napari_cellclf.cli import main
from napari_cellclf.model import build_model
from napari_cellclf.modelfile import ModelMeta, default_class_colors, read_meta, save_model

pytest.importorskip("bioimageio.core")

TILE = 16


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    meta = ModelMeta(
        class_names=["Control", "Aggregates"],
        class_colors=default_class_colors(2),
        channel_names=["DNA", "GFP"],
        tile_size=TILE,
        architecture="fast",
        normalization={"mode": "dataset", "low": [20.0, 10.0], "high": [900.0, 300.0]},
        pixel_size={"y": 0.5, "x": 0.5, "unit": "µm"},
    )
    return save_model(
        tmp_path_factory.mktemp("cli_bioimageio") / "model", build_model("fast", 2, 2, TILE), meta
    )


def write_field_image(path: Path, image: np.ndarray, pixel_size: float) -> Path:
    tifffile.imwrite(
        path,
        image,
        imagej=True,
        resolution=(1 / pixel_size, 1 / pixel_size),
        metadata={"axes": "CYX", "unit": "um"},
    )
    return path


def write_field(path: Path, pixel_size: float) -> Path:
    image = synthetic.make_field("puncta", shape=(64, 64), seed=0, cell_radius=7.0).image
    return write_field_image(path, image, pixel_size)


def test_export_and_import_round_trip_the_model_file(model_file, tmp_path, capsys):
    sample = write_field(tmp_path / "sample.tif", 0.5)
    status, out, err = run(
        capsys,
        "export",
        model_file,
        "--format",
        "bioimageio",
        "--out",
        tmp_path / "package.zip",
        "--sample",
        sample,
        "--author",
        "A. Person",
        "--skip-test",
    )
    assert status == 0, err
    assert f"bioimage.io package written to {tmp_path / 'package.zip'}" in out
    status, out, err = run(capsys, "import", tmp_path / "package.zip", "--out", tmp_path / "back")
    assert status == 0, err
    back = tmp_path / "back.safetensors"
    assert back.read_bytes() == model_file.read_bytes()
    assert "Control, Aggregates" in out and str(back) in out
    assert read_meta(back).pixel_size == {"y": 0.5, "x": 0.5, "unit": "µm"}


@pytest.mark.slow
def test_export_is_tested_by_bioimageio_core(model_file, tmp_path, capsys):
    status, out, err = run(capsys, "export", model_file, "--out", tmp_path / "package")
    assert status == 0, err
    assert "bioimageio.core test: passed" in out
    assert (tmp_path / "package" / "rdf.yaml").is_file()


def test_export_and_import_mistakes_are_one_line_errors(model_file, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    status, _, err = run(capsys, "export", model_file, "--out", busy, "--skip-test")
    assert status == 2 and "Traceback" not in err
    assert [
        line for line in err.splitlines() if line.startswith("cellclf: error:")
    ] and "not an empty folder" in err
    status, _, err = run(capsys, "import", busy, "--out", tmp_path / "x")
    assert status == 2 and "cellclf: error:" in err and "Traceback" not in err
    assert not (tmp_path / "x.safetensors").exists()


def test_predict_and_explain_note_a_different_pixel_size(model_file, tmp_path, capsys):
    same = write_field(tmp_path / "same.tif", 0.55)  # 1.1x: within the factor
    finer = write_field(tmp_path / "finer.tif", 0.25)  # 2x finer pixels
    status, _, err = run(capsys, "predict", model_file, same, finer, "--device", "cpu")
    assert status == 0, err
    notes = [line for line in err.splitlines() if "trained on" in line]
    assert len(notes) == 1 and "finer.tif" in notes[0] and "2.0x larger" in notes[0]
    status, _, err = run(
        capsys, "explain", model_file, finer, "--out", tmp_path / "map.tif", "--device", "cpu"
    )
    assert status == 0, err
    assert "trained on 0.5 µm pixels" in err


def test_train_stores_the_training_pixel_size(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for n, phenotype in enumerate(("puncta", "diffuse")):
        field = synthetic.make_field(phenotype, shape=(64, 64), seed=n, cell_radius=7.0)
        write_field_image(data / f"f{n}.tif", field.image, 0.4)
        tifffile.imwrite(data / f"f{n}_labels.tif", np.where(field.labels > 0, n + 1, 0).astype(np.uint8))
    status, out, err = run(
        capsys,
        "train",
        data,
        "--out",
        tmp_path / "m",
        "--tile-size",
        TILE,
        "--arch",
        "fast",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--min-fraction",
        "0.2",
    )
    assert status == 0, err
    assert read_meta(tmp_path / "m.safetensors").pixel_size == pytest.approx(
        {"y": 0.4, "x": 0.4, "unit": "µm"}
    )
    assert "training pixel size 0.4 x 0.4 µm" in out
