"""Write the plugin's sample fields of view (run from the repo root: python sample_data/make_sample_data.py).

Deterministic: the same seeds give byte-identical images. Two 1024x1024 fields, 2 channels
(nuclei, protein), 16-bit OME-TIFF with channel names and pixel size, plus class label images
(0 background, 1 Control, 2 Aggregates) — the ground truth for demos and tests — and the
cells' instance masks (0 background, one id per cell) for object mode.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
from napari_cellclf.synthetic import CHANNEL_NAMES, make_field  # noqa: E402

SHAPE = (1024, 1024)
FIELDS = {"puncta": 11, "diffuse": 12}  # phenotype -> seed


def write_field(phenotype: str, seed: int, folder: Path = HERE) -> tuple[Path, Path, Path]:
    field = make_field(phenotype, SHAPE, seed=seed)
    image_path = folder / f"{phenotype}_field.ome.tif"
    labels_path = folder / f"{phenotype}_field_labels.tif"
    cells_path = folder / f"{phenotype}_field_objects.tif"  # objects.OBJECTS_SUFFIX
    # A fixed OME UUID (tifffile would draw a random one) keeps the files byte-identical.
    file_id = uuid.uuid5(uuid.NAMESPACE_URL, f"napari-cellclf/sample_data/{phenotype}/{seed}")
    tifffile.imwrite(
        image_path,
        field.image,
        ome=True,
        photometric="minisblack",
        compression="zlib",
        predictor=True,
        resolution=(1 / field.pixel_size, 1 / field.pixel_size),
        metadata={
            "axes": "CYX",
            "UUID": f"urn:uuid:{file_id}",
            "Channel": {"Name": list(CHANNEL_NAMES)},
            "PhysicalSizeX": field.pixel_size,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": field.pixel_size,
            "PhysicalSizeYUnit": "µm",
        },
    )
    tifffile.imwrite(labels_path, field.labels.astype(np.uint8), compression="zlib")
    tifffile.imwrite(cells_path, field.cells.astype(np.uint16), compression="zlib")
    return image_path, labels_path, cells_path


if __name__ == "__main__":
    for name, seed in FIELDS.items():
        for path in write_field(name, seed):
            print(f"{path.name}: {path.stat().st_size / 2**20:.2f} MiB")
