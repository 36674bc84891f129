"""The report panel shows a metrics dict: numbers beside balanced accuracy and chance, the
verdict, the confusion matrix, attribution warnings and the per-run box plot."""

from __future__ import annotations

from napari_cellclf._widget._report_panel import ReportPanel, run_values
from napari_cellclf.evaluation import classification_metrics


def _chance_metrics() -> dict:
    metrics = classification_metrics([0] * 45 + [1] * 5, [0] * 50, ["control", "treated"]).to_dict()
    metrics["dihedral_agreement"] = 0.75
    metrics["attribution"] = {
        "randomisation_similarity": 0.62,
        "gradient_randomisation_similarity": 0.1,
        "foreground_share": 0.7,
        "foreground_pixel_share": 0.2,
        "border_share": 0.4,
        "border_pixel_share": 0.23,
        "warnings": ["For tiles it calls 'treated', 40% falls on the border."],
    }
    return metrics


def test_report_panel_shows_metrics_verdict_confusion_and_runs(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    panel = ReportPanel()
    viewer.window.add_dock_widget(panel, name="Report")
    metrics = _chance_metrics()
    runs = [
        {
            "run": r,
            "seed": r,
            "best_epoch": 1,
            "val_accuracy": 0.5 + 0.01 * r,
            "val_balanced_accuracy": 0.48 + 0.02 * r,
        }
        for r in range(4)
    ]
    panel.show_metrics(metrics, runs=runs)

    text = panel.summary.text()
    assert "accuracy 90.0%" in text and "balanced accuracy 50.0%" in text and "chance 50.0%" in text
    assert "75.0%" in text  # dihedral agreement
    assert panel.verdict.isVisibleTo(panel)
    assert "not clearly better than chance" in panel.verdict.text().lower()
    assert panel.confusion.rowCount() == 2 and panel.confusion.columnCount() == 2
    assert panel.confusion.item(0, 0).text() == "45" and panel.confusion.item(1, 0).text() == "5"
    assert panel.confusion.horizontalHeaderItem(1).text() == "treated"
    assert panel.per_class.item(1, 1).text() == "0.0%"  # recall of 'treated'
    assert "border" in panel.attribution_warnings.text()
    assert panel.attribution_warnings.isVisibleTo(panel)
    assert panel.canvas.isVisibleTo(panel)
    assert len(panel.runs["balanced accuracy"]) == 4

    good = classification_metrics([0, 1] * 50, [0, 1] * 50, ["control", "treated"]).to_dict()
    panel.show_metrics(good)
    assert "clearly better than chance" in panel.verdict.text().lower()
    assert not panel.canvas.isVisibleTo(panel)  # one run: no box plot
    assert "not computed" in panel.attribution.text()
    panel.clear()
    assert panel.confusion.rowCount() == 0 and panel.metrics is None


def test_run_values_reads_history_runs_and_csv_rows():
    history = [
        {
            "best_epoch": 1,
            "val_accuracy": [0.4, 0.6],
            "val_balanced_accuracy": [0.5, 0.55],
            "best_val_accuracy": 0.6,
        }
    ]
    assert run_values(history) == {"accuracy": [0.6], "balanced accuracy": [0.55]}
    rows = [{"val_accuracy": "0.7", "val_balanced_accuracy": 0.65}]
    assert run_values(rows) == {"accuracy": [0.7], "balanced accuracy": [0.65]}


def test_report_panel_shows_cautions_of_a_model_better_than_chance(make_napari_viewer):
    viewer = make_napari_viewer()
    panel = ReportPanel()
    viewer.window.add_dock_widget(panel, name="Report")
    truth = [0] * 80 + [1] * 15 + [2] * 5
    predicted = [2] * 60 + [0] * 20 + [1] * 15 + [2] * 5
    panel.show_metrics(classification_metrics(truth, predicted, ["G1", "Prophase", "Anaphase"]).to_dict())
    assert "Better than chance, but" in panel.verdict.text()
    assert "'Anaphase'" in panel.verdict.text()
