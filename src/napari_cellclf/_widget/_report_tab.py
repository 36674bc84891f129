"""Report tab: the kept (or loaded) model's validation metrics, verdict, attribution checks,
memorisation per run and run box plot (ReportPanel), the gallery of its most confidently right
and wrong validation tiles (GalleryPanel: click to go there, relabel), and per-field class
fractions after classification. Everything shown comes from the model's meta
(provenance.model_info, extra["gallery"]) and the predictions (summaries.class_fractions)."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..provenance import model_info
from ..summaries import class_fractions
from ._gallery import GalleryPanel
from ._qt import WARNING_STYLE, alive_only, note_label
from ._report_panel import ReportPanel
from ._session import Session

FRACTION_HEADERS = ("field", "class", "classified", "share", "mean confidence")


def session_fractions(session: Session) -> list[dict]:
    """class_fractions of every classified field, in classification order."""
    rows: list[dict] = []
    for name, prediction in session.predictions.values():
        rows += class_fractions(prediction.table(), prediction.class_names, source=name, unit=prediction.unit)
    return rows


class ReportTab(QWidget):
    def __init__(
        self, session: Session, colors: tuple[str, str] | None = None, parent: QWidget | None = None
    ):
        super().__init__(parent)
        self.session = session
        self.source = note_label("No model yet.")
        self.panel = ReportPanel(colors) if colors else ReportPanel()
        self.memorisation = note_label(style=WARNING_STYLE)
        self.gallery = GalleryPanel(session)
        gallery_box = QGroupBox("Gallery")
        QVBoxLayout(gallery_box).addWidget(self.gallery)
        self.fractions = QTableWidget()
        self.fractions.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.fractions.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.fractions_note = note_label(
            "Classify a field (Results tab) to see its class "
            "fractions here; Export results table writes them too."
        )
        box = QGroupBox("Class fractions per field")
        inner = QVBoxLayout(box)
        inner.addWidget(self.fractions_note)
        inner.addWidget(self.fractions)
        layout = QVBoxLayout(self)
        layout.addWidget(self.source)
        layout.addWidget(self.panel)
        layout.addWidget(self.memorisation)
        layout.addWidget(gallery_box)
        layout.addWidget(box)
        layout.addStretch(1)
        self._connections = [
            (session.model_changed, self.refresh),
            (session.predictions_changed, self.refresh_fractions),
            (session.classes_changed, self.gallery.refresh_classes),
        ]
        for signal, slot in self._connections:
            signal.connect(slot)
        self.refresh()
        self.refresh_fractions()

    def disconnect_session(self) -> None:
        """The dock is closing: the session outlives it, so stop listening to it."""
        for signal, slot in self._connections:
            signal.disconnect(slot)
        self._connections = []

    @alive_only
    def refresh(self) -> None:
        self.gallery.refresh()
        trained = self.session.trained
        if trained is None:
            self.source.setText("No model yet: train one (Train tab) or load a model file.")
            self.panel.clear()
            self.memorisation.setVisible(False)
            return
        info = model_info(trained.meta)
        origin = "Trained here" if trained.source == "trained" else f"Loaded from {Path(trained.source).name}"
        evaluation = info.get("evaluation")
        self.source.setText(
            f"{origin}: {info['architecture']} network, classes "
            f"{', '.join(info['classes'])}."
            + ("" if evaluation else " The model stores no validation metrics.")
        )
        if evaluation:
            self.panel.show_metrics(evaluation, runs=info["runs"])
        else:
            self.panel.clear()
            self.panel.show_runs(info["runs"])
        notes = [f"Run {k + 1}: {message}" for k, message in enumerate(info["memorisation"]) if message]
        self.memorisation.setText("\n".join(notes))
        self.memorisation.setVisible(bool(notes))

    @alive_only
    def refresh_fractions(self, *_) -> None:
        rows = session_fractions(self.session)
        table = self.fractions
        table.clear()
        table.setColumnCount(len(FRACTION_HEADERS))
        table.setHorizontalHeaderLabels(list(FRACTION_HEADERS))
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            confidence = row["mean_confidence"]
            cells = (
                row["source"],
                row["class_name"],
                f"{row['count']} {row['unit']}",
                f"{row['share']:.1%}",
                "n/a" if confidence is None else f"{confidence:.3f}",
            )
            for c, text in enumerate(cells):
                table.setItem(r, c, QTableWidgetItem(text))
        self.fractions_note.setVisible(not rows)
