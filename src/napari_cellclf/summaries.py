"""Per-field summaries of a classification: the share of tiles (or cells) per class and their
mean confidence, from a per-tile or per-object table (FieldPrediction.table(),
ObjectPrediction.table() or the exported CSV's columns `class_name`, `confidence`). Pure numpy;
the widget's readout, its Report tab and the fractions CSV show it. `unit` says what was counted
("tiles" or "cells": the prediction's own `unit`), so a cell count is never called tiles."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence

import numpy as np

FRACTION_COLUMNS = ("source", "class_name", "count", "unit", "share", "mean_confidence")


def class_fractions(
    table: Mapping[str, Sequence], class_names: Sequence[str], source: str = "", unit: str = "tiles"
) -> list[dict]:
    """One row per class (in `class_names` order): the `count` of tiles (or cells: `unit`)
    predicted as it, their share of the field's classified ones (0 when none) and their mean
    confidence (None when none)."""
    names = np.asarray(table.get("class_name", []), dtype=object)
    confidence = np.asarray(table.get("confidence", []), dtype=np.float64)
    total = len(names)
    rows = []
    for name in class_names:
        mask = names == name
        n = int(mask.sum())
        rows.append(
            {
                "source": source,
                "class_name": str(name),
                "count": n,
                "unit": unit,
                "share": n / total if total else 0.0,
                "mean_confidence": float(confidence[mask].mean()) if n else None,
            }
        )
    return rows


def fractions_csv_text(rows: Sequence[Mapping]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(FRACTION_COLUMNS), lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {**row, "mean_confidence": "" if row.get("mean_confidence") is None else row["mean_confidence"]}
        )
    return buffer.getvalue()
