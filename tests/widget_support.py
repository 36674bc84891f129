"""Helpers shared by the widget tests: fields as our reader makes them, painting as the brush does,
waiting on the widget's job runner with a timeout (never on a bare event loop)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

PLUGIN, WIDGET = "napari-cellclf", "Cell classifier"
CHANNELS = ("nuclei", "protein")


def add_field(
    viewer, name: str, image_cyx: np.ndarray, channel_names=CHANNELS, order=None, **layer_kwargs
) -> list:
    """One image layer per channel with the reader's `metadata["cellclf"]` contract."""
    layers = []
    for c in order or range(len(image_cyx)):
        meta = {
            "source": f"/data/{name}.tif",
            "field": f"/data/{name}.tif",
            "channel_index": c,
            "channel_name": channel_names[c],
            "n_channels": len(image_cyx),
            "axes": "CYX",
        }
        layers.append(
            viewer.add_image(
                image_cyx[c],
                name=f"{name} [{channel_names[c]}]",
                blending="additive",
                colormap=("blue", "green", "magenta")[c % 3],
                metadata={"cellclf": meta},
                **layer_kwargs,
            )
        )
    return layers


def open_widget(viewer):
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return dock, widget


def wait_idle(qtbot, widget, timeout_s: float = 60) -> None:
    qtbot.waitUntil(lambda: not widget.session.jobs.busy, timeout=int(timeout_s * 1000))


def paint_tiles(layer, tiles, tile_size: int, value: int) -> None:
    """Paint whole tiles (row, col) with `value` through Labels.data_setitem, the call napari's
    brush and fill tools end in (it records undo history and emits `paint`)."""
    for row, col in tiles:
        yy, xx = np.mgrid[row * tile_size : (row + 1) * tile_size, col * tile_size : (col + 1) * tile_size]
        layer.data_setitem((yy.ravel(), xx.ravel()), value)


def tile_truth(labels: np.ndarray, tile_size: int, min_cell_fraction: float = 0.25) -> np.ndarray:
    """(rows, cols) ground truth per tile: the majority class among cell pixels (values 1..K) when
    cells cover at least `min_cell_fraction` of the tile, else 0 (background, not scored)."""
    rows, cols = labels.shape[0] // tile_size, labels.shape[1] // tile_size
    truth = np.zeros((rows, cols), np.int64)
    for r in range(rows):
        for c in range(cols):
            block = labels[r * tile_size : (r + 1) * tile_size, c * tile_size : (c + 1) * tile_size]
            cells = block[block > 0]
            if cells.size >= min_cell_fraction * block.size:
                truth[r, c] = np.bincount(cells).argmax()
    return truth


@lru_cache(maxsize=None)
def synthetic_field(phenotype: str, size: int = 256, seed: int = 0):
    from napari_cellclf.synthetic import make_field

    return make_field(phenotype, shape=(size, size), seed=seed)


class Notifications:
    """napari notifications captured through the public notification manager."""

    def __init__(self):
        from napari.utils.notifications import notification_manager

        self.messages: list[tuple[str, str]] = []
        self._manager = notification_manager
        notification_manager.notification_ready.connect(self._on_notification)

    def _on_notification(self, event) -> None:
        note = event.value if hasattr(event, "value") else event
        self.messages.append((str(note.severity), str(note.message)))

    def errors(self) -> list[str]:
        return [m for s, m in self.messages if "error" in s.lower()]

    def warnings(self) -> list[str]:
        return [m for s, m in self.messages if "warning" in s.lower()]

    def close(self) -> None:
        self._manager.notification_ready.disconnect(self._on_notification)


def click_when_enabled(qtbot, button, timeout_s: float = 10) -> None:
    """Click a job button once its check allows it: the dock re-checks (recounts labelled tiles)
    a moment after the labels or settings change, as a user's next click would find it."""
    qtbot.waitUntil(button.isEnabled, timeout=int(timeout_s * 1000))
    button.click()
