"""Per-tile class probabilities over whole fields, batched. No Qt.

CONTRACT (stub by the lead; the inference owner implements it):
- A `Classifier` wraps (model, meta) once: device, channels_last, eval, inference_mode, batch size
  sized to memory; CLI, widget and benchmark all use it, so the speed measured is the speed users get.
- `predict_field` is a generator (progress per batch, cancellable via `stop`) whose return value is
  a FieldPrediction; `predict_field_sync` runs it to the end.
- Input is a raw (C, Y, X) field with exactly the model's channels (else ValueError saying how many
  the model expects); normalisation from the model metadata is applied here.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Generator

import numpy as np
from torch import nn

from .modelfile import ModelMeta
from .tiling import TileGrid


@dataclass
class InferenceProgress:
    done: int          # tiles done
    total: int
    stage: str = "classify"   # "classify" | "explain"


@dataclass
class FieldPrediction:
    grid: TileGrid
    indices: np.ndarray         # (N,) tile indices into grid that were classified (foreground)
    probabilities: np.ndarray   # (N, K) float32
    class_names: list[str]

    @property
    def predicted(self) -> np.ndarray:    # (N,) int 0..K-1
        raise NotImplementedError

    @property
    def confidence(self) -> np.ndarray:   # (N,) float max probability
        raise NotImplementedError

    def class_map(self) -> np.ndarray:
        """(H, W) uint8/uint16 label image: class k -> k+1, unclassified pixels 0."""
        raise NotImplementedError

    def confidence_map(self) -> np.ndarray:
        """(H, W) float32 confidence of each pixel's tile; 0 where unclassified."""
        raise NotImplementedError

    def table(self) -> dict[str, np.ndarray]:
        """Columns, one row per classified tile: index, row, col, y, x, class (1-based label value),
        class_name, confidence, p_<class name> per class. Usable as napari Labels `features`
        (pandas.DataFrame(table)) and as CSV rows."""
        raise NotImplementedError


class Classifier:
    def __init__(self, model: nn.Module, meta: ModelMeta, device: str = "auto",
                 batch_size: int | None = None):
        raise NotImplementedError

    @classmethod
    def from_file(cls, path, device: str = "auto", batch_size: int | None = None) -> "Classifier":
        raise NotImplementedError

    def predict_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """(N, C, T, T) raw tiles -> (N, K) probabilities (normalisation applied)."""
        raise NotImplementedError

    def predict_field(self, image_cyx: np.ndarray, stride: int | None = None,
                      foreground_only: bool = False, stop: threading.Event | None = None
                      ) -> Generator[InferenceProgress, None, FieldPrediction]:
        """Tiles with the model's tile size (border='pad' so the whole field is covered)."""
        raise NotImplementedError

    def predict_field_sync(self, image_cyx: np.ndarray, **kwargs) -> FieldPrediction: ...


def write_predictions_csv(path, table: dict[str, np.ndarray], source: str | None = None) -> None:
    """CSV with a header; an optional leading `source` column (file name); atomic write."""
    raise NotImplementedError
