"""The bundled sample data: small files equal to what the generator makes, napari layer tuples with
the reader's metadata, a regenerated fallback when the files are gone, and napari opens them.
(The generator itself is tested in test_synthetic.py.)"""

from __future__ import annotations

import numpy as np

from napari_cellclf import _sample_data, synthetic

SAMPLE_DIR = _sample_data.SAMPLE_DIR


def test_bundled_files_match_the_generator_and_stay_small():
    files = sorted(SAMPLE_DIR.glob("*.tif"))
    assert len(files) == 6
    assert sum(f.stat().st_size for f in files) < 6 * 2**20
    layers = _sample_data.puncta_field()
    (nuclei, k1, t1), (protein, k2, t2), (truth, k3, t3), (cells, k4, t4) = layers
    assert (t1, t2, t3, t4) == ("image", "image", "labels", "labels")
    assert nuclei.shape == protein.shape == truth.shape == cells.shape == _sample_data.SHAPE
    assert [k["metadata"]["cellclf"]["channel_name"] for k in (k1, k2)] == ["nuclei", "protein"]
    assert k1["metadata"]["cellclf"]["field"] == k2["metadata"]["cellclf"]["field"] == "sample:puncta"
    assert tuple(k1["scale"]) == (0.325, 0.325)
    regenerated = synthetic.make_field("puncta", _sample_data.SHAPE, seed=_sample_data.SEEDS["puncta"])
    np.testing.assert_array_equal(np.asarray(protein), regenerated.image[1])
    np.testing.assert_array_equal(np.asarray(truth), regenerated.labels)
    np.testing.assert_array_equal(np.asarray(cells), regenerated.cells)  # one id per cell
    assert k4["metadata"]["cellclf"]["source"] == "sample:puncta" and k4["visible"] is False


def test_missing_files_are_regenerated_identically(tmp_path, monkeypatch):
    shipped = _sample_data.diffuse_field()
    monkeypatch.setattr(_sample_data, "SAMPLE_DIR", tmp_path)  # a stripped install: no files
    regenerated = _sample_data.diffuse_field()
    assert [(k["name"], t) for _, k, t in regenerated] == [(k["name"], t) for _, k, t in shipped]
    for (new, new_kwargs, _), (old, old_kwargs, _) in zip(regenerated, shipped):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
        assert new_kwargs.get("scale") == old_kwargs.get("scale")
    assert regenerated[1][1]["metadata"]["cellclf"]["field"] == "sample:diffuse"


def test_samples_open_in_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellclf", "puncta")
    viewer.open_sample("napari-cellclf", "diffuse")
    names = [layer.name for layer in viewer.layers]
    assert names == [
        "puncta [nuclei]",
        "puncta [protein]",
        "puncta ground truth",
        "puncta cell masks",
        "diffuse [nuclei]",
        "diffuse [protein]",
        "diffuse ground truth",
        "diffuse cell masks",
    ]
    protein = viewer.layers["puncta [protein]"]
    assert tuple(protein.scale) == (0.325, 0.325)
    assert protein.contrast_limits[1] < 20000  # from the data, not the uint16 range
    assert viewer.layers["diffuse ground truth"].data.max() == 1
