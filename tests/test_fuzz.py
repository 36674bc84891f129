"""Hostile input through every `cellclf` command, in a child process with a memory limit.

Each case is a command line over files made in tmp_path (tests/hostile.py): decompression bombs,
truncations, tampered model headers, outputs that are inputs, FIFOs, instance masks. For every
case: exit status 2, exactly one `cellclf: error:` line that names the offending file, no
traceback, no other output on stderr, no file touched except the requested new output, no hang.

Speed: importing torch costs seconds, so the cases run in one child process (a worker calling
`cellclf`'s `main(argv)` for each case, its stdout/stderr captured per case, an alarm per case
against hangs). The child runs under RLIMIT_AS (address space): a bomb that allocated the image
it declares would fail there. Two cases also run as a plain `python -m napari_cellclf.cli`
subprocess under the same limit, so the console entry point is covered end to end.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile

import hostile
import napari_cellclf

# Address space for the child: torch + numpy + the tiny model need ~0.7 GiB here (VmPeak);
# every bomb below declares more than this, most of them ten times more.
MEMORY_LIMIT = 3 * 2**30
CASE_TIMEOUT = 60  # seconds per case: a hang fails instead of stalling the suite
SRC = str(Path(napari_cellclf.__file__).resolve().parents[1])


@dataclass
class Case:
    name: str
    argv: list[str]
    names: str  # a file name the error line must contain
    new_output: str | None = None  # the one path the command may create (it must not, on error)
    why: str = ""  # a word the error must contain (what was wrong), optional
    extra: dict = field(default_factory=dict)


def _limit_memory():  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CELLCLF_DEBUG", None)
    env["PYTHONWARNINGS"] = "default"  # a stray numpy/torch warning must show up here
    return env


WORKER = textwrap.dedent("""
    import contextlib, io, json, resource, signal, sys, traceback
    from napari_cellclf.cli import main

    class Hang(Exception):
        pass

    def alarm(signum, frame):
        raise Hang()

    signal.signal(signal.SIGALRM, alarm)
    cases, timeout = json.load(open(sys.argv[1])), int(sys.argv[3])
    results = {}
    for name, argv in cases.items():
        out, err = io.StringIO(), io.StringIO()
        signal.alarm(timeout)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(argv)
        except Hang:
            rc = "hang"
        except BaseException:
            rc = "escaped"
            err.write(traceback.format_exc())
        finally:
            signal.alarm(0)
        results[name] = {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}
        results[name]["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        json.dump(results, open(sys.argv[2], "w"))
""")


def _snapshot(root: Path) -> dict[str, dict[str, tuple]]:
    """Per case folder, every entry in it: kind, size, mtime and inode (a replaced file gets a
    new inode)."""
    state: dict[str, dict[str, tuple]] = {}
    for path in sorted(root.rglob("*")):
        info = os.lstat(path)
        case = path.relative_to(root).parts[0]
        state.setdefault(case, {})[str(path)] = (
            stat.S_IFMT(info.st_mode),
            info.st_size,
            info.st_mtime_ns,
            info.st_ino,
        )
    return state


def _case_folder(case: Case, root: Path) -> str:
    for arg in case.argv:
        if arg.startswith(str(root)):
            return Path(arg).relative_to(root).parts[0]
    raise AssertionError(f"case {case.name} names no file of its own")


# --------------------------------------------------------------------------------------------
# the files


def _tiny_model(folder: Path) -> Path:
    import torch

    from napari_cellclf import modelfile
    from napari_cellclf.model import build_model

    torch.manual_seed(0)
    # 24 px: the "fast" net's weights have the same shapes for every tile size from 24 px up.
    model = build_model("fast", 1, 2, 24)
    meta = modelfile.ModelMeta(
        class_names=["Control", "Treated"],
        class_colors=modelfile.default_class_colors(2),
        channel_names=["ch0"],
        tile_size=24,
        architecture="fast",
        normalization={"mode": "dataset", "low": [0.0], "high": [1000.0], "percentiles": [1.0, 99.8]},
        extra={"cli": {"layout": "labels", "mode": "tile", "stride": None, "data": "x"}},
    )
    return modelfile.save_model(folder / "model.safetensors", model, meta)


def _image(path: Path, shape=(48, 48), dtype=np.uint16) -> Path:
    data = np.random.default_rng(1).integers(0, 1000, shape).astype(dtype)
    tifffile.imwrite(path, data)
    return path


def _label_folder(folder: Path, labels: np.ndarray) -> Path:
    folder.mkdir()
    _image(folder / "field.tif", labels.shape)
    tifffile.imwrite(folder / "field_labels.tif", labels)
    return folder


def _truncated_tiff(folder: Path) -> Path:
    path = _image(folder / "cut.tif", (256, 256))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _cases(root: Path) -> list[Case]:
    cases: list[Case] = []

    def folder(name: str) -> Path:
        path = root / name
        path.mkdir()
        return path

    def model_in(where: Path) -> Path:
        return _tiny_model(where)

    # -- images that must be refused by the reader, through predict and explain
    readers = {
        "deflate_bomb": (hostile.deflate_bomb_tiff, "decompression bomb"),
        "tiled_bomb": (hostile.tiled_bomb_tiff, "decompression bomb"),
        "jpeg_bomb": (hostile.jpeg_bomb, "65500 x 65500"),
        "jpeg_bomb_small": (lambda d: hostile.jpeg_bomb(d, 16000, 16000), "decompression bomb"),
        "png_bomb": (hostile.png_bomb, "100000 x 100000"),
        "truncated_jpeg": (hostile.truncated_jpeg, "truncated"),
        "truncated_tiff": (_truncated_tiff, "truncated"),
        "ome_lies": (hostile.ome_more_planes_than_stored, "stores only 2"),
        "nan_tiff": (hostile.nan_tiff, "NaN"),
    }
    for name, (make, why) in readers.items():
        where = folder(name)
        model, image = model_in(where), make(where)
        cases.append(
            Case(
                f"predict_{name}",
                ["predict", str(model), str(image), "--out", str(where / "new.csv")],
                image.name,
                str(where / "new.csv"),
                why,
            )
        )
        where = folder(name + "_explain")
        model, image = model_in(where), make(where)
        cases.append(
            Case(
                f"explain_{name}",
                ["explain", str(model), str(image), "--out", str(where / "map.tif")],
                image.name,
                str(where / "map.tif"),
                why,
            )
        )

    # -- model files that must be refused by the validator
    def tampered(name, edit, why):
        where = folder(name)
        model = edit(model_in(where))
        image = _image(where / "img.tif")
        cases.append(Case(f"model_{name}", ["predict", str(model), str(image)], model.name, None, why))

    def header(change):
        return lambda path: hostile.edit_model_header(path, change)

    tampered("tile_30000", header(lambda m: m.update(tile_size=30_000)), "tile_size")
    tampered("tile_1e6", header(lambda m: m.update(tile_size=1_000_000)), "tile_size")
    tampered("tile_256_same_shapes", header(lambda m: m.update(tile_size=256)), "checksum")
    tampered("flipped_byte", hostile.flip_weight_byte, "checksum")
    tampered("low_above_high", header(lambda m: m["normalization"].update(low=[5.0], high=[1.0])), "below")
    tampered("low_equals_high", header(lambda m: m["normalization"].update(low=[5.0], high=[5.0])), "below")
    tampered(
        "huge_normalisation",
        header(lambda m: m["normalization"].update(low=[-1e308], high=[1e308])),
        "beyond",
    )
    tampered("deep_nesting", hostile.deeply_nested_header, "nested")
    tampered(
        "truncated_model",
        lambda p: (p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), p)[1],
        "truncated",
    )
    where = folder("cli_not_a_dict")
    model = hostile.edit_model_header(model_in(where), lambda m: m.update(extra={"cli": "x"}))
    data = _label_folder(where / "data", np.ones((48, 48), np.uint8))
    cases.append(
        Case("model_cli_not_a_dict", ["evaluate", str(model), str(data)], model.name, None, "extra.cli")
    )

    # -- outputs that must never be written
    where = folder("out_is_model")
    model, image = model_in(where), _image(where / "img.tif")
    cases.append(
        Case(
            "predict_out_is_the_model",
            ["predict", str(model), str(image), "--out", str(model)],
            model.name,
            None,
            "input",
        )
    )
    where = folder("out_is_image")
    model, image = model_in(where), _image(where / "img.tif")
    cases.append(
        Case(
            "predict_out_is_the_image",
            ["predict", str(model), str(image), "--out", str(image)],
            image.name,
            None,
            "input",
        )
    )
    where = folder("explain_out_is_image")
    model, image = model_in(where), _image(where / "img.tif")
    cases.append(
        Case(
            "explain_out_is_the_image",
            ["explain", str(model), str(image), "--out", str(image)],
            image.name,
            None,
            "input",
        )
    )
    where = folder("out_is_link_to_image")
    model, image = model_in(where), _image(where / "img.tif")
    (where / "link.tif").symlink_to(image)
    cases.append(
        Case(
            "explain_out_is_a_link_to_the_image",
            ["explain", str(model), str(image), "--out", str(where / "link.tif")],
            "link.tif",
            None,
            "input",
        )
    )
    where = folder("out_is_hard_link")
    model, image = model_in(where), _image(where / "img.tif")
    os.link(image, where / "same.tif")
    cases.append(
        Case(
            "explain_out_is_a_hard_link_to_the_image",
            ["explain", str(model), str(where / "same.tif"), "--out", str(image)],
            image.name,
            None,
            "input",
        )
    )
    for command in ("predict", "explain"):
        where = folder(f"{command}_out_fifo")
        model, image = model_in(where), _image(where / "img.tif")
        os.mkfifo(where / "pipe")
        cases.append(
            Case(
                f"{command}_out_is_a_fifo",
                [command, str(model), str(image), "--out", str(where / "pipe")],
                "pipe",
                None,
                "FIFO",
            )
        )
        where = folder(f"{command}_out_device")
        model, image = model_in(where), _image(where / "img.tif")
        (where / "null").symlink_to("/dev/null")
        cases.append(
            Case(
                f"{command}_out_is_a_device",
                [command, str(model), str(image), "--out", str(where / "null")],
                "null",
                None,
                "device",
            )
        )
        where = folder(f"{command}_out_dir")
        model, image = model_in(where), _image(where / "img.tif")
        (where / "results").mkdir()
        cases.append(
            Case(
                f"{command}_out_is_a_folder",
                [command, str(model), str(image), "--out", str(where / "results")],
                "results",
                None,
                "folder",
            )
        )
    labels = np.zeros((48, 48), np.uint8)
    labels[:, :24], labels[:, 24:] = 1, 2
    where = folder("train_out_missing_folder")
    data = _label_folder(where / "data", labels)
    cases.append(
        Case(
            "train_out_in_a_missing_folder",
            ["train", str(data), "--out", str(where / "absent" / "m"), "--tile-size", "16", "--epochs", "1"],
            "absent",
            None,
            "does not exist",
            extra={"no_training": True},
        )
    )
    where = folder("train_out_dir")
    data = _label_folder(where / "data", labels)
    (where / "m.safetensors").mkdir()
    cases.append(
        Case(
            "train_out_is_a_folder",
            ["train", str(data), "--out", str(where / "m"), "--tile-size", "16", "--epochs", "1"],
            "m.safetensors",
            None,
            "folder",
            extra={"no_training": True},
        )
    )

    # -- training data that must be refused up front
    where = folder("instance_mask")
    cells = (np.arange(96 * 96).reshape(96, 96) // 9 + 1).astype(np.uint16)  # 1,024 cell ids
    data = _label_folder(where / "data", cells)
    cases.append(
        Case(
            "train_on_an_instance_mask",
            ["train", str(data), "--out", str(where / "m"), "--tile-size", "16", "--epochs", "1"],
            "field_labels.tif",
            str(where / "m.safetensors"),
            "instance mask",
            extra={"no_training": True},
        )
    )
    where = folder("stray_label")
    stray = labels.astype(np.uint16)
    stray[3, 3] = 60_000
    data = _label_folder(where / "data", stray)
    cases.append(
        Case(
            "train_with_one_stray_label_value",
            ["train", str(data), "--out", str(where / "m"), "--tile-size", "16", "--epochs", "1"],
            "field_labels.tif",
            str(where / "m.safetensors"),
            "60000",
            extra={"no_training": True, "short": True},
        )
    )
    where = folder("huge_tile")
    data = _label_folder(where / "data", labels)
    cases.append(
        Case(
            "train_tile_size_100000",
            ["train", str(data), "--out", str(where / "m"), "--tile-size", "100000"],
            "--tile-size",
            str(where / "m.safetensors"),
            "512",
            extra={"no_training": True},
        )
    )
    return cases


# --------------------------------------------------------------------------------------------
# running them


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    cases_root = root / "cases"
    cases_root.mkdir()
    cases = _cases(cases_root)
    before = _snapshot(cases_root)
    (root / "cases.json").write_text(json.dumps({c.name: c.argv for c in cases}))
    (root / "worker.py").write_text(WORKER)
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "worker.py"),
            str(root / "cases.json"),
            str(root / "results.json"),
            str(CASE_TIMEOUT),
        ],
        check=False,
        env=_env(),
        preexec_fn=_limit_memory,
        capture_output=True,
        text=True,
        timeout=CASE_TIMEOUT * len(cases),
        stdin=subprocess.DEVNULL,
    )
    results = json.loads((root / "results.json").read_text()) if (root / "results.json").exists() else {}
    assert proc.returncode == 0 and len(results) == len(cases), (
        f"the worker died (status {proc.returncode}) after {len(results)} of {len(cases)} "
        f"cases: {proc.stderr[-3000:]}"
    )
    return {c.name: c for c in cases}, results, before, _snapshot(cases_root), cases_root


def _case_names():
    # The names only (the files are made once, by the fixture): build them in a scratch folder.
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        return [c.name for c in _cases(Path(scratch))]


CASE_NAMES = _case_names()


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_input_is_one_clear_error_and_touches_nothing(fuzz, name):
    cases, results, before, after, root = fuzz
    case, result = cases[name], results[name]
    stderr = result["stderr"]
    assert result["rc"] == 2, f"exit {result['rc']}; stderr: {stderr[-2000:]}"
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("cellclf: error:")]
    assert len(errors) == 1, stderr[-2000:]
    # nothing else on stderr but notes/progress: no warnings (numpy's or ours) before the error
    assert not [line for line in lines if "Warning" in line], stderr[-2000:]
    assert case.names in errors[0], errors[0]
    if case.why:
        assert case.why in errors[0], errors[0]
    assert ".tmp" not in errors[0]
    if case.extra.get("short"):
        assert len(errors[0]) < 400
    assert len(stderr) < 4000  # no 2 MB messages
    if case.extra.get("no_training"):
        assert "epoch" not in result["stdout"], "the error came after training"
    # no file touched: the same entries, sizes, times and inodes; no new output on error
    where = _case_folder(case, root)
    old, new = before[where], after[where]
    assert new == old, [k for k in set(old) | set(new) if old.get(k) != new.get(k)]
    if case.new_output:
        assert not Path(case.new_output).exists()
    # bounded memory: the worker's peak resident size after this case (torch itself ~0.3 GiB)
    assert result["maxrss_kib"] < 1.5 * 2**20, f"peak RSS {result['maxrss_kib'] / 2**20:.2f} GiB"


def test_the_console_entry_point_refuses_a_bomb_under_the_memory_limit(tmp_path):
    model = _tiny_model(tmp_path)
    for bomb in (hostile.png_bomb(tmp_path), hostile.deflate_bomb_tiff(tmp_path)):
        proc = subprocess.run(
            [sys.executable, "-m", "napari_cellclf.cli", "predict", str(model), str(bomb)],
            check=False,
            env=_env(),
            preexec_fn=_limit_memory,
            capture_output=True,
            text=True,
            timeout=CASE_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("cellclf: error:") == 1 and bomb.name in proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_good_file_still_works_under_the_same_limit(tmp_path):
    """The limit is not what refuses the bombs: a real image is classified within it."""
    model = _tiny_model(tmp_path)
    image = _image(tmp_path / "img.tif", (64, 64))
    out = tmp_path / "p.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_cellclf.cli", "predict", str(model), str(image), "--out", str(out)],
        check=False,
        env=_env(),
        preexec_fn=_limit_memory,
        capture_output=True,
        text=True,
        timeout=CASE_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr
    assert len(out.read_text().splitlines()) == 1 + 9  # 3 x 3 tiles of 24 px
