"""Output files: one guard every command runs before it starts, and atomic writes. No Qt.

`check_output_path(out, inputs)` runs before any work (a missing folder is found before an
hour of training, not after): an output must not be one of the command's inputs (compared by
device and inode, so symlinks and hard links count), only a regular file or a new path may be
replaced (never a folder, a device such as /dev/null, a FIFO or a socket), and its folder must
exist and be writable. Errors are `OutputPathError` (a ValueError) naming the output.

`atomic_write(path, write)`: the bytes go to a temporary file beside the target, are fsynced,
and only then renamed over it: a full disk or a crash leaves either the old file or the new one
under the real name, never half a file. The result gets the permissions of a normally created
file (mkstemp's would be 0600, which makes a model file unreadable to colleagues on shared
storage). Errors name the target, never the hidden temporary file; temporary files that a
killed save left behind (older than STALE_TEMP_SECONDS) are removed by the next save.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import numpy as np

# A save that has not finished its temporary file within this long was killed.
STALE_TEMP_SECONDS = 15 * 60


class OutputPathError(ValueError):
    """An output path that must not be written; the message names it and says why."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output_path(out: str | Path, inputs: Iterable[str | Path] = (), *, option: str = "--out") -> Path:
    """`out` as a Path when a command may write it; OutputPathError otherwise (see module doc).
    `inputs`: the files (or folders) the same command reads."""
    out = Path(out).expanduser()
    try:
        info = os.stat(out)  # follows a symlink: what would really be replaced
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise OutputPathError(f"{option} {out}: cannot be checked ({exc.strerror})") from None
    if info is not None:
        for source in inputs:
            try:
                other = os.stat(Path(source).expanduser())
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino):
                same = "" if Path(source) == out else f" (the same file as {source})"
                raise OutputPathError(
                    f"{option} {out}: is an input of this command{same}; "
                    "writing it would destroy that input - choose another name"
                )
        if not stat.S_ISREG(info.st_mode):
            raise OutputPathError(
                f"{option} {out}: is {_kind(info.st_mode)}; only a regular file (or a new name) is written"
            )
        if not os.access(out, os.W_OK) or not info.st_mode & 0o222:  # root too: no w bit
            raise OutputPathError(f"{option} {out}: the file is read-only; it is not replaced")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.exists():
        raise OutputPathError(f"{option} {out}: folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputPathError(f"{option} {out}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {out}: folder {folder} is not writable")
    return out


def _default_mode() -> int:
    mask = os.umask(0)  # the only portable way to read the umask is to set it
    os.umask(mask)
    return 0o666 & ~mask


def _temp_pattern(name: str) -> re.Pattern:
    # tempfile.mkstemp(prefix=".<name>.", suffix=".tmp"): 8 characters from [a-z0-9_] between.
    return re.compile(rf"^\.{re.escape(name)}\.[a-z0-9_]{{8}}\.tmp$")


def remove_stale_temporaries(path: str | Path, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Delete the temporary files of earlier saves of `path` that were killed mid-write."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    pattern, now = _temp_pattern(path.name), time.time()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not pattern.match(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > older_than:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _failure(path: Path, exc: OSError) -> OSError:
    """The same error, naming the target instead of the hidden temporary file."""
    error = OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}")
    error.filename = str(path)
    return error


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(binary_handle)` on a temporary file beside `path`, then replace `path`.
    Only a regular file (or nothing) is replaced under `path`."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, f"cannot write {path}: folder {folder} does not exist", str(path)
        )
    if path.exists() and not path.is_file():
        raise OutputPathError(
            f"cannot write {path}: it is {_kind(os.stat(path).st_mode)}; only "
            "a regular file (or a new name) is replaced"
        )
    remove_stale_temporaries(path)
    try:
        fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _failure(path, exc) from None
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _default_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException as exc:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename in (None, temp_name):
            raise _failure(path, exc) from None
        raise
    _fsync_folder(folder)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable where the OS allows it (POSIX); harmless elsewhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def json_ready(value):
    """numpy scalars/arrays and tuples to plain JSON types; NaN/inf (a diverged loss) to None: what
    every JSON we write (model-file metadata, metrics.json) goes through."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
