"""Labelled data as a folder on disk, in one of two layouts (detected, never guessed silently):

  class folders   DATA/<class name>/<image>: every image (or every tile of it) is its folder's class.
  label images    DATA/<stem>.tif beside DATA/<stem>_labels.tif: a label image of the same height
                  and width, 0 = unlabelled, value k = class k. `<stem>` is the file name without
                  its image suffix, `.ome` included (`A01.ome.tif` pairs with `A01_labels.tif`).
  objects         as label images, plus DATA/<stem>_objects.tif beside each: an instance mask (0 =
                  background, each id one cell); each cell is one tile centred on it, of the class
                  painted on most of it (`objects.py`).

Errors are `DatasetError` (a ValueError) with a user-facing message naming the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal, Sequence, get_args

import numpy as np

from .. import data, io
from ..data import TileDataset
from ..objects import OBJECTS_SUFFIX, check_masks
from .checks import channel_problems
from .sources import InstanceObjects, PaintedLabels, TileSpec, _objects_dataset, _painted_dataset

Layout = Literal["folders", "labels", "objects"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
LABELS_SUFFIX = "_labels"  # <stem>.tif is annotated by <stem>_labels.tif
_IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg")

Note = Callable[[str], None]
Progress = Callable[[int, int], None]  # (done, total)


class DatasetError(ValueError):
    """A user-facing problem with labelled data on disk."""


def field_stem(path: Path) -> str:
    """The file name without its image suffix: "A01.ome.tif" -> "A01", "A01_labels.tif" -> "A01_labels"."""
    name = Path(path).name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _is_label_image(path: Path) -> bool:
    return field_stem(path).endswith(LABELS_SUFFIX)


def _is_objects_image(path: Path) -> bool:
    return field_stem(path).endswith(OBJECTS_SUFFIX)


def objects_path(image_path: Path) -> Path | None:
    """The `<stem>_objects.<suffix>` instance mask beside an image, if there is one."""
    image_path = Path(image_path)
    stem = field_stem(image_path) + OBJECTS_SUFFIX
    for path in io.list_images(image_path.parent):
        if field_stem(path) == stem:
            return path
    return None


def subfolders(root: Path) -> list[Path]:
    return sorted(d for d in Path(root).iterdir() if d.is_dir() and not io.is_ignored(d))


def class_folder_names(root: str | Path) -> list[str]:
    """The classes a class-folder import can offer: subfolders with images in them, sorted."""
    return [d.name for d in subfolders(Path(root)) if io.list_images(d)]


def detect_layout(root: Path) -> Layout:
    """ "folders" (DATA/<class>/<image>) or "labels" (<stem> + <stem>_labels images)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (labelled data must be a folder)")
    class_dirs = [d for d in subfolders(root) if io.list_images(d)]
    loose = io.list_images(root)
    has_labels = any(_is_label_image(p) for p in loose)
    if class_dirs and has_labels:
        raise DatasetError(
            f"{root}: holds both class subfolders ({', '.join(d.name for d in class_dirs)}) "
            f"and *{LABELS_SUFFIX} images; use one layout per folder"
        )
    if class_dirs:
        return "folders"
    if has_labels:
        return "objects" if any(_is_objects_image(p) for p in loose) else "labels"
    if loose:
        raise DatasetError(
            f"{root}: {len(loose)} image(s) but no <stem>{LABELS_SUFFIX} label images "
            "and no class subfolders (the two layouts: DATA/<class>/<image>, or "
            f"<stem>.tif beside <stem>{LABELS_SUFFIX}.tif)"
        )
    raise DatasetError(
        f"{root}: empty folder: no class subfolders with images and no images "
        "(the two layouts: DATA/<class>/<image>, or <stem>.tif beside "
        f"<stem>{LABELS_SUFFIX}.tif)"
    )


def label_pairs(root: Path, note: Note | None = None) -> list[tuple[Path, Path]]:
    """(image, label image) pairs of the label-image layout; a label image without its image is
    an error; images without labels are skipped (and `note`d)."""
    root = Path(root)
    files = io.list_images(root)
    images = {field_stem(p): p for p in files if not _is_label_image(p) and not _is_objects_image(p)}
    pairs = []
    for label_path in (p for p in files if _is_label_image(p)):
        stem = field_stem(label_path)[: -len(LABELS_SUFFIX)]
        if stem not in images:
            raise DatasetError(f"{label_path}: label image without its image {stem}.<tif|png|...> in {root}")
        pairs.append((images.pop(stem), label_path))
    if images and note is not None:
        note(
            f"{len(images)} image(s) without a {LABELS_SUFFIX} file skipped: "
            + ", ".join(sorted(p.name for p in images.values())[:5])
            + (" ..." if len(images) > 5 else "")
        )
    return sorted(pairs)


