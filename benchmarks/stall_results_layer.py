"""Longest main-thread stall while a classified field's result layers appear (issue 12 item 7).

    xvfb-run -a python benchmarks/stall_results_layer.py [--size 2048] [--tile 32] [--repeats 2]

A real, shown viewer with one SIZE x SIZE 2-channel field and a prediction of every tile (random
probabilities: the layer code does not care). A 5 ms heartbeat timer on the main thread records
the longest gap between its ticks, i.e. the longest the event loop was blocked, while:
- "one callback": every array and layer is made and added in one main-thread call
  (`_layers.show_prediction`, what the classify job's result callback did before), then drawn;
- "worker + steps": a thread makes arrays and layers (`_result_layers.build_results`), and the
  main thread adds one layer per event-loop turn (`apply_step`), as the classify job now does.
Each case runs on a fresh viewer, so "first results layer" costs are included every time; the
cases alternate, so machine load hits both alike. Not a test; nothing is asserted.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_cellclf._widget import _layers, _result_layers
    from napari_cellclf._widget._fields import fields_from_layers
    from napari_cellclf.inference import FieldPrediction
    from napari_cellclf.tiling import make_grid

    rng = np.random.default_rng(0)
    image = rng.random((2, args.size, args.size), dtype=np.float32)
    grid = make_grid((args.size, args.size), args.tile, None, border="pad")
    logits = rng.normal(size=(grid.n_tiles, 2)).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    prediction = FieldPrediction(grid, np.arange(grid.n_tiles), probabilities, ["Control", "Treated"])
    colors = ["#0072b2", "#e69f00"]

    def fresh_viewer():
        viewer = napari.Viewer(show=True)
        for c in range(2):
            viewer.add_image(
                image[c],
                name=f"field [{'ab'[c]}]",
                blending="additive",
                metadata={
                    "cellclf": {
                        "field": "/f.tif",
                        "source": "/f.tif",
                        "channel_index": c,
                        "channel_name": "ab"[c],
                        "n_channels": 2,
                    }
                },
            )
        return viewer

    def settle(app, seconds=0.5):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.01)

    def measure(case: str) -> tuple[float, float]:
        viewer = fresh_viewer()
        app = QApplication.instance()
        settle(app, 1.0)
        [fld] = fields_from_layers(viewer.layers)
        gaps = {"last": time.perf_counter(), "max": 0.0}

        def tick():
            now = time.perf_counter()
            gaps["max"] = max(gaps["max"], now - gaps["last"])
            gaps["last"] = now

        timer = QTimer()
        timer.timeout.connect(tick)
        timer.start(5)
        settle(app, 0.3)
        gaps["max"] = 0.0
        start = time.perf_counter()
        if case == "one callback":
            QTimer.singleShot(0, lambda: _layers.show_prediction(viewer, fld, prediction, colors))
            settle(app, 0.2)
        else:
            steps: list = []

            def work():
                results = _result_layers.build_results(
                    fld.id, fld.name, prediction, colors, fld.layer_kwargs()
                )
                for step in _result_layers.display_steps(results):
                    steps.append(step)  # as the worker's `yielded` signal delivers it

            thread = threading.Thread(target=work)
            thread.start()
            while thread.is_alive() or steps:
                if steps:
                    step = steps.pop(0)
                    QTimer.singleShot(0, lambda s=step: _result_layers.apply_step(viewer, [fld], s))
                app.processEvents()
                time.sleep(0.002)
        settle(app, 1.0)  # the first draws of the new layers
        total = time.perf_counter() - start
        timer.stop()
        assert len(viewer.layers) == 5, [ly.name for ly in viewer.layers]
        viewer.close()
        return gaps["max"], total

    for repeat in range(args.repeats):
        for case in ("one callback", "worker + steps"):
            stall, total = measure(case)
            print(
                f"repeat {repeat} {case:15s}: {args.size}^2 field, {grid.n_tiles} tiles: longest main-thread "
                f"stall {stall * 1000:.0f} ms (until drawn {total:.1f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
