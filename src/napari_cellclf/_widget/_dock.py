"""The dock widget: five panels (Fields, Classes, Train, Results, Report) over one per-viewer
session, and a job bar (progress, Cancel) that every background job reports to."""

from __future__ import annotations

import time

from napari.layers import Labels
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import (
    QFrame,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..training import BatchProgress, EpochEnd
from ._classes_panel import ClassesPanel
from ._controller import Controller
from ._data_panel import FieldsPanel
from ._fields import ROLE_LABELS, role_of
from ._jobs import FieldStep, JobStage
from ._labelling import ForegroundCache, PaintedCountCache, TileCounts, count_tiles
from ._plot import theme_colors
from ._qt import Links, alive_only, debouncer, relayout, row
from ._report_tab import ReportTab
from ._results_panel import ResultsPanel
from ._session import Session, session_for
from ._train_panel import TrainPanel

JOB_VERBS = {
    "train": "Training",
    "classify": "Classifying",
    "explain": "Explaining",
    "import": "Importing class folders",
}


class JobBar(QWidget):
    """Progress of whatever job runs now, and the Cancel button that stops it within one batch."""

    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.links = Links()  # undone when the dock closes
        self.session = session
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self._started_at = time.monotonic()
        self.status = QLabel("Ready")
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current batch; training keeps the best model so far.")
        self.cancel_button.setEnabled(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row(self.progress, self.cancel_button))
        layout.addWidget(self.status)
        self.cancel_button.clicked.connect(self.cancel)
        self.links.connect(session.jobs.started, self._on_started)
        self.links.connect(session.jobs.progress, self._on_progress)
        self.links.connect(session.jobs.finished, self._on_finished)
        if session.jobs.busy:
            self._on_started(session.jobs.kind)

    def cancel(self) -> None:
        self.session.jobs.cancel()
        self.status.setText(f"{self.status.text()} · cancelling…")
        self.cancel_button.setEnabled(False)

    @alive_only
    def _on_started(self, kind: str) -> None:
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self._started_at = time.monotonic()
        if kind == "import":
            self.progress.setRange(0, 0)  # busy indicator: reading folders has no steps
        self.status.setText(f"{JOB_VERBS.get(kind, kind)}…")

    @alive_only
    def _on_progress(self, kind: str, event) -> None:
        if isinstance(event, BatchProgress):
            total = max(event.n_runs * event.n_epochs * event.n_batches, 1)
            done = (event.run * event.n_epochs + event.epoch) * event.n_batches + event.batch + 1
            runs = f"run {event.run + 1}/{event.n_runs} · " if event.n_runs > 1 else ""
            self.status.setText(
                f"Training: {runs}epoch {event.epoch + 1}/{event.n_epochs} · "
                f"batch {event.batch + 1}/{event.n_batches} · "
                f"loss {event.loss:.3f}" + self._show_fraction(done / total)
            )
        elif isinstance(event, JobStage):
            self.progress.setRange(0, 0)  # busy: this step has no count
            self.status.setText(event.text)
        elif isinstance(event, EpochEnd):
            self.progress.setToolTip(_epoch_text(event))
        elif isinstance(event, FieldStep):
            inner = event.progress
            fraction = inner.done / inner.total if getattr(inner, "total", 0) else 0.0
            stage = JOB_VERBS.get(getattr(inner, "stage", kind), JOB_VERBS.get(kind, kind))
            fields = f" ({event.index + 1}/{event.count})" if event.count > 1 else ""
            self.status.setText(
                f"{stage} {event.field_name}{fields}: {inner.done}/{inner.total} {getattr(inner, 'unit', 'tiles')}"
                + self._show_fraction((event.index + fraction) / event.count)
            )

    def _show_fraction(self, fraction: float) -> str:
        """Set the bar (its text is the percent) and say the time left, from the pace so far."""
        self.progress.setValue(int(1000 * fraction))
        return time_left_text(time.monotonic() - self._started_at, fraction)

    @alive_only
    def _on_finished(self, kind: str, ok: bool) -> None:
        self.progress.setRange(0, 1000)
        self.progress.setValue(1000 if ok else self.progress.value())
        self.cancel_button.setEnabled(False)
        verb = JOB_VERBS.get(kind, kind)
        self.status.setText(f"{verb}: done" if ok else f"{verb}: stopped")


def time_left_text(elapsed_s: float, fraction: float) -> str:
    """' · about 2 min left' from the time taken so far; nothing until the pace is known."""
    if not 0 < fraction < 1 or elapsed_s < 1:
        return ""
    left = elapsed_s * (1 - fraction) / fraction
    if left < 60:
        return f" · about {max(int(round(left)), 1)} s left"
    if left < 3600:
        return f" · about {int(round(left / 60))} min left"
    return f" · about {left / 3600:.1f} h left"


def _epoch_text(event: EpochEnd) -> str:
    text = f"epoch {event.epoch + 1}: train accuracy {event.train_accuracy:.1%}"
    if event.val_accuracy is not None:
        text += f", validation accuracy {event.val_accuracy:.1%}"
    return text


class CellClassifierWidget(QWidget):
    """Tile fields of view, label tiles, train a CNN, classify and explain, in one dock."""

    # napari passes the viewer to a parameter named `napari_viewer` (the string annotation is
    # one napari also recognises; napari itself is not imported here).
    def __init__(self, napari_viewer: "napari.viewer.Viewer"):  # noqa: F821
        super().__init__()
        self.links = Links()  # undone when the dock closes
        # The viewer as napari gave it (its public-only proxy): only the session key needs the
        # viewer behind the proxy, and session_for unwraps it for that.
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self._foreground = ForegroundCache()
        self._painted = PaintedCountCache()

        self.controller = Controller(napari_viewer, self.session)

        self.fields_panel = FieldsPanel(napari_viewer, self.session, self._foreground, self.controller.fields)
        self.classes_panel = ClassesPanel(napari_viewer, self.session, self.controller)
        self.train_panel = TrainPanel(napari_viewer, self.session, self.controller)
        self.results_panel = ResultsPanel(napari_viewer, self.session, self.controller)
        self.report_tab = ReportTab(self.session, theme_colors(getattr(napari_viewer, "theme", None)))
        self.job_bar = JobBar(self.session)

        self.tabs = QTabWidget()
        for panel, title in (
            (self.fields_panel, "1 Fields"),
            (self.classes_panel, "2 Classes"),
            (self.train_panel, "3 Train"),
            (self.results_panel, "4 Results"),
            (self.report_tab, "5 Report"),
        ):
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QFrame.Shape.NoFrame)
            scroll.setWidget(panel)
            self.tabs.addTab(scroll, title)
        self.tabs.currentChanged.connect(self._on_tab_shown)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(self.job_bar)
        self.setMinimumWidth(340)

        # Tiles per class: recounted after painting stops for a moment, not on every brush dab.
        self._recount_later = debouncer(self, 250, self.recount)
        self.links.connect(self.session.labels_changed, self._on_labelling_changed)
        self.links.connect(self.session.classes_changed, self._on_labelling_changed)
        self.links.connect(self.session.data.events, self._on_labelling_changed)
        self.links.connect(napari_viewer.layers.events.inserted, self._on_layer_inserted)
        self.links.connect(napari_viewer.layers.events.removed, self._on_labelling_changed)
        for layer in napari_viewer.layers:
            self._watch(layer)
        self.recount()

    # -- closing ---------------------------------------------------------------------------------
    def event(self, event) -> bool:
        # napari closes a dock by taking its widget out (setParent(None)): the session lives
        # on, so the views that draw on canvases stop listening to it now.
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.shut_down()
        return super().event(event)

    def shut_down(self) -> None:
        """Undo every connection to what outlives the dock (session, viewer, layers) and stop the
        timers, so a closed dock neither redraws nor counts; a running job ends in the session."""
        self._recount_later.stop()
        self.report_tab.disconnect_session()
        self.controller.shut_down()
        self.results_panel.shut_down()
        for view in (
            self.fields_panel,
            self.classes_panel,
            self.train_panel,
            self.results_panel,
            self.job_bar,
            self.fields_panel.objects_box,
            self,
        ):
            view.links.disconnect_all()
        self.train_panel.shut_down()

    # -- providers for the panels ----------------------------------------------------------------
    def fields(self):
        return self.controller.fields()

    def current_field(self):
        return self.controller.current_field()

    @alive_only
    def _on_tab_shown(self, index: int) -> None:
        scroll = self.tabs.widget(index)
        if isinstance(scroll, QScrollArea) and scroll.widget() is not None:
            relayout(scroll.widget())

    # -- tile counts -----------------------------------------------------------------------------
    def _watch(self, layer) -> None:
        if isinstance(layer, Labels):
            for name in ("paint", "data", "set_data"):
                self.links.connect(getattr(layer.events, name), self._on_labels_edited)

    @alive_only
    def _on_labels_edited(self, event) -> None:
        self._painted.invalidate(event.source)
        self._recount_later.start()

    def _on_layer_inserted(self, event) -> None:
        self._watch(event.value)
        self._recount_later.start()

    @alive_only
    def _on_labelling_changed(self, *_) -> None:
        self._recount_later.start()

    @alive_only
    def recount(self) -> None:
        try:
            counts = count_tiles(self.session, self.fields(), self.viewer, self._foreground, self._painted)
        except ValueError as exc:
            counts = TileCounts([0] * len(self.session.classes), notes=[str(exc)])
        self.session.set_counts(counts)

    def labels_layers(self):
        return [ly for ly in self.viewer.layers if role_of(ly) == ROLE_LABELS]
