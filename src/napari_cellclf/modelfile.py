"""One shareable model file: safetensors weights + JSON metadata, atomic, never unpickled.

CONTRACT (stub by the lead; the modelfile owner implements it):
- The file is a single `.safetensors` file; the JSON metadata lives in the safetensors header
  (`__metadata__["cellclf"]`). Loading validates the header, the metadata schema and every tensor
  shape against the architecture rebuilt from the metadata; anything else (a pickle, a truncated
  or tampered file) raises ModelFileError naming the file. Nothing is ever unpickled.
- Saving writes a temporary file in the same folder, fsyncs, then os.replace()s it: a full disk or
  a crash never leaves a half-written model under the real name (and never deletes the old one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

FORMAT_VERSION = 1
SUFFIX = ".safetensors"


class ModelFileError(ValueError):
    """The file is not a valid napari-cellclf model; the message names the file and why."""


@dataclass
class ModelMeta:
    class_names: list[str]
    class_colors: list[str]            # "#rrggbb", one per class
    channel_names: list[str]           # channels the model was trained on, in order
    tile_size: int
    architecture: str                  # model.ARCHITECTURES
    normalization: dict                # data.Normalization.to_dict()
    channel_indices: list[int] | None = None   # indices into the source image, when known
    history: dict = field(default_factory=dict)   # training.History as dict (per-run curves, summary, warnings)
    seed: int | None = None
    package_version: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int: ...

    @property
    def in_channels(self) -> int: ...

    def to_dict(self) -> dict: ...

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMeta":
        """Validate types/lengths; ModelFileError on anything missing or inconsistent."""
        raise NotImplementedError


def default_class_colors(n: int) -> list[str]:
    """Distinct, colour-blind-friendly hex colours (Okabe-Ito first)."""
    raise NotImplementedError


def save_model(path: str | Path, model: nn.Module, meta: ModelMeta) -> Path:
    """Atomic write; adds the suffix if missing; returns the final path."""
    raise NotImplementedError


def load_model(path: str | Path, device: str = "cpu") -> tuple[nn.Module, ModelMeta]:
    """Model in eval mode on `device`, and its metadata. ModelFileError on any invalid file."""
    raise NotImplementedError
