"""`cellclf demo`: napari with both synthetic sample fields and the Cell classifier dock.

    cellclf demo                                   # explore by hand
    cellclf demo --auto                            # watch it label, train, classify, explain
    cellclf demo --auto --screenshot shot.png      # the same, then save the window and quit

The scripted run uses only the widget's own controls (as a user would), on the bundled synthetic
samples: nothing is downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

PLUGIN = "napari-cellclf"
WIDGET = "Cell classifier"
SAMPLES = ("puncta", "diffuse")
GAP = 64  # pixels between the two fields, placed side by side so both are seen at once


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cellclf demo",
        description="napari with both synthetic sample fields and the Cell classifier dock.",
    )
    parser.add_argument(
        "--auto", action="store_true", help="run the scripted demo (label, train, classify, explain)"
    )
    parser.add_argument(
        "--screenshot",
        type=Path,
        metavar="PATH",
        help="after the scripted demo, save a screenshot of the window and quit (implies --auto)",
    )
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=600,
        metavar="SECONDS",
        help="with --screenshot: give up (exit 1) after this long (default 600)",
    )
    args = parser.parse_args(argv)
    if args.screenshot is not None:
        args.auto = True
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def open_demo_viewer(show: bool = True):
    """A viewer with both sample fields side by side and the classifier docked."""
    import napari

    viewer = napari.Viewer(title="napari-cellclf demo", show=show)
    first = viewer.open_sample(PLUGIN, SAMPLES[0])
    second = viewer.open_sample(PLUGIN, SAMPLES[1])
    image_layers = [ly for ly in first if ly.ndim == 2] or first
    width = float(image_layers[0].data.shape[-1] * image_layers[0].scale[-1])
    for layer in second:  # side by side: a field's derived layers follow its translate
        translate = list(layer.translate)
        translate[-1] += width + GAP * float(layer.scale[-1])
        layer.translate = translate
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    viewer.reset_view()
    return viewer, widget


class ScriptedDemo:
    """Drives the widget through its controls, one step per finished background job."""

    def __init__(self, viewer, widget, epochs: int, screenshot: Path | None, on_done: Callable[[int], None]):
        self.viewer, self.widget, self.epochs = viewer, widget, epochs
        self.screenshot, self.on_done = screenshot, on_done
        self.steps = iter([self.label, self.train, self.classify, self.explain, self.finish])
        widget.session.jobs.finished.connect(self._job_finished)

    def start(self) -> None:
        self._next()

    def _next(self) -> None:
        try:
            next(self.steps)()
        except Exception as exc:  # the demo must end (and say why) instead of hanging
            print(f"demo failed: {type(exc).__name__}: {exc}")
            self.on_done(1)

    def _job_finished(self, kind: str, ok: bool) -> None:
        from qtpy.QtCore import QTimer

        if not ok:
            print(f"demo stopped: {kind} did not finish")
            self.on_done(1)
            return
        QTimer.singleShot(200, self._next)  # let the layers draw before the next step

    def _click_when_enabled(self, button, waited_ms: int = 0) -> None:
        """Click as a user would once the dock has re-checked the job (it recounts labelled
        tiles a moment after a change); a button that stays off ends the demo with its reason."""
        from qtpy.QtCore import QTimer

        if button.isEnabled():
            button.click()
        elif waited_ms >= 10_000:
            print(f"demo failed: {button.text()!r} stayed off: {button.toolTip()}")
            self.on_done(1)
        else:
            QTimer.singleShot(100, lambda: self._click_when_enabled(button, waited_ms + 100))

    def label(self) -> None:
        w = self.widget
        classes = w.classes_panel.table
        classes.item(1, 1).setText("Aggregates")  # rename class 2, as a user would
        fields = w.fields_panel
        fields.tile_size.setValue(64)
        fields.skip_background.setChecked(True)
        for name in [f.name for f in fields.fields]:
            combo = fields.labels_combo(name)
            wanted = "whole image: Aggregates" if "puncta" in name.lower() else "whole image: Control"
            combo.setCurrentIndex(combo.findText(wanted))
        self._next()

    def summary(self) -> list[str]:
        """One line per classified field: how its tiles were classified."""
        lines = []
        for name, prediction in self.widget.session.predictions.values():
            classes = [prediction.class_names[k] for k in prediction.predicted]
            shares = ", ".join(
                f"{classes.count(c) / max(len(classes), 1):.0%} {c}" for c in prediction.class_names
            )
            lines.append(f"{name}: {len(classes)} {prediction.unit} classified: {shares}")
        return lines

    def _frame_both_fields(self) -> None:
        """Zoom in on where the two fields meet: cells, tile colours and attributions readable."""
        viewer = self.viewer
        viewer.reset_view()
        extent = viewer.layers.extent.world  # [[y0, x0], [y1, x1]]
        (y0, x0), (y1, x1) = extent[0][-2:], extent[1][-2:]
        # napari >= 0.9 keeps the camera in viewer.scene (viewer.camera warns there)
        scene = getattr(viewer, "scene", None)
        camera = scene.camera if scene is not None else viewer.camera
        camera.center = ((y0 + y1) / 2, (x0 + x1) / 2)
        camera.zoom *= 2.2

    def train(self) -> None:
        panel = self.widget.train_panel
        panel.epochs.setValue(self.epochs)
        panel.architecture.setCurrentIndex(panel.architecture.findData("fast"))
        self.widget.tabs.setCurrentIndex(2)
        self._click_when_enabled(panel.train_button)

    def classify(self) -> None:
        self.widget.tabs.setCurrentIndex(3)
        self._click_when_enabled(self.widget.results_panel.classify_all_button)

    def explain(self) -> None:
        fields = self.widget.fields_panel
        puncta = next((f.name for f in fields.fields if "puncta" in f.name.lower()), None)
        if puncta:
            fields.select_field(puncta)
        self._click_when_enabled(self.widget.results_panel.explain_button)

    def finish(self) -> None:
        self.widget.tabs.setCurrentIndex(2)  # the training curves make the best picture
        fields = self.widget.fields_panel
        fields.show_grid.setChecked(False)
        fields.update_grid()  # now, not after the settings debounce
        attribution = [ly for ly in self.viewer.layers if ly.name.endswith("attribution")]
        if attribution:  # its controls show the diverging colormap
            self.viewer.layers.selection.active = attribution[0]
        self._frame_both_fields()
        for line in self.summary():
            print(line)
        if self.screenshot is not None:
            self.screenshot.parent.mkdir(parents=True, exist_ok=True)
            self.viewer.screenshot(str(self.screenshot), canvas_only=False, flash=False)
            print(f"saved {self.screenshot}")
            self.on_done(0)


def main(argv=None) -> int:
    args = parse_args(argv)
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    viewer, widget = open_demo_viewer()
    viewer.window.resize(1600, 1000)
    exit_code = {"code": 0}
    if args.auto:

        def done(code: int) -> None:
            exit_code["code"] = code
            if args.screenshot is not None:
                widget.session.jobs.cancel()
                viewer.close()
                QApplication.instance().quit()

        demo = ScriptedDemo(viewer, widget, args.epochs, args.screenshot, done)
        QTimer.singleShot(500, demo.start)
        if args.screenshot is not None:  # unattended: never hang, whatever goes wrong

            def give_up() -> None:
                print(f"demo timed out after {args.timeout:g} s")
                done(1)

            watchdog = QTimer(widget)
            watchdog.setSingleShot(True)
            watchdog.timeout.connect(give_up)
            watchdog.start(int(args.timeout * 1000))
    napari.run()
    return exit_code["code"]


if __name__ == "__main__":
    raise SystemExit(main())
