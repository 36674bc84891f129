"""Results panel: classify fields, explain, export the tile table, save and load the model.
Classify, Explain, Save and Load are the controller's (`_controller.Controller`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGroupBox,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..attribution_display import MODES as DISPLAY_MODES
from ..summaries import fractions_csv_text
from ..tables import write_predictions_csv
from ..tiling import make_grid
from . import _dialogs
from ._layers import set_attribution_display
from ._qt import WARNING_STYLE, Links, alive_only, note_label, row, set_note_text
from ._report_tab import session_fractions
from ._review import NEXT_KEY, Review
from ._session import Session
from ._trust import model_verdict

if TYPE_CHECKING:  # pragma: no cover
    from ._controller import Controller

MODEL_FILTER = "napari-cellclf model (*.safetensors)"
CSV_FILTER = "CSV table (*.csv)"
CLASSIFY_TIP = "Classify the field selected in the Fields tab, tile by tile, in the background."
CLASSIFY_ALL_TIP = "Classify every field the model can read; the others are listed, with why."
EXPLAIN_TIP = (
    "Gradient × input: red pixels pushed the tile towards the class, blue pixels away from "
    "it; while it is shown, class fill and labels are drawn as outlines."
)


class ResultsPanel(QWidget):
    def __init__(self, viewer, session: Session, controller: "Controller", parent: QWidget | None = None):
        super().__init__(parent)
        self.links = Links()  # undone when the dock closes
        self.viewer, self.session, self.controller = viewer, session, controller

        self.model_info = note_label("No model yet: train one (Train tab) or load a model file.")
        self.save_button = QPushButton("Save model…")
        self.load_button = QPushButton("Load model…")
        model_box = QGroupBox("Model")
        box = QVBoxLayout(model_box)
        box.addWidget(self.model_info)
        box.addLayout(row(self.save_button, self.load_button))

        self.field_note = note_label()
        self.classify_button = QPushButton("Classify selected field")
        self.classify_all_button = QPushButton("Classify all fields")
        self.classify_note = note_label(
            "Each tile (or cell, in object mode) is filled with its predicted class; hover it "
            "to see its class and confidence in the status bar."
        )
        # The model's verdict (evaluation.py, stored in the model), beside the buttons it is about.
        self.verdict = note_label(style=WARNING_STYLE)
        self.verdict.setVisible(False)
        classify_box = QGroupBox("Classify")
        box = QVBoxLayout(classify_box)
        box.addWidget(self.field_note)
        box.addLayout(row(self.classify_button, self.classify_all_button))
        # Why Classify is off, which fields Classify all skips, where the model's settings differ.
        self.check_note = note_label(style=WARNING_STYLE)
        box.addWidget(self.check_note)
        box.addWidget(self.verdict)
        box.addWidget(self.classify_note)

        self.target = QComboBox()
        self.target.setToolTip(
            "Which class's evidence to show: each tile's predicted class, or one class everywhere."
        )
        self.explain_button = QPushButton("Explain selected field")
        self.display = QComboBox()
        for mode in DISPLAY_MODES:
            self.display.addItem(f"show: {mode}", mode)
        self.display.setToolTip(
            "Pixels as computed, smoothed over an eighth of a tile, or one value per tile "
            "(the mean evidence of each tile)."
        )
        explain_box = QGroupBox("Explain")
        box = QVBoxLayout(explain_box)
        box.addWidget(self.target)
        box.addWidget(self.display)
        box.addWidget(self.explain_button)
        self.explain_note = note_label(style=WARNING_STYLE)
        box.addWidget(self.explain_note)

        # Per field: the share of tiles per class and their mean confidence, the numbers of the
        # Report tab and of the exported fractions CSV (one function: _report_tab.session_fractions).
        self.readout = QTableWidget()
        self.readout.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.readout.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        # Long field names (a microscope's file stems) are elided in the middle, where runs of
        # names differ least, and the numbers stay in view instead of behind a scroll bar.
        self.readout.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.readout.setToolTip(
            "Per field: share of its classified tiles (or cells) per class (mean confidence)."
        )
        self.export_button = QPushButton("Export results table (CSV)…")
        self.export_button.setToolTip(
            "Writes one row per classified tile (or cell) and, beside it, the per-field class fractions."
        )
        readout_box = QGroupBox("Per field")
        box = QVBoxLayout(readout_box)
        box.addWidget(self.readout)
        box.addWidget(self.export_button)

        self.review = Review(viewer, session, controller.fields)
        self.next_button = QPushButton(f"Next uncertain ({NEXT_KEY.upper()})")
        self.next_button.setToolTip(
            "Centre the view on the most uncertain tile (or cell, in object mode) nobody labelled "
            "yet; keys 1..K label it as class k and go on to the next."
        )
        self.review_note = note_label(
            "Classify a field, then let the model ask about the tiles or cells it is unsure of."
        )
        review_box = QGroupBox("Label what the model asks")
        box = QVBoxLayout(review_box)
        box.addWidget(self.next_button)
        box.addWidget(self.review_note)

        layout = QVBoxLayout(self)
        layout.addWidget(model_box)
        layout.addWidget(classify_box)
        layout.addWidget(readout_box)
        layout.addWidget(review_box)
        layout.addWidget(explain_box)
        layout.addStretch(1)

        self.save_button.clicked.connect(self.save_model)
        self.load_button.clicked.connect(self.load_model)
        self.classify_button.clicked.connect(lambda: self.classify(all_fields=False))
        self.classify_all_button.clicked.connect(lambda: self.classify(all_fields=True))
        self.explain_button.clicked.connect(self.explain)
        self.export_button.clicked.connect(self.export_csv)
        self.next_button.clicked.connect(self.review.next)
        self.display.currentIndexChanged.connect(self._redisplay)
        self.links.connect(session.jobs.finished, self._on_job_finished)
        self.review.listeners.append(self._on_asked)
        self.links.connect(session.predictions_changed, self._refresh_readout)
        self.links.connect(session.model_changed, self._on_model_changed)
        self.links.connect(session.classes_changed, self._on_model_changed)
        self.links.connect(session.current_changed, self._on_current_changed)
        self.links.connect(session.predictions_changed, self._update_enabled)
        self.links.connect(
            session.predictions_changed, self._show_precision
        )  # chosen when it first classifies
        self.links.connect(session.jobs.started, self._update_enabled)
        self.links.connect(session.jobs.finished, self._update_enabled)
        self.links.connect(session.counts_changed, self._update_enabled)  # layers, labels, settings
        self._on_model_changed()
        self._on_current_changed()
        self._refresh_readout()

    def shut_down(self) -> None:
        """The dock is closing: the session outlives this panel."""
        self.review.shut_down()  # the session connections: self.links (the dock undoes them)

    # -- state -> controls -----------------------------------------------------------------------
    @alive_only
    def _on_model_changed(self) -> None:
        trained = self.session.trained
        verdict = model_verdict(trained.meta) if trained is not None else None
        self.verdict.setText(f"Do not trust this model's classes: {verdict}" if verdict else "")
        self.verdict.setVisible(bool(verdict))
        self.target.clear()
        self.target.addItem("predicted class of each tile or cell", None)
        if trained is None:
            self.model_info.setText("No model yet: train one (Train tab) or load a model file.")
        else:
            meta = trained.meta
            for k, name in enumerate(meta.class_names):
                self.target.addItem(f"class {name}", k)
            origin = (
                "trained here" + (" (cancelled: best so far)" if trained.cancelled else "")
                if trained.source == "trained"
                else Path(trained.source).name
            )
            self.model_info.setText(
                f"{meta.architecture} network, {origin}\n"
                f"tiles {meta.tile_size} px · channels {', '.join(meta.channel_names)}\n"
                f"classes {', '.join(meta.class_names)}{_accuracy_text(trained.history)}"
            )
        self._update_enabled()

    @alive_only
    def _show_precision(self, *_) -> None:
        """The number format the engine chose for the model (precision.py), once it has one."""
        report = self.session.precision_report
        text = self.model_info.text().split("\nprecision ")[0]
        if report is not None and self.session.trained is not None:
            text += f"\nprecision {report.precision} (attribution {report.explain_precision})"
        self.model_info.setText(text)

    @alive_only
    def _on_current_changed(self) -> None:
        fld = self.controller.current_field()
        self.field_note.setText(f"Selected field: {fld.name}" if fld else "No field selected.")
        self._update_enabled()

    @alive_only
    def _update_enabled(self, *_) -> None:
        """Each job button is enabled only when its job would start; the reason is in its
        tooltip and in the note under it (the controller's checks)."""
        idle = not self.session.jobs.busy
        one, every, explain = (
            self.controller.classify_check(False),
            self.controller.classify_check(True),
            self.controller.explain_check(),
        )
        for button, check, tip, verb in (
            (self.classify_button, one, CLASSIFY_TIP, "Classify"),
            (self.classify_all_button, every, CLASSIFY_ALL_TIP, "Classify all"),
            (self.explain_button, explain, EXPLAIN_TIP, "Explain"),
        ):
            button.setEnabled(idle and check.ok)
            button.setToolTip(check.tooltip(tip, verb))
        lines = one.blocking + [m for m in every.lines() if m not in one.blocking]
        self.check_note.setText("\n".join(lines + self.controller.model_differences()))
        self.check_note.setVisible(bool(self.check_note.text()))
        self.explain_note.setText("\n".join(m for m in explain.blocking if m not in one.blocking))
        self.explain_note.setVisible(bool(self.explain_note.text()))
        self.save_button.setEnabled(idle and self.session.trained is not None)
        self.load_button.setEnabled(idle)
        self.export_button.setEnabled(bool(self.session.predictions))
        self.next_button.setEnabled(idle and bool(self.session.predictions))

    @alive_only
    def _refresh_readout(self, *_) -> None:
        rows = session_fractions(self.session)
        fields = list(dict.fromkeys(r["source"] for r in rows))
        classes = list(dict.fromkeys(r["class_name"] for r in rows))
        table = self.readout
        table.clear()
        table.setColumnCount(2 + len(classes))
        # what was counted: "tiles" or "cells" in the header, or per row when modes are mixed
        units = sorted({row["unit"] for row in rows})
        mixed = len(units) > 1
        table.setHorizontalHeaderLabels(["field", "classified" if mixed or not units else units[0]] + classes)
        table.setRowCount(len(fields))
        for r, name in enumerate(fields):
            mine = {row["class_name"]: row for row in rows if row["source"] == name}
            name_item = QTableWidgetItem(name)
            name_item.setToolTip(name)
            table.setItem(r, 0, name_item)
            count = sum(row["count"] for row in mine.values())
            unit = next(iter(mine.values()))["unit"]
            table.setItem(r, 1, QTableWidgetItem(f"{count} {unit}" if mixed else str(count)))
            for c, cls in enumerate(classes):
                row = mine.get(cls)
                text = "" if row is None else readout_text(row)
                table.setItem(r, 2 + c, QTableWidgetItem(text))
        header = table.horizontalHeader()
        if table.columnCount():
            header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # the rest: to contents
        table.setVisible(bool(rows))
        # as tall as its rows (a few fields), so the review text under it is never squeezed
        table.resizeRowsToContents()
        height = table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth()
        height += table.horizontalScrollBar().sizeHint().height()  # room for it with many classes
        table.setMaximumHeight(height + sum(table.rowHeight(r) for r in range(table.rowCount())))

    @alive_only
    def _on_job_finished(self, kind: str, ok: bool) -> None:
        if kind == "explain" and ok and self.display.currentData() != "pixels":
            self._redisplay()

    @alive_only
    def _redisplay(self, *_) -> None:
        """Show the selected field's attribution as the chosen display mode."""
        fld, trained = self.controller.current_field(), self.session.trained
        if fld is None or trained is None:
            return
        tile, stride = trained.meta.tile_size, self.session.data.stride
        grid = make_grid(fld.shape, tile, stride if 0 < stride <= tile else None, border="pad")
        set_attribution_display(self.viewer, fld, self.display.currentData(), grid)

    @alive_only
    def _on_asked(self, asked) -> None:
        if asked is None:
            set_note_text(self.review_note, "Nothing unlabelled and classified is left to ask about.")
            return
        keys = ", ".join(f"{k + 1} {n}" for k, n in enumerate(self.session.class_names[:9]))
        set_note_text(
            self.review_note,
            f"{asked.field_name}, {where(asked)}: predicted "
            f"{asked.predicted} ({asked.confidence:.0%}), uncertainty {asked.score:.2f}. "
            f"Press {keys}, or {NEXT_KEY.upper()} to skip.",
        )

    # -- actions (the controller's; the panel asks its questions first) --------------------------
    def classify(self, all_fields: bool = False) -> None:
        self.controller.classify(all_fields)

    def explain(self) -> None:
        self.controller.explain(self.target.currentData())

    def export_csv(self) -> None:
        predictions = self.session.predictions
        if not predictions:
            show_warning("Classify a field first.")
            return
        path = _dialogs.ask_save_path(self, "Export per-tile predictions", CSV_FILTER, "cellclf-tiles.csv")
        if not path:
            return
        if not path.lower().endswith(".csv"):
            path += ".csv"
        try:
            items = list(predictions.values())
            if len(items) == 1:
                name, prediction = items[0]
                write_predictions_csv(path, prediction.table(), source=name)
            else:
                write_predictions_csv(path, _merged_table(items))
            fractions_path = fractions_path_for(path)
            Path(fractions_path).write_text(fractions_csv_text(session_fractions(self.session)))
        except (OSError, ValueError) as exc:
            show_error(f"Could not write {path}: {exc}")
            return
        written: dict[str, int] = {}  # per unit: a mix of tile and object fields says both
        for _, prediction in items:
            written[prediction.unit] = written.get(prediction.unit, 0) + len(prediction.indices)
        counts = " and ".join(f"{n} {unit}" for unit, n in written.items())
        show_info(
            f"Wrote {counts} from {len(items)} field(s) to {path}, class fractions per "
            f"field to {Path(fractions_path).name}"
        )

    def save_model(self) -> None:
        if self.session.trained is None:
            return
        path = _dialogs.ask_save_path(self, "Save model", MODEL_FILTER, "cellclf-model.safetensors")
        if path:
            self.controller.save_model(path)

    def load_model(self) -> None:
        path = _dialogs.ask_open_path(self, "Load model", MODEL_FILTER)
        if path:
            self.controller.load_model(path)


def where(asked) -> str:
    if asked.kind == "tile":
        return f"tile {asked.item + 1} at pixel (y, x) {asked.origin}"
    return f"cell {asked.item} at pixel (y, x) ({asked.centre[0]:.0f}, {asked.centre[1]:.0f})"


def readout_text(row) -> str:
    """One class of one field in the readout: share of tiles (mean confidence)."""
    confidence = row["mean_confidence"]
    return f"{row['share']:.1%}" + ("" if confidence is None else f" ({confidence:.2f})")


def fractions_path_for(csv_path: str) -> str:
    """Where Export writes the per-field class fractions: beside the tile table."""
    path = Path(csv_path)
    return str(path.with_name(f"{path.stem}-fractions.csv"))


def _accuracy_text(history) -> str:
    acc = history.summary()["best_val_accuracy"] if history is not None else None
    if not acc or acc.get("mean") is None:
        return ""
    return f"\nbest validation accuracy {acc['mean']:.1%}"


def _merged_table(items) -> dict[str, np.ndarray]:
    """Tables of several fields as one, with a leading `source` column naming each row's field."""
    tables = [(name, prediction.table()) for name, prediction in items]
    columns = [k for k in tables[0][1] if all(k in t for _, t in tables)]
    merged = {
        "source": np.concatenate([np.full(len(t[columns[0]]), name, dtype=object) for name, t in tables])
    }
    for key in columns:
        merged[key] = np.concatenate([np.asarray(t[key]) for _, t in tables])
    return merged
