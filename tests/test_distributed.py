"""Many files: serial, LocalCluster and a loopback scheduler give the same CSVs; reruns resume."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile
import torch

from napari_cellclf import distributed as dist
from napari_cellclf.data import Normalization
from napari_cellclf.model import build_model
from napari_cellclf.modelfile import ModelMeta, default_class_colors, save_model
from napari_cellclf.synthetic import make_field

TILE = 16


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    torch.manual_seed(0)
    meta = ModelMeta(
        class_names=["Control", "Aggregates"],
        class_colors=default_class_colors(2),
        channel_names=["nuclei", "protein"],
        tile_size=TILE,
        architecture="fast",
        normalization=Normalization(low=[20.0, 20.0], high=[1500.0, 600.0]).to_dict(),
    )
    model = root / "model.safetensors"
    save_model(model, build_model("fast", 2, 2, TILE), meta)
    images = []
    for seed in range(5):
        path = root / "images" / f"field_{seed}.tif"
        path.parent.mkdir(exist_ok=True)
        tifffile.imwrite(
            path,
            make_field("puncta", (64, 80 + 16 * seed), seed=seed).image,
            photometric="minisblack",
            metadata={"axes": "CYX"},
        )
        images.append(path)
    return model, images


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.csv"))}


def test_serial_then_resume_skips_finished_files(inputs, tmp_path):
    model, images = inputs
    first = dist.predict_files(model, images, tmp_path, stride=8)
    assert first.count("done") == 5 and first.count("failed") == 0, first.results
    written = outputs(tmp_path)
    assert sorted(written) == [f"field_{s}.csv" for s in range(5)]
    assert written["field_0.csv"].startswith(b"source,index,row,col")
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.csv")}
    (tmp_path / "field_3.csv").unlink()  # as if the run had been killed on this file
    again = dist.predict_files(model, images, tmp_path, stride=8)
    assert again.count("skipped") == 4 and again.count("done") == 1
    assert [r.source for r in again.results if r.status == "done"] == [str(images[3])]
    assert outputs(tmp_path) == written  # the redone file is the same as before
    for name, stamp in stamps.items():
        if name != "field_3.csv":
            assert (tmp_path / name).stat().st_mtime_ns == stamp  # not rewritten


def test_shards_split_the_inputs_and_merge_joins_them(inputs, tmp_path):
    model, images = inputs
    seen = []
    for index in range(3):
        summary = dist.predict_files(model, images, tmp_path, shard=f"{index}/3")
        seen += [r.source for r in summary.results]
    assert sorted(seen) == sorted(map(str, images)) and len(seen) == 5
    n_rows = dist.merge_csvs(tmp_path.glob("*.csv"), tmp_path / "all.txt")
    lines = (tmp_path / "all.txt").read_text().splitlines()
    assert len(lines) == n_rows + 1 and lines[0].startswith("source,")
    with pytest.raises(ValueError, match="I/N"):
        dist.parse_shard("3")
    with pytest.raises(ValueError, match="0 <= I < N"):
        dist.parse_shard("3/3")


def test_a_bad_file_fails_alone(inputs, tmp_path):
    model, images = inputs
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    summary = dist.predict_files(model, [*images[:2], broken], tmp_path / "out")
    assert summary.count("done") == 2 and summary.count("failed") == 1
    assert not (tmp_path / "out" / "broken.csv").exists()


def test_local_cluster_equals_serial(inputs, tmp_path):
    pytest.importorskip("distributed")
    model, images = inputs
    dist.predict_files(model, images, tmp_path / "serial", stride=8)
    summary = dist.predict_files(model, images, tmp_path / "cluster", stride=8, workers=2)
    assert summary.count("done") == 5, summary.results
    assert outputs(tmp_path / "cluster") == outputs(tmp_path / "serial")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_loopback_scheduler_and_two_workers_equal_serial(inputs, tmp_path):
    pytest.importorskip("distributed")
    model, images = inputs
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(dist.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                "127.0.0.1:0",
                "--no-show",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        for _ in range(2):
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        address,
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-dashboard",
                        "--nworkers",
                        "1",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        summary = dist.predict_files(model, images, tmp_path / "remote", stride=8, scheduler=address)
        assert summary.count("done") == 5, summary.results
        assert len({r.worker for r in summary.results}) >= 1
        dist.predict_files(model, images, tmp_path / "serial", stride=8)
        assert outputs(tmp_path / "remote") == outputs(tmp_path / "serial")
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def test_cli_out_dir_resumes_and_merge_joins(inputs, tmp_path, capsys):
    from napari_cellclf.cli import main

    model, images = inputs
    folder = tmp_path / "per_image"
    assert (
        main(["predict", str(model), *map(str, images), "--out-dir", str(folder), "--precision", "fp32"]) == 0
    )
    assert len(list(folder.glob("*.csv"))) == 5
    assert main(["predict", str(model), *map(str, images), "--out-dir", str(folder)]) == 0
    assert "0 done, 5 skipped" in capsys.readouterr().out
    assert main(["merge", str(folder), "--out", str(tmp_path / "all.csv")]) == 0
    rows = (tmp_path / "all.csv").read_text().splitlines()
    assert rows[0].startswith("source,") and len(rows) == 1 + sum(
        len(p.read_text().splitlines()) - 1 for p in folder.glob("*.csv")
    )
