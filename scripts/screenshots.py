"""README screenshots: the scripted demo (`cellclf demo --auto`) with a picture at each stage.

    xvfb-run -a python scripts/screenshots.py [--epochs 10] [--out docs]
    xvfb-run -a python scripts/screenshots.py --objects [--epochs 20] [--out docs]
    xvfb-run -a python scripts/screenshots.py --real ../shared/data/neubias/image_data

Drives the real widget through its own controls on the two bundled sample fields (opened through
the plugin's sample contributions, side by side): whole-image labels, a tiny training run,
Classify all fields, Next uncertain, the per-field readout, an explanation. Saves
docs/walk_train.png (labelled fields + training curves), docs/walk_review.png (classified tiles,
the uncertain tile framed, per-field readout) and docs/walk_explain.png (attribution map).
PNGs are downscaled to stay small in the repository.

--objects walks object mode instead: each field's cell masks (Open Sample adds them) chosen in the
Objects column, one brush click inside every fourth cell (its class read from the ground truth,
as the biologist's eye would), training on one tile per cell, Classify all, Next uncertain framing
the asked cell. Saves docs/walk_objects_label.png (labelled cells outlined in their class colour,
the Fields tab with the Objects column) and docs/walk_objects_review.png (cells filled with their
predicted class, the asked cell framed, the per-field share of cells per class).

--real DIR walks object mode on two real fields (NEUBIAS nuclear protein control and treated)
opened through the plugin's reader, segmented by a threshold: docs/walk_real_label.png and
docs/walk_real_review.png, the pictures README shows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from napari_cellclf._demo import ScriptedDemo, open_demo_viewer

LABELLED_ROWS = (1, 4, 8, 12)  # tile rows painted per field: 4 strokes across
MAX_WIDTH = 1200  # px: dock text still readable, each file under 300 KB


def clear_toasts() -> None:
    """Close the notification pop-ups (the log keeps them): they would cover the canvas."""
    from qtpy.QtWidgets import QApplication

    for widget in QApplication.allWidgets():
        if type(widget).__name__ == "NapariQtNotification":
            widget.close()


def save(viewer, path: Path) -> None:
    from PIL import Image

    clear_toasts()
    shot = np.asarray(viewer.screenshot(canvas_only=False, flash=False))
    image = Image.fromarray(shot[..., :3])
    if image.width > MAX_WIDTH:
        image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), Image.LANCZOS)
    image = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image.save(path, optimize=True)
    print(f"saved {path} ({path.stat().st_size // 1024} KB)")


class ScreenshotWalk(ScriptedDemo):
    def __init__(self, viewer, widget, epochs: int, out: Path, on_done):
        super().__init__(viewer, widget, epochs, None, on_done)
        self.out = out
        self.steps = iter(
            [self.label, self.train, self.after_train, self.classify, self.review, self.explain, self.finish]
        )

    def label(self) -> None:
        """Paint a few tile rows of each field with its class (the Paint button, then strokes a
        tile wide, as the brush leaves them): the rest stay unlabelled for Next uncertain."""
        w = self.widget
        w.classes_panel.table.item(1, 1).setText("Aggregates")
        fields = w.fields_panel
        tile = 64
        fields.tile_size.setValue(tile)
        fields.skip_background.setChecked(True)
        for name in [f.name for f in fields.fields]:
            fields.select_field(name)
            wanted = "2: Aggregates" if "puncta" in name.lower() else "1: Control"
            fields.paint_class.setCurrentIndex(fields.paint_class.findText(wanted))
            fields.paint_button.click()
            layer = self.viewer.layers.selection.active
            for row in LABELLED_ROWS:
                yy, xx = np.mgrid[row * tile : (row + 1) * tile, 0 : layer.data.shape[-1]]
                layer.data_setitem((yy.ravel(), xx.ravel()), layer.selected_label)
        self._next()

    def after_train(self) -> None:
        self.widget.tabs.setCurrentIndex(2)  # Train tab: curves + log
        active = self.viewer.layers.selection.active
        if active is not None and getattr(active, "mode", None) == "paint":
            active.mode = "pan_zoom"  # no brush cursor in the picture
        self.viewer.reset_view()  # both whole fields, side by side
        save(self.viewer, self.out / "walk_train.png")
        self._next()

    def review(self) -> None:
        panel = self.widget.results_panel
        self.widget.tabs.setCurrentIndex(3)
        self._click_when_enabled(panel.next_button)  # frames the least certain tile
        from qtpy.QtCore import QTimer

        QTimer.singleShot(500, self._save_review)

    def _save_review(self) -> None:
        save(self.viewer, self.out / "walk_review.png")
        self._next()

    def finish(self) -> None:
        self.widget.tabs.setCurrentIndex(3)
        attribution = [ly for ly in self.viewer.layers if ly.name.endswith("attribution")]
        if attribution:
            self.viewer.layers.selection.active = attribution[0]
        self._frame_both_fields()
        for line in self.summary():
            print(line)
        save(self.viewer, self.out / "walk_explain.png")
        self.on_done(0)


class ObjectWalk(ScreenshotWalk):
    """Object mode, driven through the dock: cells from a segmentation layer, not tiles."""

    LABEL_EVERY = 4  # cells clicked per field: every 4th, the rest left for the model to ask about
    TILE = 32  # px: one tile per cell, about two cell diameters of the sample fields

    def __init__(self, viewer, widget, epochs: int, out: Path, on_done):
        super().__init__(viewer, widget, epochs, out, on_done)
        self.steps = iter([self.label, self.after_label, self.train, self.classify, self.review, self.finish])

    def label(self) -> None:
        from qtpy.QtCore import QTimer
        from scipy.ndimage import find_objects

        from napari_cellclf.objects import object_classes

        w = self.widget
        w.classes_panel.table.item(1, 1).setText("Aggregates")
        fields = w.fields_panel
        fields.tile_size.setValue(self.TILE)
        for name in [f.name for f in fields.fields]:
            combo = fields.objects_combo(name)
            combo.setCurrentIndex(combo.findText(f"{name} cell masks"))
            cells = np.asarray(self.viewer.layers[f"{name} cell masks"].data)
            truth = np.asarray(self.viewer.layers[f"{name} ground truth"].data)
            table, cell_class = object_classes(cells, truth, 2)
            fields.select_field(name)
            fields.paint_button.click()
            layer = self.viewer.layers.selection.active
            boxes = find_objects(cells)
            for label, k in list(zip(table.labels.tolist(), cell_class.tolist()))[:: self.LABEL_EVERY]:
                click_inside(layer, cells, boxes[label - 1], label, k)
        QTimer.singleShot(1500, self._next)  # the dock recounts (and outlines) a moment later

    def after_label(self) -> None:
        self.widget.tabs.setCurrentIndex(0)  # Fields tab: the Objects column chosen per field
        table = self.widget.fields_panel.table
        table.horizontalScrollBar().setValue(table.horizontalScrollBar().maximum())
        active = self.viewer.layers.selection.active
        if active is not None and getattr(active, "mode", None) == "paint":
            active.mode = "pan_zoom"
        self._frame_both_fields()
        camera = getattr(self.viewer, "scene", self.viewer).camera
        camera.zoom *= 1.8  # near enough that the outlined cells and the dabs in them show
        save(self.viewer, self.out / getattr(self, "out_names", ("walk_objects_label.png",))[0])
        self._next()

    def train(self) -> None:
        self.widget.train_panel.learning_rate.setValue(3e-3)
        super().train()

    def _save_review(self) -> None:
        save(self.viewer, self.out / "walk_objects_review.png")
        self._next()

    def finish(self) -> None:
        for line in self.summary():
            print(line)
        print(self.widget.results_panel.review_note.text())
        self.on_done(0)


class RealCellsWalk(ObjectWalk):
    """Object mode on two real fields (NEUBIAS nuclear protein, control and treated: one 1192²
    16-bit nuclear stain each) opened through the plugin's reader, segmented by a threshold as a
    user's own masks would be, every other nucleus clicked with its field's condition."""

    LABEL_EVERY = 2
    NAMES = ("walk_real_label.png", "walk_real_review.png")

    def label(self) -> None:
        from qtpy.QtCore import QTimer
        from scipy.ndimage import find_objects

        from napari_cellclf.objects import measure_objects

        fields = self.widget.fields_panel
        fields.refresh_fields()
        fields.tile_size.setValue(self.TILE)
        for fld in list(fields.fields):
            masks = threshold_nuclei(np.asarray(self.viewer.layers[fld.name].data))
            layer = self.viewer.add_labels(masks, name=f"{fld.name} nuclei", **fld.layer_kwargs())
            layer.contour, layer.opacity = 1, 0.35  # the user's own view: faint outlines
        fields.refresh_fields()
        for fld in list(fields.fields):
            combo = fields.objects_combo(fld.name)
            combo.setCurrentIndex(combo.findText(f"{fld.name} nuclei"))
            masks = np.asarray(self.viewer.layers[f"{fld.name} nuclei"].data)
            condition = 2 if fld.name.endswith("treated") else 1  # classes: 1 Control, 2 Treated
            fields.select_field(fld.name)
            fields.paint_button.click()
            layer = self.viewer.layers.selection.active
            boxes = find_objects(masks)
            for label in measure_objects(masks).labels[:: self.LABEL_EVERY].tolist():
                click_inside(layer, masks, boxes[label - 1], label, condition)
        QTimer.singleShot(1500, self._next)

    def after_label(self) -> None:
        self.out_names = self.NAMES
        super().after_label()

    def _save_review(self) -> None:
        save(self.viewer, self.out / self.NAMES[1])
        self._next()


def threshold_nuclei(image: np.ndarray) -> np.ndarray:
    """The user's own segmentation, as a threshold makes it: Otsu on a 2 px Gaussian, objects of
    at least 50 px, one label each (touching nuclei stay merged, as they would)."""
    from skimage import filters, measure

    smooth = filters.gaussian(image.astype(np.float32), 2)
    labels = measure.label(smooth > filters.threshold_otsu(smooth))
    areas = np.bincount(labels.ravel())
    labels[areas[labels] < 50] = 0
    return measure.label(labels > 0).astype(np.int32)


def click_inside(layer, cells: np.ndarray, box, label: int, value: int, radius: int = 3) -> None:
    """A brush click (a small disc inside the cell) at the cell's pixel nearest its centroid,
    through Labels.data_setitem, where napari's brush ends."""
    ys, xs = np.nonzero(cells[box] == label)
    ys, xs = ys + box[0].start, xs + box[1].start
    nearest = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    inside = (ys - ys[nearest]) ** 2 + (xs - xs[nearest]) ** 2 <= radius**2
    layer.data_setitem((ys[inside], xs[inside]), value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", action="store_true", help="walk object mode (cells from masks)")
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (tiles), 20 (objects)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument(
        "--real",
        type=Path,
        metavar="DIR",
        help="object mode on two real fields: DIR holds NEUBIAS' "
        "xy_calibrated_16bit__nuclear_protein_{control,treated}.tif (../shared/data/neubias/image_data)",
    )
    args = parser.parse_args(argv)
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    args.out.mkdir(parents=True, exist_ok=True)
    if args.real is not None:
        viewer = napari.Viewer(title="napari-cellclf: two real fields")
        for condition in ("control", "treated"):
            path = args.real / f"xy_calibrated_16bit__nuclear_protein_{condition}.tif"
            if not path.is_file():
                parser.error(f"{path}: no such file")
            viewer.open(path, plugin="napari-cellclf")
        _, widget = viewer.window.add_plugin_dock_widget("napari-cellclf", "Cell classifier")
    else:
        viewer, widget = open_demo_viewer()
    viewer.window.resize(1600, 1000)
    code = {"code": 0}

    def done(c: int) -> None:
        code["code"] = c
        widget.session.jobs.cancel()
        viewer.close()
        QApplication.instance().quit()

    walk_class = RealCellsWalk if args.real else ObjectWalk if args.objects else ScreenshotWalk
    objects = args.objects or args.real is not None
    walk = walk_class(viewer, widget, args.epochs or (20 if objects else 10), args.out, done)
    QTimer.singleShot(500, walk.start)
    QTimer.singleShot(900_000, lambda: done(1))
    napari.run()
    return code["code"]


if __name__ == "__main__":
    sys.exit(main())
