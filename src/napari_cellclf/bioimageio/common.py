"""What every part of the bioimage.io package code shares: file and tensor names, the error,
the export result, bioimage.io-valid ids and names, sha256."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RDF_NAME = "rdf.yaml"
ARCHITECTURE_FILE = "cellclf_architecture.py"
WRAPPER_CALLABLE = "CellclfProbabilities"
WEIGHTS_FILE = "weights.pt"
CELLCLF_FILE = "cellclf_model.safetensors"
TEST_INPUT_FILE = "test_input.npy"
TEST_OUTPUT_FILE = "test_output.npy"
SAMPLE_INPUT_FILE = "sample_input.tif"  # for people (and imageio): the first test tile
SAMPLE_OUTPUT_FILE = "sample_output.tif"
COVER_FILE = "cover.png"
README_FILE = "README.md"
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
DEFAULT_LICENSE = "CC-BY-4.0"
N_TEST_TILES = 4


class BioimageioError(ValueError):
    """A package cannot be written or read; the message says which and why."""


@dataclass
class ExportResult:
    path: Path  # the folder or .zip written
    probabilities: np.ndarray  # our Classifier's output on the test input (= test output)
    test_input: np.ndarray
    notes: list[str] = field(default_factory=list)  # what the package could not carry exactly


def channel_ids(names: list[str], prefix: str = "class") -> list[str]:
    """Unique lower-case Python identifiers for `names` (accents dropped, other characters -> _),
    as bioimage.io asks of ids: "Mitotic cell" -> "mitotic_cell", "2n" -> "class_2n"."""
    out: list[str] = []
    for name in names:
        text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
        text = re.sub(r"[^0-9a-zA-Z_]+", "_", text).strip("_").lower()
        if not text or not text.isidentifier():
            text = f"{prefix}_{text}" if text else prefix
        candidate, n = text, 2
        while candidate in out:
            candidate, n = f"{text}_{n}", n + 1
        out.append(candidate)
    return out


def _resource_name(text: str) -> str:
    """bioimage.io names allow letters, digits, '_+- ()'."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^0-9A-Za-z_+\- ()]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()[:128] or "napari-cellclf classifier"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
