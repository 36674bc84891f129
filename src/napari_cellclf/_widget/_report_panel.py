"""A pure view of an evaluation: metrics beside balanced accuracy and chance, the verdict, the
confusion matrix, per-class precision/recall, the attribution checks and (after a multi-run
training) a box plot of every run's validation accuracy. It draws what it is given
(`show_metrics(dict)`: evaluation.ClassificationMetrics.to_dict() or a report's metrics.json)
and computes nothing itself."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._qt import MUTED_STYLE, WARNING_STYLE

GOOD_STYLE = "color: #4caf50;"
ACC_COLOR = "#56b4e9"
BALANCED_COLOR = "#e69f00"


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def run_values(runs: Sequence[dict]) -> dict[str, list[float]]:
    """Per-run validation accuracy and balanced accuracy from runs.csv rows (scalars
    `val_accuracy`, `val_balanced_accuracy`) or training.History runs (per-epoch lists with
    `best_epoch`, `best_val_accuracy`)."""
    out: dict[str, list[float]] = {"accuracy": [], "balanced accuracy": []}
    for run in runs or []:
        best = run.get("best_epoch")
        for key, name in (("val_accuracy", "accuracy"), ("val_balanced_accuracy", "balanced accuracy")):
            value = run.get(key)
            if isinstance(value, (list, tuple)):
                value = value[best] if isinstance(best, int) and 0 <= best < len(value) else None
            if value is None and name == "accuracy":
                value = run.get("best_val_accuracy")
            if value is not None:
                out[name].append(float(value))
    return out


class ReportPanel(QWidget):
    """`show_metrics(metrics, runs=None)`; `clear()`. Widgets are public for tests."""

    def __init__(self, colors: tuple[str, str] = ("#23242b", "#f0f1f2"), parent: QWidget | None = None):
        super().__init__(parent)
        self._bg, self._fg = colors
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)

        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        layout.addWidget(self.summary)
        layout.addWidget(self.verdict)

        layout.addWidget(QLabel("Confusion matrix (rows: true class, columns: predicted)"))
        self.confusion = self._table()
        layout.addWidget(self.confusion)
        layout.addWidget(QLabel("Per class"))
        self.per_class = self._table()
        layout.addWidget(self.per_class)

        self.attribution = QLabel()
        self.attribution.setWordWrap(True)
        self.attribution_warnings = QLabel()
        self.attribution_warnings.setWordWrap(True)
        self.attribution_warnings.setStyleSheet(WARNING_STYLE)
        layout.addWidget(self.attribution)
        layout.addWidget(self.attribution_warnings)

        self.figure = Figure(figsize=(3.6, 1.9), dpi=100, facecolor=self._bg)
        self.figure.subplots_adjust(left=0.16, right=0.97, bottom=0.16, top=0.86)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(170)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.runs_axes = self.figure.add_subplot(1, 1, 1)
        layout.addWidget(self.canvas)
        self.metrics: dict | None = None
        self.runs: dict[str, list[float]] = {}
        self.clear()

    @staticmethod
    def _table() -> QTableWidget:
        table = QTableWidget()
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
        return table

    # ---------------------------------------------------------------------------------- view

    def clear(self) -> None:
        self.metrics = None
        self.summary.setText("No evaluation yet.")
        self.summary.setStyleSheet(MUTED_STYLE)
        self.verdict.setText("")
        self.verdict.setVisible(False)
        for table in (self.confusion, self.per_class):
            table.clear()
            table.setRowCount(0)
            table.setColumnCount(0)
        self.attribution.setText("")
        self.attribution_warnings.setText("")
        self.attribution_warnings.setVisible(False)
        self.show_runs(None)

    def show_metrics(self, metrics: dict, runs: Sequence[dict] | None = None) -> None:
        """Show a metrics dict (ClassificationMetrics.to_dict() or metrics.json) and, when
        given, the box plot of `runs` (runs.csv rows or History.runs)."""
        self.metrics = dict(metrics)
        m = self.metrics
        names = [str(n) for n in m.get("classes", [])]
        interval = m.get("balanced_accuracy_interval")
        lines = [
            f"accuracy {_percent(m.get('accuracy'))} (majority class {_percent(m.get('majority'))})",
            f"balanced accuracy {_percent(m.get('balanced_accuracy'))}"
            + (f" (95% interval {_percent(interval[0])}-{_percent(interval[1])})" if interval else ""),
            f"chance {_percent(m.get('chance'))} · {m.get('n', 0)} tiles",
        ]
        if m.get("dihedral_agreement") is not None:
            lines.append(f"same class under all 8 rotations/flips: {_percent(m['dihedral_agreement'])}")
        self.summary.setText("\n".join(lines))
        self.summary.setStyleSheet("")
        if m.get("verdict"):
            self.verdict.setText(str(m["verdict"]))
            self.verdict.setStyleSheet(WARNING_STYLE)
        elif m.get("warnings"):
            self.verdict.setText("Better than chance, but:\n" + "\n".join(f"• {w}" for w in m["warnings"]))
            self.verdict.setStyleSheet(WARNING_STYLE)
        else:
            self.verdict.setText("Clearly better than chance on these tiles.")
            self.verdict.setStyleSheet(GOOD_STYLE)
        self.verdict.setVisible(True)
        self._fill_confusion(names, m.get("confusion") or [])
        self._fill_per_class(names, m.get("per_class") or {})
        self._fill_attribution(m.get("attribution"))
        self.show_runs(runs)

    def _fill_confusion(self, names: list[str], confusion: list[list[int]]) -> None:
        table = self.confusion
        table.clear()
        table.setRowCount(len(names))
        table.setColumnCount(len(names))
        table.setHorizontalHeaderLabels(names)
        table.setVerticalHeaderLabels(names)
        for i, row in enumerate(confusion):
            total = sum(row) or 1
            for j, count in enumerate(row):
                item = QTableWidgetItem(str(int(count)))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                share = count / total
                # Shade by the share of the true class: the diagonal should be the dark cells.
                item.setBackground(QBrush(QColor(40, 100, 200, int(30 + 200 * share))))
                table.setItem(i, j, item)
        self._fit_height(table)

    def _fill_per_class(self, names: list[str], per_class: dict) -> None:
        table = self.per_class
        table.clear()
        columns = ("precision", "recall", "support", "predicted")
        table.setRowCount(len(names))
        table.setColumnCount(len(columns))
        table.setHorizontalHeaderLabels(list(columns))
        table.setVerticalHeaderLabels(names)
        for i, name in enumerate(names):
            row = per_class.get(name, {})
            for j, key in enumerate(columns):
                value = row.get(key)
                text = _percent(value) if key in ("precision", "recall") else str(value)
                table.setItem(i, j, QTableWidgetItem(text))
        self._fit_height(table)

    @staticmethod
    def _fit_height(table: QTableWidget) -> None:
        height = table.horizontalHeader().height() + 4
        height += sum(table.rowHeight(r) for r in range(table.rowCount()))
        table.setFixedHeight(min(height, 260))

    def _fill_attribution(self, checks: dict | None) -> None:
        if not checks or checks.get("randomisation_similarity", "absent") == "absent":
            self.attribution.setText("Attribution checks: not computed.")
            self.attribution.setStyleSheet(MUTED_STYLE)
            self.attribution_warnings.setVisible(False)
            return

        def number(key):
            value = checks.get(key)
            return "n/a" if value is None else f"{value:.2f}"

        self.attribution.setStyleSheet("")
        self.attribution.setText(
            "Attribution checks: similarity to a random-weight network "
            f"{number('randomisation_similarity')} (gradient x input), "
            f"{number('gradient_randomisation_similarity')} (gradient); "
            f"on cells {_percent(checks.get('foreground_share'))} of the attribution "
            f"({_percent(checks.get('foreground_pixel_share'))} of pixels); on the tile border "
            f"{_percent(checks.get('border_share'))} ({_percent(checks.get('border_pixel_share'))} "
            "of pixels)."
        )
        warnings = list(checks.get("warnings") or [])
        self.attribution_warnings.setText("\n".join(f"• {w}" for w in warnings))
        self.attribution_warnings.setVisible(bool(warnings))

    def show_runs(self, runs: Sequence[dict] | None) -> None:
        """Box plot with every run as a point (validation accuracy and balanced accuracy)."""
        self.runs = run_values(runs or [])
        ax = self.runs_axes
        ax.clear()
        ax.set_facecolor(self._bg)
        ax.tick_params(colors=self._fg, labelsize=7)
        for spine in ax.spines.values():
            spine.set_color(self._fg)
            spine.set_alpha(0.4)
        series = [(name, values) for name, values in self.runs.items() if values]
        n_runs = max((len(v) for _, v in series), default=0)
        visible = n_runs >= 2
        self.canvas.setVisible(visible)
        if visible:
            ax.boxplot(
                [v for _, v in series],
                widths=0.5,
                showfliers=False,
                medianprops={"color": self._fg},
                boxprops={"color": self._fg},
                whiskerprops={"color": self._fg},
                capprops={"color": self._fg},
            )
            for position, (name, values) in enumerate(series, start=1):
                colour = ACC_COLOR if name == "accuracy" else BALANCED_COLOR
                offsets = [position + 0.12 * ((k % 5) - 2) / 2 for k in range(len(values))]
                ax.scatter(offsets, values, s=14, color=colour, zorder=3)
            ax.set_xticks(range(1, len(series) + 1), [name for name, _ in series])
            chance = (self.metrics or {}).get("chance")
            if chance is not None:
                ax.axhline(chance, color=self._fg, alpha=0.5, linestyle="--", linewidth=1)
            ax.set_title(f"validation, {n_runs} runs", color=self._fg, fontsize=8)
        self.canvas.draw_idle()