def read_label_image(path: Path) -> np.ndarray:
    """A (Y, X) int64 label image; DatasetError for other shapes, fractions or negative values."""
    array = np.squeeze(np.asarray(io.read_image(path).data))
    if array.ndim != 2:
        raise DatasetError(f"{path}: a label image must be 2-D (Y, X); got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer) and not np.all(np.mod(array, 1) == 0):
        raise DatasetError(
            f"{path}: a label image must hold whole numbers (got {array.dtype} values with fractions)"
        )
    if array.size and array.min() < 0:
        raise DatasetError(f"{path}: label values must be >= 0 (0 = unlabelled, k = class k)")
    array = array.astype(np.int64)
    try:  # an instance mask, or a stray value such as 60000: refused now, in a short message
        data.check_label_values(array, str(path))
    except ValueError as error:
        raise DatasetError(str(error)) from None
    return array


def probe_image(root: Path, layout: Layout) -> Path:
    """The first image of the folder (to resolve channel names into indices)."""
    if layout in ("labels", "objects"):
        return label_pairs(root)[0][0]
    for folder in subfolders(root):
        images = io.list_images(folder)
        if images:
            return images[0]
    raise DatasetError(f"{root}: no images found")


def load_folder(
    root: Path,
    layout: Layout,
    spec: TileSpec,
    *,
    mode: str = "resize",
    channels: Sequence[int | str] | None = None,
    class_names: Sequence[str] | None = None,
    known_classes: bool = False,
    note: Note | None = None,
    progress: Progress | None = None,
    plane: dict[str, int] | None = None,
    blank_background: bool = False,
    mask_channel: bool = False,
) -> TileDataset:
    """A TileDataset from either layout. `known_classes`: `class_names` are a model's (every class
    found must be one of them; label values above K are errors). Without class names, label values
    1..K are named "class 1" .. "class K" (and `note`d). `blank_background` and `mask_channel`
    (objects layout only): how each cell's tile is cut (objects.object_tiles)."""
    root = Path(root)
    if layout == "folders":
        if known_classes:
            known = list(class_names or [])
            for folder in subfolders(root):
                if io.list_images(folder) and folder.name not in known:
                    raise DatasetError(
                        f"unknown class '{folder.name}' ({folder}); the model knows: " + ", ".join(known)
                    )
        return data.from_class_folders(
            root,
            spec.tile_size,
            mode=mode,
            channels=channels,
            stride=spec.stride,
            class_names=class_names,
            plane=plane,
        )

    pairs = label_pairs(root, note=note)
    sources: list = []
    channel_names: list[str] | None = None
    top_label = 0
    for done, (image_path, label_path) in enumerate(pairs, start=1):
        if not image_path.is_file():
            raise DatasetError(f"{image_path}: no such file")
        cyx, names = io.to_cyx(io.read_image(image_path), channels, plane=plane)
        labels = read_label_image(label_path)
        if labels.shape != cyx.shape[1:]:
            raise DatasetError(
                f"{label_path}: label image is {labels.shape[0]}x{labels.shape[1]} "
                f"but {image_path.name} is {cyx.shape[1]}x{cyx.shape[2]}"
            )
        if channel_names is not None:
            for problem in channel_problems([(str(pairs[0][0]), channel_names), (str(image_path), names)]):
                raise DatasetError(problem.message)
        channel_names = channel_names or names
        top_label = max(top_label, int(labels.max(initial=0)))
        if layout == "objects":
            mask_path = objects_path(image_path)
            if mask_path is None:
                raise DatasetError(
                    f"{image_path}: no {field_stem(image_path)}{OBJECTS_SUFFIX}.tif instance mask "
                    f"beside it (in {root} every labelled image needs one, or none does)"
                )
            try:
                masks = check_masks(io.read_image(mask_path).data, cyx.shape[1:], str(mask_path))
            except ValueError as error:
                raise DatasetError(str(error)) from None
            sources.append(
                InstanceObjects(str(image_path), masks, labels, cyx, blank_background, mask_channel)
            )
        else:
            sources.append(PaintedLabels(str(image_path), labels, cyx))
        if progress is not None:
            progress(done, len(pairs))
    if top_label == 0:
        raise DatasetError(f"{root}: the label images are empty (all 0 = unlabelled)")
    if class_names is None:
        class_names = [f"class {k}" for k in range(1, top_label + 1)]
        if note is not None:
            note(
                f"no class names given; naming label values 1..{top_label} "
                + data.short_list(repr(n) for n in class_names)
            )
    elif top_label > len(class_names):
        who = "the model knows" if known_classes else "the class names given are"
        raise DatasetError(
            f"label value {top_label} in {root} has no class: {who} only "
            f"{len(class_names)} ({data.short_list(class_names)}) for label values "
            f"1..{len(class_names)}"
        )
    if layout == "objects":
        return _objects_dataset(sources, spec, class_names, channel_names or [])
    return _painted_dataset(sources, spec, class_names, channel_names or [])
