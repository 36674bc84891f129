"""napari sample data: the synthetic fields written by sample_data/make_sample_data.py.

The files ship inside the package (src/napari_cellclf/sample_data is a link to the repo's
sample_data/, copied into wheels as package data). Should they be missing — a stripped install —
the same fields are generated again from their seeds, so the samples always open.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import io, synthetic
from ._reader import image_layers
from .objects import OBJECTS_SUFFIX

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"
SEEDS = {"puncta": 11, "diffuse": 12}  # must match sample_data/make_sample_data.py
SHAPE = (1024, 1024)


def _sample_image(phenotype: str) -> tuple[io.ImageData, np.ndarray, np.ndarray]:
    """(image, class labels, cell instance masks) of one sample field."""
    image_path = SAMPLE_DIR / f"{phenotype}_field.ome.tif"
    labels_path = SAMPLE_DIR / f"{phenotype}_field_labels.tif"
    cells_path = SAMPLE_DIR / f"{phenotype}_field{OBJECTS_SUFFIX}.tif"
    if image_path.is_file() and labels_path.is_file() and cells_path.is_file():
        image = io.read_image(image_path)
        labels = np.asarray(io.read_image(labels_path).data)
        cells = np.asarray(io.read_image(cells_path).data)
        return image, labels, cells
    field = synthetic.make_field(phenotype, SHAPE, seed=SEEDS[phenotype])
    image = io.ImageData(
        data=field.image,
        axes="CYX",
        path=str(image_path),
        channel_names=list(synthetic.CHANNEL_NAMES),
        pixel_size=(field.pixel_size, field.pixel_size),
        unit="µm",
    )
    return image, field.labels, field.cells.astype(np.uint16)


def _sample_layers(phenotype: str) -> list[tuple]:
    image, labels, cells = _sample_image(phenotype)
    source = f"sample:{phenotype}"
    layers = image_layers(image, source=source)
    for _data, kwargs, _ in layers:
        kwargs["name"] = f"{phenotype} [{kwargs['metadata']['cellclf']['channel_name']}]"
    scale = layers[0][1].get("scale")
    truth = {
        "name": f"{phenotype} ground truth",
        "opacity": 0.35,
        "visible": False,
        "metadata": {
            "cellclf": {"source": source, "ground_truth": True, "class_names": list(synthetic.CLASS_NAMES)}
        },
    }
    # The cells' instance masks (what Cellpose or StarDist would give): hidden, so the field
    # reads as tiles until the user picks them in the Objects column to classify cells.
    masks = {
        "name": f"{phenotype} cell masks",
        "opacity": 0.5,
        "visible": False,
        "metadata": {"cellclf": {"source": source, "cell_masks": True}},
    }
    for kwargs in (truth, masks):
        if scale is not None:
            kwargs["scale"] = scale
    return [*layers, (labels, truth, "labels"), (cells, masks, "labels")]


def puncta_field() -> list[tuple]:
    """Protein aggregates (puncta) in most cells; ground truth 2 = Aggregates, 1 = Control; the
    cells' instance masks."""
    return _sample_layers("puncta")


def diffuse_field() -> list[tuple]:
    """Diffuse protein everywhere (control); ground truth 1 = Control; the cells' instance masks."""
    return _sample_layers("diffuse")
