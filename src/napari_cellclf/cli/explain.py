"""`cellclf explain MODEL IMAGE --out TIFF`: gradient x input attribution map of a field."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    CLIError,
    add_field_reading,
    add_stride,
    check_output,
    drive,
    load_classifier,
    model_channels,
    note_pixel_size,
    open_lazy,
    out,
    parse_channels,
    parse_plane,
    progress,
    read_field,
)

NAME = "explain"


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(NAME, help="gradient x input attribution map of a field, as a float32 TIFF")
    parser.add_argument("model", metavar="MODEL", help="model file (.safetensors)")
    parser.add_argument("image", metavar="IMAGE", help="image to explain")
    parser.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="TIFF",
        help="attribution map to write (ImageJ float32 TIFF, same height/width)",
    )
    parser.add_argument(
        "--target",
        metavar="CLASS",
        help="class name or label value 1..K (default: each tile's predicted class)",
    )
    add_stride(parser)
    parser.add_argument(
        "--smoothgrad",
        action="store_true",
        help="SmoothGrad: gradient x input averaged over 16 noisy copies of each tile (less "
        "speckled maps, 16x the time)",
    )
    add_field_reading(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args) -> int:
    import numpy as np

    from .. import attribution

    check_output(args.out, [args.model, args.image])  # before any work
    classifier, meta = load_classifier(Path(args.model), args.device, args.precision)
    image_path = Path(args.image)
    target = target_index(args.target, list(meta.class_names))
    method = "smoothgrad" if args.smoothgrad else "gradient_x_input"
    what = "the predicted class of each tile" if target is None else f"class {meta.class_names[target]}"
    label = "SmoothGrad (gradient x input)" if args.smoothgrad else "gradient x input"
    path = Path(args.out)
    lazy = open_lazy(image_path, meta)
    if lazy is not None:  # too big to hold whole: band by band into a tiled BigTIFF
        stats = _explain_streaming(args, classifier, meta, lazy, image_path, path, target, method)
        height, width = stats["shape"]
        out(
            f"{label} for {what}: {height}x{width} float32 (range {stats['min']:.3g} .. "
            f"{stats['max']:.3g}) written band by band to {path} (tiled, compressed BigTIFF)"
        )
        return 0
    image, cyx, names = read_field(image_path, parse_plane(args.plane))
    note_pixel_size(image, meta, image_path)
    cyx = cyx[model_channels(meta, names, parse_channels(args.channels), image_path)]
    attributions = drive(
        attribution.explain_field(classifier, cyx, target=target, stride=args.stride, method=method),
        f"explaining {image_path.name}",
    )
    attributions = np.ascontiguousarray(attributions, dtype=np.float32)
    write_float_tiff(path, attributions, image.pixel_size, image.unit)
    out(
        f"{label} for {what}: {attributions.shape[-2]}x{attributions.shape[-1]} float32 "
        f"(range {float(attributions.min()):.3g} .. {float(attributions.max()):.3g}) written to {path}"
    )
    return 0


def _explain_streaming(args, classifier, meta, lazy, image_path, path, target, method) -> dict:
    from .. import streaming
    from ..pixelsize import in_micrometres, pixel_size_record

    image_lazy, image = lazy
    with image_lazy:
        channels = model_channels(meta, image_lazy.channel_names, parse_channels(args.channels), image_path)
    pixel_size = in_micrometres(pixel_size_record(image.pixel_size, image.unit))
    bar = None

    def show(event) -> None:
        nonlocal bar
        if bar is None:
            bar = progress(event.total, f"explaining {image_path.name}", unit="tile")
        bar.total = event.total
        bar.n = event.done
        bar.refresh()

    try:
        return streaming.explain_file_streaming(
            classifier,
            image_path,
            path,
            target=target,
            stride=args.stride,
            channels=channels,
            method=method,
            on_progress=show,
            pixel_size=pixel_size,
        )
    finally:
        if bar is not None:
            bar.close()


def target_index(target: str | None, class_names: list[str]) -> int | None:
    """--target: a class name, or its label value 1..K; None = each tile's predicted class."""
    if target is None:
        return None
    if target in class_names:
        return class_names.index(target)
    if target.isdigit() and 1 <= int(target) <= len(class_names):
        return int(target) - 1
    raise CLIError(
        f"--target {target}: unknown class; the model knows: "
        + ", ".join(f"{i} {name}" for i, name in enumerate(class_names, start=1))
    )


def write_float_tiff(path: Path, array, pixel_size, unit) -> None:
    """ImageJ-compatible float32 TIFF, with the input's pixel size when it has one."""
    from io import BytesIO

    import tifffile

    from .._files import atomic_write

    kwargs: dict = {"imagej": True, "metadata": {"axes": "YX" if array.ndim == 2 else "CYX"}}
    if pixel_size:
        kwargs["resolution"] = (1.0 / pixel_size[1], 1.0 / pixel_size[0])
        kwargs["metadata"]["unit"] = imagej_unit(unit)
    encoded = BytesIO()  # tifffile needs a named file or a buffer, not a bare fd
    tifffile.imwrite(encoded, array, **kwargs)
    atomic_write(path, lambda handle: handle.write(encoded.getbuffer()))


def imagej_unit(unit: str | None) -> str:
    """The ImageJ description is ASCII: microns are spelt "micron" (ImageJ shows µm), any other
    non-ASCII unit with the \\uXXXX escapes ImageJ itself writes."""
    if not unit:
        return "pixel"
    if unit in ("µm", "μm", "um", "micron", "microns"):
        return "micron"
    return unit.encode("ascii", "backslashreplace").decode("ascii").replace("\\x", "\\u00")
