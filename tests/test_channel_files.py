"""datasets.channel_files: one file per channel grouped into one field by name and shape."""

from __future__ import annotations

from napari_cellclf.datasets.channel_files import group_channel_files, split_channel_name


def test_cellprofiler_channel_files_group_per_field_in_channel_order():
    names = ["/p/A01_R.tif", "/p/A01_D.tif", "/p/A01_F.tif", "/p/A02_D.tif", "/p/A02_F.tif", "/p/A03_D.tif"]
    groups = group_channel_files(names, [(64, 64)] * len(names))
    assert [(g.stem, g.channels, g.members) for g in groups] == [
        ("/p/A01", ("D", "F", "R"), (1, 2, 0)),
        ("/p/A02", ("D", "F"), (3, 4)),
    ]  # A03 has one channel: no group


def test_what_never_groups():
    # another shape, multi-channel files, wells without a channel suffix, labels beside an image
    assert group_channel_files(["a_w1.tif", "a_w2.tif"], [(64, 64), (32, 64)]) == []
    assert group_channel_files(["a_w1.tif", "a_w2.tif"], [(64, 64)] * 2, channel_counts=[2, 1]) == []
    assert group_channel_files(["plate_A01.tif", "plate_A02.tif"], [(64, 64)] * 2) == []
    assert split_channel_name("field_labels.tif") is None
    assert split_channel_name("x_ch00.ome.tif") == ("x", "ch00")
    groups = group_channel_files(["x_w10.tif", "x_w2.tif"], [(8, 8)] * 2)
    assert groups[0].channels == ("w2", "w10")
