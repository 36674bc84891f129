"""The output-path guard and the atomic writer (issue 11: outputs that overwrite inputs)."""

from __future__ import annotations

import os
import stat
import time

import pytest

from napari_cellclf import _files
from napari_cellclf._files import OutputPathError, atomic_write, check_output_path


def _write(data: bytes):
    return lambda handle: handle.write(data)


def test_new_and_regular_outputs_pass(tmp_path):
    assert check_output_path(tmp_path / "new.csv") == tmp_path / "new.csv"
    (tmp_path / "old.csv").write_text("x")
    assert check_output_path(tmp_path / "old.csv", [tmp_path / "in.tif"]) == tmp_path / "old.csv"


def test_an_input_is_never_an_output_through_links(tmp_path):
    image = tmp_path / "img.tif"
    image.write_bytes(b"pixels")
    (tmp_path / "link.tif").symlink_to(image)
    os.link(image, tmp_path / "hard.tif")
    for out in (image, tmp_path / "link.tif", tmp_path / "hard.tif", tmp_path / "sub" / ".." / "img.tif"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OutputPathError, match="is an input of this command") as info:
            check_output_path(out, [tmp_path / "model.safetensors", image])
        assert str(out) in str(info.value)
    assert image.read_bytes() == b"pixels"


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_only_regular_files_are_replaced(tmp_path, kind):
    if kind == "fifo":
        out = tmp_path / "pipe"
        os.mkfifo(out)
    elif kind == "device":
        out = tmp_path / "null"
        out.symlink_to("/dev/null")
    else:
        out = tmp_path / "folder"
        out.mkdir()
    word = {"fifo": "a FIFO", "device": "a device", "folder": "a folder"}[kind]
    with pytest.raises(OutputPathError, match=word):
        check_output_path(out)
    with pytest.raises(OutputPathError, match=word):  # the writer itself refuses too
        atomic_write(out, _write(b"data"))
    mode = os.stat(out).st_mode
    assert not stat.S_ISREG(mode)
    assert os.listdir(tmp_path) == [out.name]  # no temporary file left


def test_missing_folder_and_read_only_targets(tmp_path):
    with pytest.raises(OutputPathError, match="folder .*absent does not exist"):
        check_output_path(tmp_path / "absent" / "m.safetensors")
    read_only = tmp_path / "ro.csv"
    read_only.write_text("keep")
    read_only.chmod(0o444)
    with pytest.raises(OutputPathError, match="read-only"):
        check_output_path(read_only)
    if os.geteuid() == 0:
        pytest.skip("root may write in any folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match="not writable"):
            check_output_path(locked / "m.safetensors")
        with pytest.raises(OSError) as info:  # the writer's own error: no temp name
            atomic_write(locked / "m.safetensors", _write(b"x"))
        assert ".tmp" not in str(info.value) and "m.safetensors" in str(info.value)
    finally:
        locked.chmod(0o700)


def test_a_killed_save_leaves_a_temporary_file_the_next_save_removes(tmp_path):
    target = tmp_path / "m.safetensors"
    stale = tmp_path / ".m.safetensors.ab12cd_9.tmp"
    fresh = tmp_path / ".m.safetensors.zz99yy00.tmp"  # a save in progress right now
    other = tmp_path / ".other.safetensors.ab12cd_9.tmp"
    for path in (stale, fresh, other):
        path.write_bytes(b"half")
    old = time.time() - _files.STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    atomic_write(target, _write(b"whole"))
    assert target.read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, fresh.name, other.name])
