"""Training pixel size in the model file, and the warning for fields imaged at another one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_cellclf.io import read_image
from napari_cellclf.model import build_model
from napari_cellclf.modelfile import (
    ModelFileError,
    ModelMeta,
    default_class_colors,
    load_model,
    read_meta,
    save_model,
)
from napari_cellclf.pixelsize import (
    DEFAULT_FACTOR,
    pixel_size_record,
    pixel_size_warning,
    training_pixel_size,
    training_pixel_size_of_files,
)

TRAINED = {"y": 0.65, "x": 0.65, "unit": "µm"}


def meta(**changes) -> ModelMeta:
    values = dict(
        class_names=["a", "b"],
        class_colors=default_class_colors(2),
        channel_names=["DNA"],
        tile_size=16,
        architecture="fast",
        normalization={"mode": "dataset", "low": [0.0], "high": [1.0]},
    )
    values.update(changes)
    return ModelMeta(**values)


def test_model_file_keeps_the_pixel_size_and_old_files_have_none(tmp_path):
    path = save_model(tmp_path / "m", build_model("fast", 1, 2, 16), meta(pixel_size=dict(TRAINED)))
    assert read_meta(path).pixel_size == TRAINED
    assert load_model(path)[1].pixel_size == TRAINED
    old = meta().to_dict()
    del old["pixel_size"]  # a file written before the field existed
    assert ModelMeta.from_dict(old).pixel_size is None


@pytest.mark.parametrize(
    "bad",
    [
        {"y": 0.5},
        {"y": -1.0, "x": 0.5, "unit": "µm"},
        {"y": float("nan"), "x": 0.5, "unit": None},
        {"y": 0.5, "x": 0.5, "unit": 3},
        [0.5, 0.5],
        "0.5 µm",
    ],
)
def test_invalid_pixel_size_is_refused(bad):
    values = meta().to_dict()
    values["pixel_size"] = bad
    with pytest.raises(ModelFileError, match="pixel_size"):
        ModelMeta.from_dict(json.loads(json.dumps(values, allow_nan=True)))


def test_warning_fires_above_the_factor_and_not_below():
    assert DEFAULT_FACTOR == 1.25
    assert pixel_size_warning((0.65, 0.65), "µm", TRAINED) is None
    assert pixel_size_warning((0.65 * 1.2, 0.65 * 1.2), "µm", TRAINED) is None  # 1.2x: within
    assert pixel_size_warning((0.65 / 1.2, 0.65), "µm", TRAINED) is None
    finer = pixel_size_warning((0.325, 0.325), "µm", TRAINED)  # 2x finer pixels
    assert finer and "0.325 µm" in finer and "0.65 µm" in finer and "2.0x larger" in finer
    coarser = pixel_size_warning((0.65, 1.0), "µm", TRAINED)  # one axis 1.54x
    assert coarser and "smaller" in coarser and "1.25x" in coarser
    assert pixel_size_warning((0.65 * 1.3,) * 2, "µm", TRAINED, factor=1.5) is None


def test_units_are_converted_and_unknowns_stay_silent():
    assert pixel_size_warning((650.0, 650.0), "nm", TRAINED) is None  # the same length
    assert "larger" in pixel_size_warning((100.0, 100.0), "nm", TRAINED)
    assert pixel_size_warning(None, None, TRAINED) is None  # field unknown
    assert pixel_size_warning((0.1, 0.1), "µm", None) is None  # model unknown
    assert pixel_size_warning((0.1, 0.1), "furlong", TRAINED) is None  # not comparable
    assert pixel_size_warning((2.0, 2.0), "px", {"y": 1.0, "x": 1.0, "unit": "px"})  # same odd unit
    with pytest.raises(ValueError):
        pixel_size_warning((0.1, 0.1), "µm", TRAINED, factor=0.5)


def test_training_pixel_size_from_files_read_by_io(tmp_path):
    images = []
    for n, size in enumerate((0.5, 0.5, 0.6)):
        path = tmp_path / f"f{n}.tif"
        tifffile.imwrite(
            path,
            np.arange(4, dtype=np.uint16).reshape(2, 2),
            imagej=True,
            resolution=(1 / size, 1 / size),
            metadata={"axes": "YX", "unit": "um"},
        )
        images.append(read_image(path))
    tifffile.imwrite(tmp_path / "plain.tif", np.arange(4, dtype=np.uint16).reshape(2, 2))
    images.append(read_image(tmp_path / "plain.tif"))  # no pixel size
    record = training_pixel_size(images)
    assert record["unit"] == "µm"
    assert record["y"] == pytest.approx(0.5) and record["x"] == pytest.approx(0.5)  # the median
    assert training_pixel_size(images[-1:]) is None
    paths = [i.path for i in images] + [images[0].path, "a napari layer name"]
    assert training_pixel_size_of_files(paths) == record
    assert pixel_size_record((0.0, 0.5), "µm") is None
