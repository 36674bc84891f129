"""Train panel: settings, Train, live curves, warnings. Progress and Cancel live in the job bar;
what Train does is the controller's (`_controller.Controller.train`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..options import train_option
from ..training import TrainConfig
from ._plot import RunsBoxPlot, TrainingCurves, theme_colors
from ._qt import WARNING_STYLE, Links, alive_only, debouncer, note_label, signals_blocked
from ._session import Session
from ._trust import baseline_sentence

if TYPE_CHECKING:  # pragma: no cover
    from ._controller import Controller

DEVICES = (("auto (GPU if available)", "auto"), ("CPU", "cpu"), ("GPU", "gpu"))
PLOT_INTERVAL_MS = 500  # epochs of small datasets end many times a second: redraw at most 2/s
TRAIN_TIP = (
    "Cut labelled tiles and train in the background; the viewer stays usable. "
    "Cancel keeps the best model so far."
)
ARCHITECTURE_HELP = {
    "fast": "fast: a small CNN for quick interactive training",
    "original": "original: the published 9-convolution network",
    "features": "features: no CNN; classical features with logistic regression "
    "or random forest (seconds to train; cannot be explained)",
}


class TrainPanel(QWidget):
    def __init__(self, viewer, session: Session, controller: "Controller", parent: QWidget | None = None):
        super().__init__(parent)
        self.links = Links()  # undone when the dock closes
        self.viewer, self.session, self.controller = viewer, session, controller

        self.epochs = QSpinBox()
        self.epochs.setRange(0, 1000)
        self.epochs.setSpecialValueText("auto")  # 0 = training.epochs_for (from the data size)
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(5)
        self.learning_rate.setRange(1e-5, 1.0)
        self.learning_rate.setSingleStep(1e-4)
        self.augment = QCheckBox("Rotations and flips")
        self.augment.setToolTip(
            "90° rotations and mirror flips of every tile: valid for micrographs, which have no up or down."
        )
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.runs = QSpinBox()
        self.runs.setRange(1, 50)
        self.runs.setToolTip(
            "Train several times with seeds seed, seed+1, ...: accuracy varies "
            "from run to run; the best run's model is kept."
        )
        self.device = QComboBox()
        for text, value in DEVICES:
            self.device.addItem(text, value)
        self.architecture = QComboBox()
        for name in train_option("architecture").choices or ():
            self.architecture.addItem(name, name)
            self.architecture.setItemData(
                self.architecture.count() - 1, ARCHITECTURE_HELP.get(name, name), 3
            )  # ToolTipRole
        settings_box = QGroupBox("Training")
        form = QFormLayout(settings_box)
        # Labels and tooltips from options.py (the CLI's --help says the same).
        for name, control in (
            ("epochs", self.epochs),
            ("learning_rate", self.learning_rate),
            ("augment", self.augment),
            ("seed", self.seed),
            ("runs", self.runs),
            ("device", self.device),
            ("architecture", self.architecture),
        ):
            option = train_option(name)
            if not control.toolTip():
                control.setToolTip(option.help[:1].upper() + option.help[1:] + ".")
            form.addRow("Augmentation" if name == "augment" else option.label, control)

        self.warnings = note_label(style=WARNING_STYLE)
        self.train_button = QPushButton("Train")
        self.memorisation = note_label(style=WARNING_STYLE)
        self.curves = TrainingCurves(theme_colors(getattr(viewer, "theme", None)))
        self.runs_plot = RunsBoxPlot(theme_colors(getattr(viewer, "theme", None)))
        self.log = note_label()
        self.baseline = note_label()
        self.baseline.setToolTip(
            "CNN vs classical features (intensity, shape, texture; logistic "
            "regression / random forest) on the same validation split."
        )

        layout = QVBoxLayout(self)
        layout.addWidget(settings_box)
        layout.addWidget(self.warnings)
        layout.addWidget(self.train_button)
        layout.addWidget(self.memorisation)
        layout.addWidget(self.curves)
        layout.addWidget(self.runs_plot)
        layout.addWidget(self.log)
        layout.addWidget(self.baseline)
        layout.addStretch(1)

        self._redraw_later = debouncer(self, PLOT_INTERVAL_MS, self._redraw)
        self._load_settings()
        for widget in (self.epochs, self.learning_rate, self.seed, self.runs):
            widget.valueChanged.connect(self._store_settings)
        self.augment.toggled.connect(self._store_settings)
        self.device.currentIndexChanged.connect(self._store_settings)
        self.architecture.currentIndexChanged.connect(self._store_settings)
        self.train_button.clicked.connect(self.start_training)
        self.links.connect(session.train.events, self._on_settings_changed)  # another dock on this viewer
        self.links.connect(session.counts_changed, self._on_counts_changed)
        self.links.connect(session.log_changed, self._on_log_changed)
        self.links.connect(session.model_changed, self._on_model_changed)
        self.links.connect(session.jobs.started, self._on_busy)
        self.links.connect(session.jobs.finished, self._on_busy)
        self._on_counts_changed()
        self._on_model_changed()
        self._on_log_changed()
        self._on_busy()

    def _load_settings(self) -> None:
        t = self.session.train
        self.epochs.setValue(t.epochs)
        self.learning_rate.setValue(t.learning_rate)
        self.augment.setChecked(t.augment)
        self.seed.setValue(t.seed)
        self.runs.setValue(t.runs)
        self.device.setCurrentIndex(max(self.device.findData(t.device), 0))
        self.architecture.setCurrentIndex(max(self.architecture.findData(t.architecture), 0))

    @alive_only
    def _on_settings_changed(self, *_) -> None:
        with signals_blocked(
            self.epochs,
            self.learning_rate,
            self.augment,
            self.seed,
            self.runs,
            self.device,
            self.architecture,
        ):
            self._load_settings()

    def _store_settings(self, *_) -> None:
        t = self.session.train
        t.epochs = self.epochs.value()
        t.learning_rate = self.learning_rate.value()
        t.augment = self.augment.isChecked()
        t.seed = self.seed.value()
        t.runs = self.runs.value()
        t.device = self.device.currentData()
        t.architecture = self.architecture.currentData()

    def config(self) -> TrainConfig:
        return self.session.train.config()

    def start_training(self) -> None:
        self.controller.train()

    def shut_down(self) -> None:
        """The dock closed (its links are already undone): no throttled redraw may follow."""
        self._redraw_later.stop()

    @alive_only
    def _on_counts_changed(self) -> None:
        self._update_train_button()

    def _update_train_button(self) -> None:
        """Train is enabled only when the training would start; otherwise the reason is in its
        tooltip and in the warnings above it (the controller's check, datasets' rules)."""
        check = self.controller.train_check()
        self.warnings.setText("\n".join(check.lines()))
        self.train_button.setEnabled(check.ok and not self.session.jobs.busy)
        self.train_button.setToolTip(check.tooltip(TRAIN_TIP, "Train"))

    @alive_only
    def _on_log_changed(self) -> None:
        log = self.session.log
        if not self.session.jobs.busy:
            self._redraw()
        elif not self._redraw_later.isActive():  # a throttle, not a debounce: keep drawing
            self._redraw_later.start()
        self.memorisation.setText("\n".join(log.memorisation))
        self.memorisation.setVisible(bool(log.memorisation))
        self.log.setText("\n".join(log.messages))

    @alive_only
    def _on_model_changed(self) -> None:
        trained = self.session.trained
        self.runs_plot.show_history(trained.history if trained is not None else None)
        text = baseline_sentence(trained.meta) if trained is not None else ""
        self.baseline.setText(text)
        self.baseline.setVisible(bool(text))

    @alive_only
    def _redraw(self) -> None:
        epochs = self.session.log.epochs
        if len(epochs) != self.curves.n_drawn or not epochs:
            self.curves.plot(epochs)

    @alive_only
    def _on_busy(self, *_) -> None:
        self._update_train_button()
        if not self.session.jobs.busy:
            self._redraw()
