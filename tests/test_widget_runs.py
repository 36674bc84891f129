"""The Train panel shows the run box plot once a model from several runs is in the session."""

from __future__ import annotations

from widget_support import open_widget


def _history(n_runs: int):
    from napari_cellclf.training import History

    runs = [
        {
            "seed": s,
            "train_accuracy": [0.6, 0.8],
            "val_accuracy": [0.7, 0.75 + 0.02 * s],
            "val_balanced_accuracy": [0.65, 0.7 + 0.02 * s],
            "best_epoch": 1,
            "chance": 0.5,
            "memorisation": None,
        }
        for s in range(n_runs)
    ]
    return History(runs=runs)


def test_box_plot_appears_after_a_multi_run_model_and_hides_for_one_run(make_napari_viewer):
    from napari_cellclf._widget._session import TrainedModel
    from napari_cellclf.model import build_model
    from napari_cellclf.modelfile import ModelMeta, default_class_colors

    meta = ModelMeta(
        class_names=["a", "b"],
        class_colors=default_class_colors(2),
        channel_names=["ch0"],
        tile_size=16,
        architecture="fast",
        normalization={"mode": "dataset", "low": [0.0], "high": [1.0]},
    )
    net = build_model("fast", 1, 2, 16)

    viewer = make_napari_viewer()
    _, widget = open_widget(viewer)
    panel = widget.train_panel
    assert panel.runs_plot.isHidden()
    widget.session.set_model(TrainedModel(net, meta, history=_history(3)))
    assert not panel.runs_plot.isHidden() and panel.runs_plot.n_runs == 3
    points = sum(len(c.get_offsets()) for c in panel.runs_plot.figure.axes[0].collections)
    assert points == 6
    widget.session.set_model(TrainedModel(net, meta, history=_history(1)))
    assert panel.runs_plot.isHidden()
