"""gallery.gallery_tiles: the gallery's tiles and where they lie in their fields, for the CLI
report and the widget alike. Real pixels: every tile's stored position cuts exactly that tile
out of its field again."""

from __future__ import annotations

import numpy as np

from napari_cellclf.data import from_label_images
from napari_cellclf.gallery import GalleryTile, gallery_indices, gallery_tiles


def test_gallery_tiles_point_at_their_pixels_in_their_fields():
    rng = np.random.default_rng(0)
    tile, stride = 16, 8  # overlapping grid: origins are position x stride, not x tile size
    images = [rng.random((2, 64, 80)).astype(np.float32) for _ in range(2)]
    labels = [np.zeros((64, 80), np.uint8) for _ in range(2)]
    labels[0][:32] = 1
    labels[1][16:, 24:] = 2
    dataset = from_label_images(images, labels, ["a", "b"], tile, stride, sources=["left", "right"])
    truth = dataset.labels
    probabilities = rng.dirichlet([1.0, 1.0], size=len(dataset))
    tiles = gallery_tiles(dataset, truth, probabilities, ["a", "b"], each=4)

    right, wrong = gallery_indices(truth, probabilities, each=4)
    assert [t.index for t in tiles] == list(right) + list(wrong)
    for t in tiles:
        field = images[["left", "right"].index(t.source)]
        y0, x0 = t.origin
        np.testing.assert_array_equal(field[:, y0 : y0 + tile, x0 : x0 + tile], dataset.tiles[t.index])
        assert t.true == ["a", "b"][truth[t.index]]
        assert t.predicted == ["a", "b"][probabilities[t.index].argmax()]
        assert t.correct == (t.true == t.predicted)
        assert t.confidence == probabilities[t.index].max()
        assert t.centre == (y0 + 7.5, x0 + 7.5)
        assert GalleryTile.from_dict(t.to_dict()) == t
