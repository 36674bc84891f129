"""Per-tile result tables as CSV (`cellclf predict --out`, the widget's export). No Qt.

The columns are `inference.FieldPrediction.table()`'s (plus an optional leading `source`)."""

from __future__ import annotations

import csv
import io as io_module
from pathlib import Path

import numpy as np

from ._files import atomic_write


def write_predictions_csv(path, table: dict[str, np.ndarray], source: str | None = None) -> None:
    """CSV with a header; an optional leading `source` column (file name); atomic write.

    A `source` column already in the table also comes first. The file appears complete or not
    at all: rows go to a temporary file in the same folder, which then replaces `path`."""
    path = Path(path)
    columns = {key: np.asarray(values) for key, values in table.items()}
    lengths = {key: len(values) for key, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"table columns differ in length: {lengths}")
    n_rows = next(iter(lengths.values()), 0)
    if source is not None:
        columns.pop("source", None)
        columns = {"source": np.full(n_rows, str(source), dtype=object), **columns}
    elif "source" in columns:
        columns = {"source": columns.pop("source"), **columns}

    def write(binary) -> None:
        text = io_module.TextIOWrapper(binary, newline="", encoding="utf-8")
        writer = csv.writer(text)
        writer.writerow(list(columns))
        writer.writerows(zip(*(_csv_column(values) for values in columns.values())))
        text.flush()
        text.detach()  # the atomic writer closes the file itself

    atomic_write(path, write)


def _csv_column(values: np.ndarray) -> list[str]:
    if values.dtype.kind == "f":
        return [format(float(v), ".6g") for v in values]
    if values.dtype.kind == "b":
        return ["true" if v else "false" for v in values]
    return [str(v) for v in values.tolist()]
