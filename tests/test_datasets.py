"""datasets/: one count and one list of problems for every labelling source; folder layouts."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cellclf import datasets, synthetic
from napari_cellclf.datasets import (
    ClassFolders,
    PaintedLabels,
    TileSpec,
    WholeImage,
    build_dataset,
    count_tiles,
    detect_layout,
    field_stem,
    label_pairs,
    load_folder,
)

CLASSES = ["Control", "Aggregates"]


@pytest.fixture(scope="module")
def fields():
    return [
        synthetic.make_field(p, shape=(96, 128), seed=s, cell_radius=8.0)
        for s, p in ((1, "puncta"), (2, "diffuse"))
    ]


@pytest.mark.parametrize(
    "spec", [TileSpec(16), TileSpec(16, stride=8, min_fraction=0.3), TileSpec(24, foreground_channel=0)]
)
def test_the_count_shown_is_the_number_of_tiles_built(fields, spec):
    """Painted fields, whole fields and (foreground-only) whole fields: count_tiles per class equals
    the class counts of the dataset build_dataset makes from the same sources."""
    sources = [
        PaintedLabels("painted", fields[0].labels, fields[0].image),
        WholeImage("whole", 1, fields[1].image),
    ]
    counts = count_tiles(sources, spec, CLASSES)
    dataset = build_dataset(sources, spec, CLASSES, ["nuclei", "protein"])
    assert counts.per_class == list(dataset.class_counts().values())
    assert counts.total == len(dataset) > 0
    assert set(counts.per_source) == {"painted", "whole"}


@pytest.mark.parametrize(
    "spec", [TileSpec(16), TileSpec(16, stride=8, min_fraction=0.3), TileSpec(24, foreground_channel=0)]
)
def test_tiles_shown_labelled_are_the_tiles_built(fields, spec):
    """The widget outlines painted_tile_classes / whole_tile_classes: per tile, the same (position,
    class) set build_dataset cuts; split_positions is split_train_val's split, by position."""
    from napari_cellclf.data import split_train_val

    painted = PaintedLabels("painted", fields[0].labels, fields[0].image)
    whole = WholeImage("whole", 1, fields[1].image)
    dataset = build_dataset([painted, whole], spec, CLASSES, ["nuclei", "protein"])
    for group, (name, classes) in enumerate(
        (
            ("painted", datasets.painted_tile_classes(painted.labels, spec)),
            ("whole", datasets.whole_tile_classes(whole.image, spec, whole.image.shape[1:], 2)),
        )
    ):
        grid = spec.grid(fields[group].labels.shape)
        rows, cols = grid.row_col(np.flatnonzero(classes))
        shown = set(zip(rows.tolist(), cols.tolist(), (classes[classes > 0] - 1).tolist()))
        mine = dataset.groups == dataset.sources.index(name)
        built = {(int(r), int(c), int(k)) for (r, c), k in zip(dataset.positions[mine], dataset.labels[mine])}
        assert shown == built and built
    split = datasets.split_positions(dataset, 0.25, seed=3)
    _, val_idx = split_train_val(dataset, 0.25, seed=3)
    held_out = {(dataset.sources[dataset.groups[i]], tuple(dataset.positions[i].tolist())) for i in val_idx}
    assert {(n, p) for n, parts in split.items() for p in parts["validation"]} == held_out


def test_class_folders_count_and_build_alike(tmp_path, fields):
    for name, fld in zip(CLASSES, fields):
        (tmp_path / name).mkdir()
        for k in range(3):
            tifffile.imwrite(
                tmp_path / name / f"{k}.tif",
                fld.image[:, :32, 32 * k : 32 * k + 32],
                imagej=True,
                metadata={"axes": "CYX"},
            )
    source = ClassFolders.read(tmp_path, 16, mode="tile")
    spec = TileSpec(16)
    assert count_tiles([source], spec, CLASSES).per_class == [12, 12]
    assert len(build_dataset([source], spec, CLASSES, ["a", "b"])) == 24
    assert len(source.at(32, ()).dataset) == 6  # re-read at another tile size


def test_problems_are_the_engine_rule(fields):
    spec = TileSpec(16)
    one_class = count_tiles([WholeImage("w", 0, fields[0].image)], spec, CLASSES)
    messages = datasets.problem_messages(one_class, CLASSES)
    assert any("Only one class" in m for m in messages)
    assert all(p.blocking for p in datasets.problems(one_class, CLASSES))
    few = datasets.TileCounts(per_class=[3, 40])
    assert [p.blocking for p in datasets.problems(few, CLASSES)] == [False]


def test_a_field_smaller_than_a_tile_is_a_note_not_an_error():
    counts = count_tiles([WholeImage("tiny", 0, np.zeros((1, 8, 8), np.float32))], TileSpec(16), CLASSES)
    assert counts.total == 0 and "tiny" in counts.notes[0]


def test_ome_tif_pairs_with_its_labels(tmp_path, fields):
    """<stem>.ome.tif pairs with <stem>_labels.tif (issue 12): the stem drops the whole suffix."""
    assert field_stem(tmp_path / "A01.ome.tif") == "A01"
    assert field_stem(tmp_path / "A01_labels.tif") == "A01_labels"
    tifffile.imwrite(tmp_path / "A01.ome.tif", fields[0].image, ome=True, metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "A01_labels.tif", fields[0].labels.astype(np.uint8))
    assert detect_layout(tmp_path) == "labels"
    assert [(i.name, lab.name) for i, lab in label_pairs(tmp_path)] == [("A01.ome.tif", "A01_labels.tif")]
    notes = []
    dataset = load_folder(tmp_path, "labels", TileSpec(16), class_names=CLASSES, note=notes.append)
    assert len(dataset) > 0 and dataset.class_names == CLASSES


def test_layout_errors_name_the_folder(tmp_path):
    with pytest.raises(datasets.DatasetError, match="empty folder"):
        detect_layout(tmp_path)
    tifffile.imwrite(tmp_path / "x_labels.tif", np.ones((8, 8), np.uint8))
    with pytest.raises(datasets.DatasetError, match="without its image"):
        label_pairs(tmp_path)
