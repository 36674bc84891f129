"""Shared test fixtures. Real data lives in ../shared/data beside the repo; tests skip without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (real-data tests run where it is present)")
    return SHARED_DATA


# The engine tests compare against fp32 references at 1e-5; on a CPU with native bf16 the
# Classifier's "auto" precision would pick bf16 (probabilities within 0.02). Pin fp32 for the
# suite (subprocesses inherit it); tests/test_precision.py tests the automatic choice itself.
os.environ.setdefault("CELLCLF_PRECISION", "fp32")
