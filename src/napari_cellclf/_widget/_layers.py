"""Arrays -> layers: the layers this widget creates, and how they are updated in place.

Every created layer sits exactly over its field (same scale and translate), says what it is in
`metadata["cellclf"] = {"role", "field"}`, and is found again by that on the next run, so
re-running updates the data of the existing layer instead of piling up new ones.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import numpy as np
from napari.layers import Labels
from napari.utils.colormaps import Colormap, DirectLabelColormap

from ._fields import (
    ROLE_ATTRIBUTION,
    ROLE_CLASSES,
    ROLE_LABELS,
    Field,
    derived_metadata,
    find_derived,
)

TRANSPARENT = (0.0, 0.0, 0.0, 0.0)

# Diverging, drawn translucent: its alpha rises with |value|, so pixels without evidence show the
# image unchanged, and the two saturated ends (blue against, red for the class) stay visible over
# dark and bright images alike (additive orange over a bright grey image stayed white).
ATTRIBUTION_COLORMAP = Colormap(
    colors=[
        (0.05, 0.3, 0.95, 0.95),
        (0.35, 0.6, 1.0, 0.45),
        (1.0, 1.0, 1.0, 0.0),
        (1.0, 0.45, 0.3, 0.45),
        (0.85, 0.05, 0.05, 0.95),
    ],
    controls=[0.0, 0.25, 0.5, 0.75, 1.0],
    name="cellclf attribution",
)


@contextmanager
def keep_selection(viewer):
    """Adding a layer selects it; result layers should not take the selection (and with it the
    widget's current field) away from what the user had selected."""
    active = viewer.layers.selection.active
    # Silence `active` while we add and restore: listeners (the widget's field follows the
    # active layer) should only hear about selections the user makes.
    with viewer.layers.selection.events.active.blocker():
        try:
            yield
        finally:
            if active is not None and active in viewer.layers:
                viewer.layers.selection.active = active


def class_colormap(colors: Sequence[str]) -> DirectLabelColormap:
    """Label value k (1-based) -> colors[k-1]; 0 and anything else transparent."""
    color_dict = {None: TRANSPARENT, 0: TRANSPARENT}
    color_dict.update({k + 1: c for k, c in enumerate(colors)})
    return DirectLabelColormap(color_dict=color_dict)


def labels_layer(viewer, field: Field, colors: Sequence[str], create: bool = True):
    """The "<field> labels" layer users paint classes on (value k = class k). An existing Labels
    layer of that name and shape (made by hand) is adopted."""
    layer = find_derived(viewer.layers, field.id, ROLE_LABELS)
    if layer is None:
        name = f"{field.name} labels"
        for candidate in viewer.layers:
            if (
                candidate.name == name
                and isinstance(candidate, Labels)
                and tuple(candidate.data.shape[-2:]) == field.shape
            ):
                layer = candidate
                layer.metadata.update(derived_metadata(field.id, ROLE_LABELS))
                break
    if layer is None:
        if not create:
            return None
        dtype = np.uint8 if len(colors) < 255 else np.uint16
        layer = viewer.add_labels(
            np.zeros(field.shape, dtype=dtype),
            name=f"{field.name} labels",
            opacity=0.6,
            metadata=derived_metadata(field.id, ROLE_LABELS),
            **field.layer_kwargs(),
        )
    layer.colormap = class_colormap(colors)
    return layer


def recolor_labels(viewer, colors: Sequence[str]) -> None:
    from ._fields import role_of

    for layer in viewer.layers:
        if role_of(layer) == ROLE_LABELS:
            layer.colormap = class_colormap(colors)


def show_prediction(viewer, field: Field, prediction, class_colors: Sequence[str]):
    """ "<field> classes", "<field> confidence" and "<field> uncertainty" at once, on the main
    thread (the classify job builds them in its worker instead: _result_layers)."""
    from ._result_layers import show_all

    return show_all(viewer, field, prediction, class_colors)


def attribution_name(field: Field, target: str) -> str:
    """ "<field>: <class> attribution", or "<field>: predicted class attribution"."""
    return f"{field.name}: {'predicted class' if target == 'predicted' else target} attribution"


def show_attribution(
    viewer, field: Field, attribution: np.ndarray, target: str, mode: str = "pixels", grid=None
):
    """Gradient x input over the original pixels, named after the class it explains (`target`;
    "predicted": each tile's own class): diverging, symmetric limits, translucent. While it is
    visible the field's class fill and painted labels are drawn as outlines only, so it is not
    hidden under them; hiding or removing it fills them again. `mode`: attribution_display."""
    from ..attribution_display import display_map, symmetric_limit

    raw = np.asarray(attribution, dtype=np.float32)
    shown = display_map(raw, mode, grid)
    limit = symmetric_limit(shown)
    name = attribution_name(field, target)
    layer = find_derived(viewer.layers, field.id, ROLE_ATTRIBUTION)
    if layer is None:
        with keep_selection(viewer):
            layer = viewer.add_image(
                shown,
                name=name,
                colormap=ATTRIBUTION_COLORMAP,
                blending="translucent",
                contrast_limits=(-limit, limit),
                metadata=derived_metadata(field.id, ROLE_ATTRIBUTION),
                **field.layer_kwargs(),
            )
        fid, key = field.id, layer.unique_id

        def on_removed(event) -> None:
            if getattr(event.value, "unique_id", None) == key:
                _RAW_ATTRIBUTION.pop(key, None)
                _outline_results(viewer, fid, False)

        layer.events.visible.connect(lambda event: _outline_results(viewer, fid, bool(event.source.visible)))
        viewer.layers.events.removed.connect(on_removed)
    else:
        layer.data = shown
        layer.contrast_limits = (-limit, limit)
        layer.name = name
        layer.visible = True
    _RAW_ATTRIBUTION[layer.unique_id] = raw
    layer.metadata["cellclf"].update(target=target, display=mode)
    _outline_results(viewer, field.id, True)
    return layer


def set_attribution_display(viewer, field: Field, mode: str, grid) -> bool:
    """Redraw the field's attribution layer as `mode` from the map it was given; False if none."""
    layer = find_derived(viewer.layers, field.id, ROLE_ATTRIBUTION)
    raw = _RAW_ATTRIBUTION.get(layer.unique_id) if layer is not None else None
    if raw is None:
        return False
    show_attribution(viewer, field, raw, layer.metadata["cellclf"].get("target", "predicted"), mode, grid)
    return True


# The map each attribution layer was given (by unique_id: it may show a smoothed or per-tile view).
_RAW_ATTRIBUTION: dict = {}
OUTLINE_PX = 2


def _outline_results(viewer, field_id: str, outline: bool) -> None:
    """The field's classes and painted labels as outlines (Labels.contour), or filled again."""
    from ._fields import field_id_of, role_of

    for layer in viewer.layers:
        if role_of(layer) in (ROLE_CLASSES, ROLE_LABELS) and field_id_of(layer) == field_id:
            layer.contour = OUTLINE_PX if outline else 0
