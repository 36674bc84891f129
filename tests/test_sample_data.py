"""Synthetic fields and the bundled sample data: realistic, deterministic, the classes differ by
pattern (puncta vs diffuse) rather than by brightness, and napari opens them."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_cellclf import _sample_data, synthetic

SAMPLE_DIR = _sample_data.SAMPLE_DIR


def _spottiness(field: synthetic.SyntheticField) -> float:
    """Share of cell pixels in the protein channel far above a 9x9 local median: puncta stand out."""
    protein = field.image[1].astype(float)
    local = ndimage.median_filter(protein, size=9)
    cells = field.cells > 0
    return float(np.mean((protein - local)[cells] > 4 * np.sqrt(np.maximum(local[cells], 1))))


def test_fields_are_deterministic_and_camera_like():
    a = synthetic.make_field("puncta", (192, 160), seed=3)
    b = synthetic.make_field("puncta", (192, 160), seed=3)
    c = synthetic.make_field("puncta", (192, 160), seed=4)
    assert a.image.shape == (2, 192, 160) and a.image.dtype == np.uint16
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    background = a.image[1][a.cells == 0].astype(float)
    assert background.min() >= 80 and background.std() > 1      # camera offset + noise
    # labels coincide with cells: every labelled pixel is in a cell, every cell is labelled
    assert np.array_equal(a.labels > 0, a.cells > 0)
    assert set(np.unique(a.labels)) <= {0, 1, 2}


def test_puncta_differ_by_pattern_not_by_brightness():
    puncta = synthetic.make_field("puncta", (256, 256), seed=5)
    diffuse = synthetic.make_field("diffuse", (256, 256), seed=5)
    # the same layout for one seed: same cells, so differences come from the protein pattern
    np.testing.assert_array_equal(puncta.cells, diffuse.cells)
    assert _spottiness(puncta) > 2 * _spottiness(diffuse)   # measured: about 3x
    total_p = puncta.image[1][puncta.cells > 0].astype(float).mean()
    total_d = diffuse.image[1][diffuse.cells > 0].astype(float).mean()
    assert abs(total_p - total_d) / total_d < 0.25     # mean brightness alone does not separate
    # most cells of the puncta field aggregate; none of the diffuse field do
    per_cell = ndimage.maximum(puncta.labels, puncta.cells, np.arange(1, puncta.cells.max() + 1))
    assert 0.6 < np.mean(per_cell == 2) < 1.0
    assert set(np.unique(diffuse.labels)) == {0, 1}


def test_bundled_files_match_the_generator_and_stay_small():
    files = sorted(SAMPLE_DIR.glob("*.tif"))
    assert len(files) == 4
    assert sum(f.stat().st_size for f in files) < 6 * 2**20
    layers = _sample_data.puncta_field()
    (nuclei, k1, t1), (protein, k2, t2), (truth, k3, t3) = layers
    assert (t1, t2, t3) == ("image", "image", "labels")
    assert nuclei.shape == protein.shape == truth.shape == _sample_data.SHAPE
    assert [k["metadata"]["cellclf"]["channel_name"] for k in (k1, k2)] == ["nuclei", "protein"]
    assert k1["metadata"]["cellclf"]["field"] == k2["metadata"]["cellclf"]["field"] == "sample:puncta"
    assert tuple(k1["scale"]) == (0.325, 0.325)
    regenerated = synthetic.make_field("puncta", _sample_data.SHAPE, seed=_sample_data.SEEDS["puncta"])
    np.testing.assert_array_equal(np.asarray(protein), regenerated.image[1])
    np.testing.assert_array_equal(np.asarray(truth), regenerated.labels)


def test_samples_open_in_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellclf", "puncta")
    viewer.open_sample("napari-cellclf", "diffuse")
    names = [layer.name for layer in viewer.layers]
    assert names == ["puncta [nuclei]", "puncta [protein]", "puncta ground truth",
                     "diffuse [nuclei]", "diffuse [protein]", "diffuse ground truth"]
    protein = viewer.layers["puncta [protein]"]
    assert tuple(protein.scale) == (0.325, 0.325)
    assert protein.contrast_limits[1] < 20000      # from the data, not the uint16 range
    assert viewer.layers["diffuse ground truth"].data.max() == 1
