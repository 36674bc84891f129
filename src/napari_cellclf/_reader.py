"""npe2 reader: a thin wrapper over io.read_image.

CONTRACT (stub by the lead; the reader owner implements it):
Every image layer this plugin creates carries `metadata["cellclf"]` =
    {"source": <absolute path or sample name>, "field": <same id for all channels of one file>,
     "channel_index": i, "channel_name": name, "n_channels": C, "axes": "CYX"...,
     "pixel_size": [y, x] | None, "unit": "µm" | None}
plus `metadata["source_path"]` for humans. Multi-channel files open as one layer per channel
(channel_axis) so the widget can regroup them into a field by "field" and order them by
"channel_index". The sample-data functions use the same keys.
"""
from __future__ import annotations


def get_reader(path):
    raise NotImplementedError
