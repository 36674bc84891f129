"""bioimageio.core on a written package: its own test (`bioimageio test`) and its prediction,
to compare with ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .common import INPUT_ID, OUTPUT_ID


def run_bioimageio_test(package: str | Path):
    """bioimageio.core's own test of the package (the `bioimageio test` command): returns its
    ValidationSummary (`.status` is "passed" when the package runs and reproduces its test output)."""
    from bioimageio.core import test_model

    return test_model(str(package))


def predict_with_bioimageio(package: str | Path, tiles: np.ndarray) -> np.ndarray:
    """(N, K) probabilities that bioimageio.core computes for raw (N, C, T, T) tiles."""
    from bioimageio.core import create_prediction_pipeline, load_model_description
    from bioimageio.core.digest_spec import create_sample_for_model

    descr = load_model_description(str(package))
    pipeline = create_prediction_pipeline(descr, devices=["cpu"])
    sample = create_sample_for_model(descr, inputs={INPUT_ID: np.asarray(tiles, dtype=np.float32)})
    members: Any = pipeline.predict_sample_without_blocking(sample).members
    return np.asarray(members[OUTPUT_ID].data, dtype=np.float32)
