"""Small Qt helpers shared by the panels."""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

from qtpy.QtCore import QObject, QRect, QSignalBlocker, Qt, QTimer
from qtpy.QtWidgets import QHBoxLayout, QLabel, QWidget

WARNING_STYLE = "color: #f0a33a;"
MUTED_STYLE = "color: #9aa0a6;"


def alive_only(method: Callable) -> Callable:
    """For slots connected to session (psygnal) signals: once Qt has deleted the widget, calls
    that still arrive (the Python object can outlive its C++ side) are dropped, not raised."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except RuntimeError as exc:
            if "deleted" in str(exc):
                return None
            raise

    return wrapper


@contextlib.contextmanager
def signals_blocked(*objects: QObject) -> Iterator[None]:
    """Set controls from code without their change signals echoing back into the session."""
    blockers = [QSignalBlocker(obj) for obj in objects]
    try:
        yield
    finally:
        for blocker in blockers:
            blocker.unblock()


def debouncer(parent: QWidget, msec: int, slot: Callable[[], None]) -> QTimer:
    """A single-shot timer: call `.start()` as often as you like, `slot` runs once after a pause."""
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(msec)
    timer.timeout.connect(slot)
    return timer


def row(*widgets: QWidget, stretch: bool = False) -> QHBoxLayout:
    layout = QHBoxLayout()
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    if stretch:
        layout.addStretch(1)
    return layout


def note_label(text: str = "", style: str = MUTED_STYLE) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet(style)
    return label


def set_note_text(label: QLabel, text: str) -> None:
    """Set a wrapped note's text and re-lay out the widgets around it, now. Inside the dock's
    scroll areas the enclosing layouts keep the height of the previous text (measured: the review
    box stayed 99 px for a text needing 131 px), clipping the last lines of a longer one."""
    label.setText(text)
    # room for every line at the label's width: Qt's height-for-width under-counts a text that
    # opens with a long unbreakable file stem (measured: 3 of 4 lines shown)
    width = max(label.contentsRect().width(), 1)
    flags = Qt.TextFlag.TextWordWrap | Qt.TextFlag.TextWrapAnywhere
    needed = label.fontMetrics().boundingRect(QRect(0, 0, width, 100_000), flags, text).height()
    margins = label.contentsMargins()
    label.setMinimumHeight(needed + margins.top() + margins.bottom() if text else 0)
    widget, top = label.parentWidget(), None
    while widget is not None:
        if widget.layout() is not None:
            widget.layout().invalidate()
            top = widget
        widget = widget.parentWidget()
    if top is not None:
        top.layout().activate()


def relayout(widget: QWidget) -> None:
    """Re-run the layouts of `widget` and everything in it. A tab's panel whose texts changed
    while another tab was shown (the model box during training) comes back laid out for the old
    texts, every box squeezed and its last lines clipped, until something else resizes it."""
    for child in [widget, *widget.findChildren(QWidget)]:
        if child.layout() is not None:
            child.layout().invalidate()
    if widget.layout() is not None:
        widget.layout().activate()


class Links:
    """The connections a view makes to things that outlive it (the session, the viewer's layer
    list), kept so that closing the dock can undo every one of them (`disconnect_all`): a closed
    panel left connected keeps redrawing deleted canvases ("FigureCanvasQTAgg has been deleted")."""

    def __init__(self) -> None:
        self._pairs: list[tuple[Any, Callable]] = []

    def connect(self, emitter, slot: Callable) -> None:
        """`emitter`: a psygnal signal, a psygnal SignalGroup or a napari EventEmitter."""
        emitter.connect(slot)
        self._pairs.append((emitter, slot))

    def disconnect_all(self) -> None:
        for emitter, slot in reversed(self._pairs):
            emitter.disconnect(slot)
        self._pairs = []
