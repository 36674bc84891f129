"""bioimage.io export and import, checked by bioimageio.core itself.

One tiny model is trained (module fixture, a few seconds) on 16 px tiles of synthetic
puncta/diffuse fields; the export must pass `bioimageio.core.test_model`, bioimageio.core's
prediction on the test tiles must equal our Classifier's, and importing the package must give
back a model with identical probabilities.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from napari_cellclf import bioimageio as bio
from napari_cellclf import synthetic
from napari_cellclf.data import from_label_images
from napari_cellclf.inference import Classifier
from napari_cellclf.model import build_model
from napari_cellclf.modelfile import ModelMeta, default_class_colors, load_model, read_meta, save_model
from napari_cellclf.training import TrainConfig, run_training

pytest.importorskip("bioimageio.core")

TILE = 16
PIXEL_SIZE = 0.325


def fields(seed: int = 0):
    made = [
        synthetic.make_field(p, shape=(96, 96), seed=seed, cell_radius=7.0, pixel_size=PIXEL_SIZE)
        for p in ("puncta", "diffuse")
    ]
    return [f.image for f in made], [f.labels for f in made]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bioimageio")


@pytest.fixture(scope="module")
def model_file(workdir) -> Path:
    """A trained 'fast' model on 2 channels, with a class name that is no identifier."""
    images, labels = fields()
    dataset = from_label_images(
        images,
        labels,
        ["Control (diffuse)", "Aggregates"],
        TILE,
        channel_names=["DNA", "GFP"],
        min_fraction=0.3,
    )
    result = run_training(
        dataset, TrainConfig(epochs=2, batch_size=16, architecture="fast", device="cpu", runs=1, seed=0)
    )
    meta = result.meta()
    meta.pixel_size = {"y": PIXEL_SIZE, "x": PIXEL_SIZE, "unit": "µm"}
    return save_model(workdir / "model.safetensors", result.model, meta)


@pytest.fixture(scope="module")
def exported(workdir, model_file):
    images, _ = fields(seed=1)
    return bio.export_bioimageio(
        model_file,
        workdir / "package",
        field_cyx=images[0],
        name="cellclf test model",
        authors=["Test Author"],
    )


def rdf_of(path: Path) -> dict:
    return yaml.safe_load((path / "rdf.yaml").read_text(encoding="utf-8"))


def test_channel_ids_are_unique_lowercase_identifiers():
    ids = bio.channel_ids(["Mitotic cell", "mitotic-cell", "2n", "Zellkern ä", "", "ok"])
    assert ids == ["mitotic_cell", "mitotic_cell_2", "class_2n", "zellkern_a", "class", "ok"]
    assert all(i.isidentifier() and i == i.lower() for i in ids)


def test_package_holds_what_bioimageio_needs(exported, model_file):
    package = exported.path
    rdf = rdf_of(package)
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    for name in (
        "rdf.yaml",
        "weights.pt",
        "cellclf_architecture.py",
        "test_input.npy",
        "test_output.npy",
        "cover.png",
        "README.md",
        "cellclf_model.safetensors",
    ):
        assert (package / name).is_file(), name
    weights = rdf["weights"]["pytorch_state_dict"]
    architecture = weights["architecture"]
    assert architecture["callable"] == "CellclfProbabilities"
    assert (
        architecture["sha256"] == hashlib.sha256((package / architecture["source"]).read_bytes()).hexdigest()
    )
    assert weights["sha256"] == hashlib.sha256((package / "weights.pt").read_bytes()).hexdigest()
    assert architecture["kwargs"] == {
        "architecture": "fast",
        "in_channels": 2,
        "n_classes": 2,
        "tile_size": TILE,
        "n_members": 1,
        "tta": False,
    }
    # output [batch, channel] with identifier channel names, the real names in config.cellclf
    output = rdf["outputs"][0]
    assert [a["type"] for a in output["axes"]] == ["batch", "channel"]
    assert output["axes"][1]["channel_names"] == ["control_diffuse", "aggregates"]
    assert rdf["config"]["cellclf"]["class_names"] == ["Control (diffuse)", "Aggregates"]
    # dataset normalisation -> scale_linear per channel with gain 1/(high-low), offset -low/(high-low)
    meta = read_meta(model_file)
    step = next(s for s in rdf["inputs"][0]["preprocessing"] if s["id"] == "scale_linear")
    low, high = np.array(meta.normalization["low"]), np.array(meta.normalization["high"])
    np.testing.assert_allclose(step["kwargs"]["gain"], 1 / (high - low))
    np.testing.assert_allclose(step["kwargs"]["offset"], -low / (high - low))
    # the training pixel size is the tile axes' scale
    space = [a for a in rdf["inputs"][0]["axes"] if a["type"] == "space"]
    assert [(a["id"], a["size"], a["unit"], a["scale"]) for a in space] == [
        ("y", TILE, "micrometer", PIXEL_SIZE),
        ("x", TILE, "micrometer", PIXEL_SIZE),
    ]
    # training details and the results the model file holds
    training = rdf["config"]["bioimageio"]["training"]
    assert training["training_epochs"] == 2 and training["training_batch_size"] == 16
    trust = rdf["config"]["bioimageio"]["cellclf_trust"]
    assert trust["chance"] == 0.5 and len(trust["runs"]) == 1
    assert 0 <= trust["runs"][0]["val_accuracy"] <= 1 and 0 <= trust["runs"][0]["val_balanced_accuracy"] <= 1
    readme = (package / "README.md").read_text(encoding="utf-8")
    assert "## Validation" in readme and "balanced accuracy" in readme and "chance is 0.500" in readme
    # test tensors: real foreground tiles, the output is our Classifier's
    tiles = np.load(package / "test_input.npy")
    assert tiles.shape == (bio.N_TEST_TILES, 2, TILE, TILE) and tiles.std() > 0
    model, meta = load_model(model_file)
    np.testing.assert_array_equal(
        np.load(package / "test_output.npy"),
        Classifier(model, meta, device="cpu", backend="eager").predict_tiles(tiles),
    )


@pytest.mark.slow
def test_bioimageio_core_passes_the_package_and_predicts_like_us(exported, model_file):
    summary = bio.run_bioimageio_test(exported.path)
    assert summary.status == "passed", summary.format()
    tiles = exported.test_input
    theirs = bio.predict_with_bioimageio(exported.path, tiles)
    model, meta = load_model(model_file)
    ours = Classifier(model, meta, device="cpu").predict_tiles(tiles)  # default backend too
    assert theirs.shape == ours.shape == (len(tiles), 2)
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(theirs.sum(axis=1), 1.0, atol=1e-6)  # probabilities, not logits
    # other tiles than the test input, from a field the model never saw
    images, _ = fields(seed=5)
    more = bio.sample_tiles(meta, images[1], n=8)
    np.testing.assert_allclose(
        bio.predict_with_bioimageio(exported.path, more),
        Classifier(model, meta, device="cpu").predict_tiles(more),
        rtol=1e-5,
        atol=1e-6,
    )


def test_zip_export_imports_back_to_identical_probabilities(workdir, model_file, monkeypatch):
    monkeypatch.setenv("CELLCLF_PRECISION", "auto")  # as users run it: bf16 where the CPU has it
    result = bio.export_bioimageio(model_file, workdir / "package.zip")
    out = result.path
    assert zipfile.is_zipfile(out)
    reference, reference_meta = load_model(model_file)  # the test output is fp32 all the same
    np.testing.assert_array_equal(
        result.probabilities,
        Classifier(reference, reference_meta, device="cpu", backend="eager", precision="fp32").predict_tiles(
            result.test_input
        ),
    )
    monkeypatch.setenv("CELLCLF_PRECISION", "fp32")
    restored = bio.import_bioimageio(out, workdir / "restored")
    assert restored.name == "restored.safetensors"
    assert restored.read_bytes() == model_file.read_bytes()  # the very file exported
    original_model, original_meta = load_model(model_file)
    model, meta = load_model(restored)
    assert meta.to_dict() == original_meta.to_dict()
    tiles = bio.sample_tiles(meta, fields(seed=3)[0][0], n=6)
    np.testing.assert_array_equal(
        Classifier(model, meta, device="cpu").predict_tiles(tiles),
        Classifier(original_model, original_meta, device="cpu").predict_tiles(tiles),
    )


def test_import_reads_a_folder_and_refuses_altered_or_foreign_packages(workdir, exported):
    restored = bio.import_bioimageio(exported.path, workdir / "from_folder.safetensors")
    assert read_meta(restored).pixel_size == {"y": PIXEL_SIZE, "x": PIXEL_SIZE, "unit": "µm"}
    altered = workdir / "altered"
    altered.mkdir()
    for path in exported.path.iterdir():
        (altered / path.name).write_bytes(path.read_bytes())
    payload = bytearray((altered / "cellclf_model.safetensors").read_bytes())
    payload[-1] ^= 1
    (altered / "cellclf_model.safetensors").write_bytes(bytes(payload))
    with pytest.raises(bio.BioimageioError, match="sha256"):
        bio.import_bioimageio(altered, workdir / "x.safetensors")
    rdf = rdf_of(exported.path)
    del rdf["config"]["cellclf"]
    foreign = workdir / "foreign"
    foreign.mkdir()
    (foreign / "rdf.yaml").write_text(yaml.safe_dump(rdf), encoding="utf-8")
    with pytest.raises(bio.BioimageioError, match="not exported by napari-cellclf"):
        bio.import_bioimageio(foreign / "rdf.yaml", workdir / "y.safetensors")
    assert not (workdir / "x.safetensors").exists() and not (workdir / "y.safetensors").exists()


def test_export_refuses_a_non_empty_folder(workdir, model_file):
    busy = workdir / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(bio.BioimageioError, match="not an empty folder"):
        bio.export_bioimageio(model_file, busy)
    assert (busy / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_per_tile_normalisation_exports_as_scale_range(workdir):
    """An untrained net with per-tile normalisation: scale_range over (y, x), same probabilities."""
    import torch

    torch.manual_seed(0)
    meta = ModelMeta(
        class_names=["a", "b", "c"],
        class_colors=default_class_colors(3),
        channel_names=["DNA"],
        tile_size=TILE,
        architecture="original",
        normalization={"mode": "per_tile", "low": [0.0], "high": [1.0], "percentiles": [2.0, 99.0]},
    )
    path = save_model(workdir / "per_tile.safetensors", build_model("original", 1, 3, TILE), meta)
    images, _ = fields(seed=2)
    result = bio.export_bioimageio(path, workdir / "per_tile_package", field_cyx=images[0][:1])
    step = next(s for s in rdf_of(result.path)["inputs"][0]["preprocessing"] if s["id"] == "scale_range")
    assert step["kwargs"]["axes"] == ["y", "x"]
    assert (step["kwargs"]["min_percentile"], step["kwargs"]["max_percentile"]) == (2.0, 99.0)
    summary = bio.run_bioimageio_test(result.path)
    assert summary.status == "passed", summary.format()
    np.testing.assert_allclose(
        bio.predict_with_bioimageio(result.path, result.test_input),
        result.probabilities,
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.slow
def test_batchnorm_ensemble_exports_and_reproduces(workdir):
    """An ensemble of BatchNorm nets (model.Ensemble, ModelMeta.n_members): the shipped wrapper
    rebuilds it from its kwargs, bioimageio.core's test passes and its probabilities are ours."""
    import torch

    from napari_cellclf import model as model_module

    if not hasattr(model_module, "build_ensemble") or "batchnorm" not in model_module.ARCHITECTURES:
        pytest.skip("this model.py has no ensembles / batchnorm architecture")
    torch.manual_seed(0)
    members = [build_model("batchnorm", 2, 3, TILE) for _ in range(2)]
    for member in members:  # non-trivial running statistics, so folding matters
        for module in member.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.uniform_(0.5, 1.5)
    ensemble = model_module.Ensemble(members).eval()
    meta = ModelMeta(
        class_names=["x", "y", "z"],
        class_colors=default_class_colors(3),
        channel_names=["DNA", "GFP"],
        tile_size=TILE,
        architecture="batchnorm",
        normalization={"mode": "dataset", "low": [20.0, 10.0], "high": [800.0, 300.0]},
        n_members=2,
    )
    path = save_model(workdir / "ensemble.safetensors", ensemble, meta)
    images, _ = fields(seed=4)
    result = bio.export_bioimageio(path, workdir / "ensemble_package", field_cyx=images[0])
    kwargs = rdf_of(result.path)["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    assert kwargs["n_members"] == 2 and kwargs["architecture"] == "batchnorm"
    summary = bio.run_bioimageio_test(result.path)
    assert summary.status == "passed", summary.format()
    theirs = bio.predict_with_bioimageio(result.path, result.test_input)
    np.testing.assert_allclose(theirs, result.probabilities, rtol=1e-5, atol=1e-5)
    restored = bio.import_bioimageio(result.path, workdir / "ensemble_back")
    model, back = load_model(restored)
    assert back.n_members == 2
    np.testing.assert_allclose(
        Classifier(model, back, device="cpu").predict_tiles(result.test_input),
        result.probabilities,
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.slow
def test_test_time_augmentation_travels_as_a_kwarg(workdir):
    """extra["tta"] (a DihedralTTA-wrapped model): the wrapper rebuilds the wrapping from kwargs."""
    import torch

    from napari_cellclf.model import DihedralTTA

    torch.manual_seed(0)
    meta = ModelMeta(
        class_names=["a", "b"],
        class_colors=default_class_colors(2),
        channel_names=["DNA"],
        tile_size=TILE,
        architecture="fast",
        normalization={"mode": "dataset", "low": [0.0], "high": [900.0]},
        extra={"tta": True},
    )
    path = save_model(workdir / "tta.safetensors", DihedralTTA(build_model("fast", 1, 2, TILE)), meta)
    images, _ = fields(seed=6)
    result = bio.export_bioimageio(path, workdir / "tta_package", field_cyx=images[0][:1])
    assert rdf_of(result.path)["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["tta"] is True
    summary = bio.run_bioimageio_test(result.path)
    assert summary.status == "passed", summary.format()
    np.testing.assert_allclose(
        bio.predict_with_bioimageio(result.path, result.test_input),
        result.probabilities,
        rtol=1e-5,
        atol=1e-6,
    )
