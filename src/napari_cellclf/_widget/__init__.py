"""The napari dock widget: layers in, engine generators in a worker thread, layers out.

Modules: `_session` (per-viewer state that outlives the widget; state only), `_controller` (the
actions panels call: train, classify, explain, import, load/save; the one list of fields),
`_preflight` (would a job be refused, and why: datasets' and the engine's rules), `_jobs`
(thread_worker glue, progress coalesced), `_training_log` (the log's sentences),
`_fields` (layers -> fields -> arrays), `_layers` (arrays -> layers), `_labelling` (tile counts,
training inputs), one module per panel, `_plot` (training curves), `_dialogs` (file/colour
dialogs, replaceable in tests).
"""

from ._dock import CellClassifierWidget

__all__ = ["CellClassifierWidget"]
