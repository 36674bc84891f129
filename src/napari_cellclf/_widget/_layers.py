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
    ROLE_LABELS,
    Field,
    derived_metadata,
    find_derived,
)

TRANSPARENT = (0.0, 0.0, 0.0, 0.0)

# Diverging with black in the middle, so additive blending leaves unattributed pixels untouched:
# evidence for the class glows orange, evidence against it blue.
ATTRIBUTION_COLORMAP = Colormap(
    colors=[(0.15, 0.55, 1.0, 1.0), (0.0, 0.0, 0.0, 1.0), (1.0, 0.5, 0.05, 1.0)],
    controls=[0.0, 0.5, 1.0],
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


def show_attribution(viewer, field: Field, attribution: np.ndarray, target: str):
    """Gradient x input over the original pixels: diverging, symmetric limits, additive."""
    attribution = np.asarray(attribution, dtype=np.float32)
    finite = np.abs(attribution[np.isfinite(attribution)])
    limit = float(np.percentile(finite, 99.5)) if finite.size else 0.0
    if not limit > 0:
        limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    name = f"{field.name} attribution"
    layer = find_derived(viewer.layers, field.id, ROLE_ATTRIBUTION)
    if layer is None:
        with keep_selection(viewer):
            layer = viewer.add_image(
                attribution,
                name=name,
                colormap=ATTRIBUTION_COLORMAP,
                blending="additive",
                contrast_limits=(-limit, limit),
                metadata=derived_metadata(field.id, ROLE_ATTRIBUTION),
                **field.layer_kwargs(),
            )
    else:
        layer.data = attribution
        layer.contrast_limits = (-limit, limit)
    layer.metadata["cellclf"]["target"] = target
    return layer
