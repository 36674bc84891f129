"""A large tiled TIFF predicted band by band equals the in-memory path."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_cellclf import streaming
from napari_cellclf.data import Normalization
from napari_cellclf.inference import Classifier, write_predictions_csv
from napari_cellclf.model import build_model
from napari_cellclf.modelfile import ModelMeta, default_class_colors
from napari_cellclf.synthetic import make_field

TILE = 16


def classifier(mode="dataset") -> Classifier:
    torch.manual_seed(0)
    meta = ModelMeta(
        class_names=["Control", "Aggregates"],
        class_colors=default_class_colors(2),
        channel_names=["nuclei", "protein"],
        tile_size=TILE,
        architecture="original",
        normalization=Normalization(low=[20.0, 20.0], high=[1500.0, 600.0], mode=mode).to_dict(),
    )
    return Classifier(build_model("original", 2, 2, TILE), meta, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def big_tiff(tmp_path_factory):
    """A 'large' (here 300 x 212 px: not a multiple of the tile) tiled, compressed TIFF."""
    path = tmp_path_factory.mktemp("big") / "big.tif"
    image = make_field("puncta", (300, 212), seed=4).image
    tifffile.imwrite(
        path, image, tile=(64, 64), compression="zlib", photometric="minisblack", metadata={"axes": "CYX"}
    )
    return path, image


@pytest.mark.parametrize("stride,mode", [(TILE, "dataset"), (8, "dataset"), (8, "per_tile")])
def test_bands_equal_the_in_memory_path(big_tiff, tmp_path, monkeypatch, stride, mode):
    path, image = big_tiff
    model = classifier(mode)
    rows_read = []
    original = streaming.LazyImage.rows

    def spy(self, y0, y1):
        rows_read.append(y1 - y0)
        return original(self, y0, y1)

    monkeypatch.setattr(streaming.LazyImage, "rows", spy)
    # A budget of ~3 tile rows of pixels: many bands, each far smaller than the image.
    monkeypatch.setattr(streaming, "BAND_BUDGET_BYTES", 2 * 212 * 4 * TILE * 3)
    streamed = tmp_path / "streamed.csv"
    n = streaming.predict_file_streaming(model, path, streamed, stride=stride)
    reference = model.predict_field_sync(image, stride=stride)
    assert n == reference.grid.n_tiles
    write_predictions_csv(tmp_path / "memory.csv", reference.table(), source=path.name)
    assert len(rows_read) > 4 and max(rows_read) < image.shape[1] / 2
    assert_same_predictions(streamed, tmp_path / "memory.csv")


def assert_same_predictions(a_path, b_path) -> None:
    """Same rows, tiles and classes; probabilities equal up to float rounding: oneDNN's results
    depend in the last bit on how tiles are batched (a band's last batch is short), and dense
    blocks sum in another order."""
    a = np.genfromtxt(a_path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    b = np.genfromtxt(b_path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    assert a.dtype.names == b.dtype.names and len(a) == len(b)
    for name in a.dtype.names:
        if name.startswith("p_") or name == "confidence":
            np.testing.assert_allclose(a[name], b[name], atol=1e-5)
        else:
            np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("stride", [TILE, 8])
def test_explain_bands_equal_the_in_memory_map(big_tiff, tmp_path, monkeypatch, stride):
    from napari_cellclf.attribution import explain_field_sync

    path, image = big_tiff
    model = classifier()
    monkeypatch.setattr(streaming, "TIFF_TILE", 32)  # bands of 32 px rows: many
    monkeypatch.setattr(streaming, "BAND_BUDGET_BYTES", 1)
    out = tmp_path / "attribution.tif"
    streaming.explain_file_streaming(model, path, out, stride=stride)
    streamed = tifffile.imread(out)
    reference = explain_field_sync(model, image, stride=stride)
    assert streamed.shape == reference.shape
    np.testing.assert_allclose(streamed, reference, rtol=1e-5, atol=1e-6 * np.abs(reference).max())


def test_cli_streams_a_large_tiff_like_the_in_memory_path(big_tiff, tmp_path, monkeypatch, capsys):
    """`cellclf predict` and `cellclf explain` on a file io leaves unread (here made "large" by
    lowering io.limits.LAZY_BYTES and the band budget) go band by band and give what the same commands
    give on the file read whole: the same CSV, the same attribution map (a tiled BigTIFF)."""
    from napari_cellclf import io
    from napari_cellclf.cli import main
    from napari_cellclf.modelfile import save_model

    path, image = big_tiff
    model = classifier()
    model_path = tmp_path / "model.safetensors"
    save_model(model_path, model.model, model.meta)
    bands = []
    original = streaming.LazyImage.rows
    monkeypatch.setattr(
        streaming.LazyImage, "rows", lambda self, y0, y1: bands.append(y1) or original(self, y0, y1)
    )
    monkeypatch.setenv("CELLCLF_PRECISION", "fp32")

    def run(kind: str, large: bool) -> None:
        monkeypatch.setattr(io.limits, "LAZY_BYTES", 1 if large else 2**40)
        monkeypatch.setattr(streaming, "BAND_BUDGET_BYTES", 1 if large else 64 * 2**20)
        monkeypatch.setattr(streaming, "TIFF_TILE", 32)
        out = tmp_path / f"{kind}_{large}.{'csv' if kind == 'predict' else 'tif'}"
        assert main([kind, str(model_path), str(path), "--out", str(out)]) == 0

    for kind in ("predict", "explain"):
        bands.clear()
        run(kind, large=True)
        assert len(bands) > 4, "the large file was not read band by band"
        bands.clear()
        run(kind, large=False)
        assert not bands
    capsys.readouterr()
    assert_same_predictions(tmp_path / "predict_True.csv", tmp_path / "predict_False.csv")
    streamed = tifffile.imread(tmp_path / "explain_True.tif")
    reference = tifffile.imread(tmp_path / "explain_False.tif")
    assert streamed.shape == reference.shape == image.shape[1:]
    np.testing.assert_allclose(streamed, reference, rtol=1e-5, atol=1e-6 * np.abs(reference).max())


def test_distributed_predict_one_streams_a_large_file(big_tiff, tmp_path, monkeypatch):
    """--out-dir / --workers go through distributed.predict_one: a file io leaves unread is
    classified band by band there too, with the CSV of the in-memory path."""
    from napari_cellclf import distributed, io

    path, _ = big_tiff
    model = classifier()
    bands = []
    original = streaming.LazyImage.rows
    monkeypatch.setattr(
        streaming.LazyImage, "rows", lambda self, y0, y1: bands.append(y1) or original(self, y0, y1)
    )
    monkeypatch.setattr(streaming, "BAND_BUDGET_BYTES", 1)
    monkeypatch.setattr(io.limits, "LAZY_BYTES", 1)
    streamed = tmp_path / "streamed.csv"
    n = distributed.predict_one(model, path, streamed)
    assert len(bands) > 4
    monkeypatch.setattr(io.limits, "LAZY_BYTES", 2**40)
    read_lazily = len(bands)
    whole = tmp_path / "whole.csv"
    assert distributed.predict_one(model, path, whole) == n
    assert len(bands) == read_lazily  # read whole this time
    assert_same_predictions(streamed, whole)
