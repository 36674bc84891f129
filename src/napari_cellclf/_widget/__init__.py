"""The napari dock widget: layers in, engine generators in a worker thread, layers out.

Modules: `_session` (per-viewer state that outlives the widget), `_jobs` (thread_worker glue),
`_fields` (layers -> fields -> arrays), `_layers` (arrays -> layers), `_labelling` (tile counts,
training inputs), one module per panel, `_plot` (training curves), `_dialogs` (file/colour
dialogs, replaceable in tests).
"""

from ._dock import CellClassifierWidget

__all__ = ["CellClassifierWidget"]
