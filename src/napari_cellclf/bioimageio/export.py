"""`export_bioimageio`: a cellclf model file -> a bioimage.io 0.5 model package (folder or .zip)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from .common import (
    ARCHITECTURE_FILE,
    CELLCLF_FILE,
    COVER_FILE,
    DEFAULT_LICENSE,
    INPUT_ID,
    OUTPUT_ID,
    RDF_NAME,
    README_FILE,
    SAMPLE_INPUT_FILE,
    SAMPLE_OUTPUT_FILE,
    TEST_INPUT_FILE,
    TEST_OUTPUT_FILE,
    WEIGHTS_FILE,
    WRAPPER_CALLABLE,
    BioimageioError,
    ExportResult,
    _resource_name,
    _sha256,
    channel_ids,
)
from .rdf import (
    _architecture_text,
    _cellclf_config,
    _limitations,
    _preprocessing,
    _readme,
    _space_axes,
    _training_details,
    _trust_summary,
    _write_cover,
)
from .weights import (
    _check_wrapper,
    _wrapped_state_dict,
    architecture_kwargs,
    architecture_source,
    classifier_probabilities,
    sample_tiles,
)


def export_refusal(meta) -> str | None:
    """Why the model of `meta` cannot become a bioimage.io package (None: it can); asked by
    `export_bioimageio` and, before it reads a sample field, by `cellclf export`."""
    from ..model import ARCHITECTURES
    from ..objects import MASK_CHANNEL_NAME, model_settings

    if meta.architecture not in ARCHITECTURES:
        return (
            f"a '{meta.architecture}' model cannot be exported to "
            f"bioimage.io (only the CNNs: {', '.join(ARCHITECTURES)})"
        )
    if model_settings(meta)["mask_channel"]:
        # The package's input is raw image tiles with per-channel preprocessing; a channel cut
        # from an instance mask, one cell at a time, is not something its spec can describe.
        return (
            f"this model reads each cell's mask as an extra channel ('{MASK_CHANNEL_NAME}'), "
            "which a bioimage.io package's input (raw image tiles) cannot describe; it cannot "
            "be exported"
        )
    return None


def export_bioimageio(
    model_path: str | Path,
    out: str | Path,
    *,
    field_cyx: np.ndarray | None = None,
    name: str | None = None,
    authors: list[str] | None = None,
    license: str = DEFAULT_LICENSE,
    description: str | None = None,
    github_user: str | None = None,
    validate: bool = True,
) -> ExportResult:
    """Write a bioimage.io 0.5 model package for the cellclf model file `model_path` to `out`
    (a folder, made if missing and then empty; or a path ending in .zip).

    `field_cyx`: a raw (C, Y, X) field whose foreground tiles become the test input and cover.
    `authors`: names (default "napari-cellclf user"); `license`: an SPDX id; `github_user`: the
    maintainer, which bioimage.io wants before an upload.
    The package description is validated by bioimageio.spec while it is built (`validate`
    additionally loads the written package back). BioimageioError for anything unrepresentable;
    ImportError naming the extra when bioimageio.spec is missing."""
    try:
        import importlib

        from bioimageio.spec import (
            ValidationContext,
            save_bioimageio_package,
            save_bioimageio_package_as_folder,
        )

        # Any: pydantic validates and coerces each field at run time (str -> Sha256, Path, ...).
        v0_5: Any = importlib.import_module("bioimageio.spec.model.v0_5")
    except ImportError as exc:
        raise ImportError(
            "bioimage.io export needs bioimageio.spec and bioimageio.core: "
            "pip install 'napari-cellclf[bioimageio]'"
        ) from exc
    from .. import __version__
    from ..modelfile import load_model

    model_path = Path(model_path).expanduser()
    out = Path(out).expanduser()
    as_zip = out.suffix.lower() == ".zip"
    if as_zip and out.is_dir():
        raise BioimageioError(f"{out} is a folder; a .zip output must be a file path")
    if as_zip:
        from .._files import check_output_path

        check_output_path(out, inputs=[model_path])
    if not as_zip and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BioimageioError(f"{out} exists and is not an empty folder; choose a new folder or a .zip")
    if not (out.parent.is_dir()):
        raise BioimageioError(f"folder {out.parent} does not exist")
    model, meta = load_model(model_path, device="cpu")
    model.eval()
    refusal = export_refusal(meta)
    if refusal:
        raise BioimageioError(f"{model_path}: {refusal}")

    tiles = sample_tiles(meta, field_cyx)
    probabilities = classifier_probabilities(model, meta, tiles)
    class_ids = channel_ids(meta.class_names)
    input_channel_ids = channel_ids(meta.channel_names, prefix="channel")

    with tempfile.TemporaryDirectory(prefix="cellclf-bioimageio-") as tmp:
        stage = Path(tmp)
        shutil.copyfile(model_path, stage / CELLCLF_FILE)
        (stage / ARCHITECTURE_FILE).write_text(architecture_source(), encoding="utf-8")
        state, wrapper = _wrapped_state_dict(model_path, meta, stage / ARCHITECTURE_FILE)
        torch.save(state, stage / WEIGHTS_FILE)
        _check_wrapper(wrapper, meta, tiles, probabilities)
        np.save(stage / TEST_INPUT_FILE, tiles)
        np.save(stage / TEST_OUTPUT_FILE, probabilities)
        tifffile.imwrite(stage / SAMPLE_INPUT_FILE, tiles[0])
        tifffile.imwrite(stage / SAMPLE_OUTPUT_FILE, probabilities[:1])
        _write_cover(stage / COVER_FILE, tiles, probabilities, meta)
        preprocessing, notes = _preprocessing(meta, v0_5)
        trust = _trust_summary(meta)
        title = _resource_name(name or f"cellclf {' vs '.join(meta.class_names)}")
        text = description or (
            f"Classifies {meta.tile_size} px tiles of fluorescence microscopy "
            f"({', '.join(meta.channel_names)}) into "
            f"{', '.join(meta.class_names)}; trained with napari-cellclf."
        )
        (stage / README_FILE).write_text(
            _readme(meta, title, text, trust, notes, class_ids), encoding="utf-8"
        )

        with ValidationContext(root=stage, file_name=RDF_NAME, perform_io_checks=True):
            try:
                descr = v0_5.ModelDescr(
                    name=title,
                    description=text[:1024],
                    authors=[v0_5.Author(name=a) for a in (authors or ["napari-cellclf user"])],
                    cite=[
                        v0_5.CiteEntry(
                            text="napari: a multi-dimensional image viewer for Python "
                            "(napari-cellclf is a napari plugin)",
                            url="https://napari.org",
                        )
                    ],
                    license=license,
                    maintainers=[v0_5.Maintainer(github_user=github_user)] if github_user else [],
                    documentation=v0_5.FileDescr(source=README_FILE),
                    covers=[v0_5.FileDescr(source=COVER_FILE)],
                    tags=[
                        "classification",
                        "fluorescence-light-microscopy",
                        "2d",
                        "pytorch",
                        "napari-cellclf",
                        "cells",
                    ],
                    attachments=[v0_5.FileDescr(source=CELLCLF_FILE, sha256=_sha256(stage / CELLCLF_FILE))],
                    inputs=[
                        v0_5.InputTensorDescr(
                            id=v0_5.TensorId(INPUT_ID),
                            description=f"raw tiles, channels {', '.join(meta.channel_names)}",
                            axes=[
                                v0_5.BatchAxis(),
                                v0_5.ChannelAxis(channel_names=input_channel_ids),
                                *_space_axes(meta, v0_5),
                            ],
                            test_tensor=v0_5.FileDescr(source=TEST_INPUT_FILE),
                            sample_tensor=v0_5.FileDescr(source=SAMPLE_INPUT_FILE),
                            data=v0_5.IntervalOrRatioDataDescr(type="float32"),
                            preprocessing=preprocessing,
                        )
                    ],
                    outputs=[
                        v0_5.OutputTensorDescr(
                            id=v0_5.TensorId(OUTPUT_ID),
                            description="per-class probabilities (softmax); classes: "
                            + ", ".join(meta.class_names)[:80],
                            axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=class_ids)],
                            test_tensor=v0_5.FileDescr(source=TEST_OUTPUT_FILE),
                            sample_tensor=v0_5.FileDescr(source=SAMPLE_OUTPUT_FILE),
                            data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                        )
                    ],
                    weights=v0_5.WeightsDescr(
                        pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
                            source=WEIGHTS_FILE,
                            sha256=_sha256(stage / WEIGHTS_FILE),
                            architecture=v0_5.ArchitectureFromFileDescr(
                                source=ARCHITECTURE_FILE,
                                sha256=_sha256(stage / ARCHITECTURE_FILE),
                                callable=WRAPPER_CALLABLE,
                                kwargs=architecture_kwargs(meta),
                            ),
                            pytorch_version=torch.__version__.split("+")[0],
                        )
                    ),
                    config=v0_5.Config(
                        bioimageio=v0_5.BioimageioConfig(
                            architecture_type="CNN classifier",
                            architecture_description=_architecture_text(meta),
                            modality="fluorescence microscopy",
                            task="classification",
                            model_parameter_count=int(sum(p.numel() for p in model.parameters())),
                            training=_training_details(meta, v0_5),
                            bias_risks_limitations=v0_5.BiasRisksLimitations(
                                limitations=_limitations(meta, notes)
                            ),
                            cellclf_trust=trust,
                        ),
                        cellclf=_cellclf_config(meta) | {"exported_by": f"napari-cellclf {__version__}"},
                    ),
                )
            except Exception as exc:  # pydantic.ValidationError: say what did not fit
                raise BioimageioError(f"the model cannot be described for bioimage.io: {exc}") from exc
            if as_zip:
                written = Path(save_bioimageio_package(descr, output_path=out))
            else:
                written = Path(save_bioimageio_package_as_folder(descr, output_path=out))
    if validate:
        from bioimageio.spec import load_model_description

        loaded = load_model_description(written / RDF_NAME if not as_zip else written, perform_io_checks=True)
        if (
            getattr(loaded, "validation_summary", None) is not None
            and loaded.validation_summary.status == "failed"
        ):
            raise BioimageioError(
                f"the written package does not validate: {loaded.validation_summary.format()}"
            )
    return ExportResult(path=written, probabilities=probabilities, test_input=tiles, notes=notes)
