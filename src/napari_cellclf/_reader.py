"""npe2 reader: a thin wrapper over io.read_image.

Every image layer this plugin creates carries `metadata["cellclf"]` =
    {"source": <absolute path or sample name>, "field": <same id for all channels of one file>,
     "channel_index": i, "channel_name": name, "n_channels": C, "axes": "CYX"...,
     "pixel_size": [y, x] | None, "unit": "µm" | None}
plus `metadata["source_path"]` for humans. Multi-channel files open as one layer per channel
(channel_axis) so the widget can regroup them into a field by "field" and order them by
"channel_index". The sample-data functions use the same keys.

Extra keys beside the contract: "layer_axes" (axes of this layer's data, e.g. "ZYX"), "rgb",
"lazy" and "significant_bits".

The split into channels is done here rather than with napari's `channel_axis` keyword so that
each layer gets its own metadata dict; the layers are the same (a view per channel, additive
blending, one colormap each).
"""

from __future__ import annotations

import inspect
import os
from functools import lru_cache
from pathlib import Path

from . import io
from .channels import COLOR_CYCLE, NUCLEAR, channel_colormaps  # noqa: F401 (the reader's names)


def get_reader(path):
    """The reader function for one supported image file; None for anything else (napari then
    asks other plugins): other suffixes, folders, several files at once."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)):
        return None
    path = Path(path)
    if path.is_dir() or not io.is_supported(path):
        return None
    return read_layers


def read_layers(path) -> list[tuple]:
    """napari LayerData tuples for one file (or a one-element list). Unreadable files raise
    io.ImageReadError (a ValueError) with a one-line message naming the file."""
    if isinstance(path, (list, tuple)):
        return [layer for p in path for layer in read_layers(p)]
    image = io.read_image(path)
    return mask_layers(image) or image_layers(image)


def mask_layers(image: io.ImageData) -> list[tuple]:
    """`<stem>_objects.tif` (the CLI's instance masks beside `<stem>.tif`) as one Labels layer,
    ready to be chosen as a field's objects; [] for anything else (not that name, not a 2-D
    integer image: those open as images)."""
    import numpy as np

    from .objects import OBJECTS_SUFFIX

    if not display_stem(image.path).endswith(OBJECTS_SUFFIX) or image.rgb or image.axes != "YX":
        return []
    if not np.issubdtype(np.dtype(image.data.dtype), np.integer):
        return []
    source = str(Path(image.path).resolve())
    kwargs = {
        "name": display_stem(image.path),
        "metadata": {"source_path": source},
        **_geometry(image, "YX"),
    }
    return [(np.asarray(image.data), kwargs, "labels")]


def image_layers(image: io.ImageData, source: str | None = None) -> list[tuple]:
    """One image layer per channel (or one RGB layer) with scale, colormap, contrast limits and
    the `metadata["cellclf"]` keys of the contract."""
    source = source or str(Path(image.path).resolve())
    stem = display_stem(image.path)
    data, axes = image.data, image.axes
    if image.lazy and not _is_numpy(data):
        import dask.array as da  # napari needs dask to slice a zarr array per channel

        data = da.from_zarr(data)
    common = {
        "source": source,
        "field": source,
        "axes": image.axes,
        "pixel_size": list(image.pixel_size) if image.pixel_size else None,
        "unit": image.unit,
        "rgb": image.rgb,
        "lazy": image.lazy,
        "significant_bits": image.significant_bits,
    }

    if image.rgb:
        s = axes.index("S")
        data = _moveaxis(data, s, -1)
        layer_axes = axes.replace("S", "")
        meta = dict(common, channel_index=0, channel_name="RGB", n_channels=1, layer_axes=layer_axes)
        kwargs = {
            "name": stem,
            "rgb": True,
            "contrast_limits": io.contrast_limits(image),
            "metadata": {"cellclf": meta, "source_path": source},
            **_geometry(image, layer_axes),
        }
        return [(data, kwargs, "image")]

    axis = image.channel_axis
    n = 1 if axis is None else int(data.shape[axis])
    names = channel_names(image)
    colors = channel_colormaps(names, image.metadata.get("channel_colors"))
    layer_axes = axes if axis is None else axes[:axis] + axes[axis + 1 :]
    layers = []
    for i in range(n):
        channel_data = data if axis is None else data[(slice(None),) * axis + (i,)]
        meta = dict(common, channel_index=i, channel_name=names[i], n_channels=n, layer_axes=layer_axes)
        kwargs = {
            "name": stem if n == 1 else f"{stem} [{names[i]}]",
            "colormap": colors[i],
            "contrast_limits": io.contrast_limits(image, None if axis is None else i),
            "blending": "additive" if n > 1 else "translucent",
            "metadata": {"cellclf": meta, "source_path": source},
            **_geometry(image, layer_axes),
        }
        layers.append((channel_data, kwargs, "image"))
    return layers


def display_stem(path: str | Path) -> str:
    """File name without its image suffix (.ome.tif counts as one suffix)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def channel_names(image: io.ImageData) -> list[str]:
    """The file's channel names, else "ch0", "ch1", ... (the names io.to_cyx uses)."""
    axis = image.channel_axis
    n = 1 if axis is None else int(image.data.shape[axis])
    names = list(image.channel_names or [])
    return names if len(names) == n else [f"ch{i}" for i in range(n)]


def _geometry(image: io.ImageData, layer_axes: str) -> dict:
    """scale (one entry per non-channel dim) and axis labels where napari has them. No layer
    `units`: napari warns about "inconsistent units" as soon as any other layer (labels painted
    by the user, results) has none, so the unit lives in metadata["cellclf"]["unit"]."""
    scale = []
    for a in layer_axes:
        if image.pixel_size and a in "YX":
            scale.append(float(image.pixel_size["YX".index(a)]))
        elif image.pixel_size and a == "Z" and image.metadata.get("z_spacing"):
            scale.append(float(image.metadata["z_spacing"]))
        else:
            scale.append(1.0)
    out: dict = {"scale": tuple(scale)}
    if _napari_takes("axis_labels"):
        out["axis_labels"] = tuple(a.lower() for a in layer_axes)
    return out


@lru_cache(maxsize=None)
def _napari_takes(keyword: str) -> bool:
    """Older napari (< 0.6) has no axis_labels on layers: leave them out there."""
    try:
        from napari.layers import Image
    except ImportError:
        return False
    return keyword in inspect.signature(Image.__init__).parameters


def _is_numpy(data) -> bool:
    import numpy as np

    return isinstance(data, np.ndarray)


def _moveaxis(data, source: int, target: int):
    import numpy as np

    if _is_numpy(data):
        return np.moveaxis(data, source, target)
    import dask.array as da

    return da.moveaxis(data, source, target)
