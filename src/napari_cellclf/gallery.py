"""Which evaluated tiles a gallery shows, and where each one came from. No Qt.

The method's panel of classified test images is the most confidently right and the most
confidently wrong tiles. `gallery_indices` picks them (taking every true class in turn, so a
rare class shows up too); `gallery_tiles` adds what a viewer needs to find a tile again: its
source (the field or file it was cut from), the top-left pixel of the tile in that source, the
true and predicted class and the confidence. `cellclf report` (report.py: gallery.png and
metrics.json's "gallery") and the widget's Report tab (thumbnails that centre the viewer on the
tile and relabel it) both take their tiles from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

GALLERY_EACH = 6  # most confident right tiles and most confident wrong tiles shown


def gallery_indices(
    truth: np.ndarray, probabilities: np.ndarray, each: int = GALLERY_EACH
) -> tuple[np.ndarray, np.ndarray]:
    """(right, wrong): up to `each` most confidently right and most confidently wrong tiles,
    taken in turn from each true class (most confident first), so every class shows up."""
    truth = np.asarray(truth)
    if len(truth) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    order = np.argsort(-confidence, kind="stable")

    def pick(mask: np.ndarray) -> np.ndarray:
        queues = [order[mask[order] & (truth[order] == k)] for k in np.unique(truth)]
        chosen: list[int] = []
        depth = 0
        while len(chosen) < each and any(depth < len(q) for q in queues):
            row = [int(q[depth]) for q in queues if depth < len(q)]
            chosen += sorted(row, key=lambda i: -confidence[i])[: each - len(chosen)]
            depth += 1
        return np.asarray(chosen, dtype=np.int64)

    return pick(predicted == truth), pick(predicted != truth)


@dataclass(frozen=True)
class GalleryTile:
    index: int  # row in the evaluated dataset
    source: str  # data.TileDataset.sources entry: a field (layer) name or a file path
    origin: tuple[int, int]  # (y0, x0) of the tile in its source; (0, 0) for a resized whole image
    tile_size: int
    true: str
    predicted: str
    confidence: float
    correct: bool

    @property
    def centre(self) -> tuple[float, float]:
        """The tile's centre in its source's pixel coordinates (integers at pixel centres, as
        napari's data coordinates are)."""
        half = (self.tile_size - 1) / 2
        return self.origin[0] + half, self.origin[1] + half

    def to_dict(self) -> dict:
        out = asdict(self)
        out["origin"] = [int(v) for v in self.origin]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "GalleryTile":
        y0, x0 = (int(v) for v in d["origin"])
        return cls(
            int(d["index"]),
            str(d["source"]),
            (y0, x0),
            int(d["tile_size"]),
            str(d["true"]),
            str(d["predicted"]),
            float(d["confidence"]),
            bool(d["correct"]),
        )


def gallery_tiles(
    dataset,
    truth: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    each: int = GALLERY_EACH,
) -> list[GalleryTile]:
    """The gallery of an evaluated data.TileDataset (`truth` and `probabilities` in the model's
    class order, e.g. evaluation.evaluate's): the most confidently right tiles, then the most
    confidently wrong ones (gallery_indices), each with its source and position."""
    names = [str(n) for n in class_names]
    truth = np.asarray(truth, dtype=np.int64)
    probabilities = np.asarray(probabilities)
    right, wrong = gallery_indices(truth, probabilities, each)
    step = int(getattr(dataset, "stride", 0) or dataset.tile_size)
    tiles = []
    for i in np.concatenate([right, wrong]).astype(np.int64):
        group = int(dataset.groups[i])
        row, col = (int(v) for v in dataset.positions[i])
        predicted = int(probabilities[i].argmax())
        tiles.append(
            GalleryTile(
                index=int(i),
                source=str(dataset.sources[group]) if group < len(dataset.sources) else "",
                origin=(row * step, col * step),
                tile_size=int(dataset.tile_size),
                true=names[int(truth[i])],
                predicted=names[predicted],
                confidence=float(probabilities[i, predicted]),
                correct=predicted == int(truth[i]),
            )
        )
    return tiles


def split_gallery(tiles: Sequence[GalleryTile]) -> tuple[np.ndarray, np.ndarray]:
    """(right, wrong) dataset indices of a gallery, as gallery_figure draws them."""
    right = [t.index for t in tiles if t.correct]
    wrong = [t.index for t in tiles if not t.correct]
    return np.asarray(right, dtype=np.int64), np.asarray(wrong, dtype=np.int64)
