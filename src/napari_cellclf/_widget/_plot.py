"""Training curves (loss and accuracy per epoch) in the dock: one small matplotlib canvas,
coloured to sit on napari's dark or light theme. Drawing costs the UI thread tens of
milliseconds, so callers redraw at most a few times a second (see TrainPanel), and the layout is
fixed (no constrained layout pass per draw)."""

from __future__ import annotations

from typing import Sequence

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

TRAIN_COLOR = "#56b4e9"
VAL_COLOR = "#e69f00"


def theme_colors(theme_name: str | None) -> tuple[str, str]:
    """(background, text) of a napari theme: napari styles docks with a stylesheet, so the Qt
    palette does not know them."""
    from napari.utils.theme import get_theme

    try:
        theme = get_theme(theme_name or "dark")
    except (KeyError, ValueError):
        theme = get_theme("dark")
    return theme.background.as_hex(), theme.text.as_hex()


class TrainingCurves(QWidget):
    def __init__(self, colors: tuple[str, str] = ("#23242b", "#f0f1f2"), parent: QWidget | None = None):
        super().__init__(parent)
        self._bg, self._fg = colors
        self.figure = Figure(figsize=(3.6, 1.9), dpi=100, facecolor=self._bg)
        self.figure.subplots_adjust(left=0.13, right=0.98, bottom=0.24, top=0.88, wspace=0.38)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(170)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.ax_loss, self.ax_acc = self.figure.subplots(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.n_drawn = 0
        self.plot([])

    def _style(self, ax, title: str) -> None:
        ax.set_facecolor(self._bg)
        ax.set_title(title, color=self._fg, fontsize=8)
        ax.tick_params(colors=self._fg, labelsize=7)
        for spine in ax.spines.values():
            spine.set_color(self._fg)
            spine.set_alpha(0.4)
        ax.set_xlabel("epoch", color=self._fg, fontsize=7)

    def plot(self, epochs: Sequence) -> None:
        """Draw every run's curves from a list of training.EpochEnd; the latest run on top."""
        self.ax_loss.clear()
        self.ax_acc.clear()
        self._style(self.ax_loss, "loss")
        self._style(self.ax_acc, "accuracy")
        runs: dict[int, list] = {}
        for event in epochs:
            runs.setdefault(event.run, []).append(event)
        last = max(runs) if runs else None
        for run, events in sorted(runs.items()):
            alpha = 1.0 if run == last else 0.3
            x = [e.epoch + 1 for e in events]
            label = run == last
            self.ax_loss.plot(
                x,
                [e.train_loss for e in events],
                color=TRAIN_COLOR,
                alpha=alpha,
                marker=".",
                label="train" if label else None,
            )
            self.ax_acc.plot(
                x, [e.train_accuracy for e in events], color=TRAIN_COLOR, alpha=alpha, marker="."
            )
            val = [(e.epoch + 1, e.val_loss, e.val_accuracy) for e in events if e.val_loss is not None]
            if val:
                self.ax_loss.plot(
                    [v[0] for v in val],
                    [v[1] for v in val],
                    color=VAL_COLOR,
                    alpha=alpha,
                    marker=".",
                    label="validation" if label else None,
                )
                self.ax_acc.plot(
                    [v[0] for v in val], [v[2] for v in val], color=VAL_COLOR, alpha=alpha, marker="."
                )
        self.ax_acc.set_ylim(-0.02, 1.02)
        if runs:
            legend = self.ax_loss.legend(fontsize=7, frameon=False)
            for text in legend.get_texts():
                text.set_color(self._fg)
        self.canvas.draw_idle()
        self.n_drawn = len(epochs)


class RunsBoxPlot(QWidget):
    """After a multi-run training (or loading such a model): validation accuracy and balanced
    accuracy of every run as points over a box plot (runs_report.runs_figure). Hidden otherwise."""

    def __init__(self, colors: tuple[str, str] = ("#23242b", "#f0f1f2"), parent: QWidget | None = None):
        super().__init__(parent)
        self._colors = colors
        self.figure = Figure(figsize=(3.6, 2.6), dpi=100, facecolor=colors[0])
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.n_runs = 0
        self.setVisible(False)

    def show_history(self, history) -> None:
        """Draw the runs of a training.History (or its dict); hide for fewer than two runs."""
        from ..runs_report import runs_figure

        if history is None:
            runs = []
        elif isinstance(history, dict):
            runs = history.get("runs", [])
        else:
            runs = history.runs
        self.n_runs = len(runs)
        if self.n_runs < 2:
            self.setVisible(False)
            return
        runs_figure(history, figure=self.figure, colors=self._colors)
        self.canvas.draw_idle()
        self.setVisible(True)
