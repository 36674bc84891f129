"""Scale benchmark: bf16 vs fp32, dense vs per-tile maps, attribution cost, bounded-memory
streaming of a big TIFF, and many files on dask.distributed. Ratios within one run.

    nice python benchmarks/bench_scale.py                      # ~3-5 min on 2 idle cores
    nice python benchmarks/bench_scale.py --big 20000 --files 8 --seconds 20
    python benchmarks/bench_scale.py --model my.safetensors    # dense agreement on a trained net
    nice python benchmarks/bench_scale.py --skip dense dask --arch fast --big 20000 \
        --big-rows 4096 --big-dir /tmp/big      # cellclf predict/explain RSS, 20000 px wide

Rates are the best of interleaved rounds (each round runs every configuration once), so other
processes on a shared machine hit every configuration alike; the load average is printed.
Peak RSS of the big-image runs is that of `cellclf predict` / `cellclf explain` in fresh
subprocesses (ru_maxrss of each child, from os.wait4).
Not a test; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_cellclf import attribution, precision
from napari_cellclf.data import Normalization
from napari_cellclf.inference import Classifier
from napari_cellclf.model import build_model, forward_flops
from napari_cellclf.modelfile import ModelMeta, default_class_colors, load_model, save_model

CHANNELS = ["nuclei", "protein"]
CLASSES = ["Control", "Aggregates"]


def meta_for(tile: int, arch: str) -> ModelMeta:
    return ModelMeta(
        class_names=CLASSES,
        class_colors=default_class_colors(2),
        channel_names=CHANNELS,
        tile_size=tile,
        architecture=arch,
        normalization=Normalization(low=[100.0] * 2, high=[4000.0] * 2).to_dict(),
    )


def interleaved(configs: dict, seconds: float, rounds: int) -> dict[str, float]:
    """name -> run_once() returning items; best items/s over interleaved rounds."""
    for run in configs.values():
        run()
    best = {name: 0.0 for name in configs}
    per = seconds / rounds
    for _ in range(rounds):
        for name, run in configs.items():
            start, items = time.perf_counter(), 0
            while True:
                items += run()
                elapsed = time.perf_counter() - start
                if elapsed >= per:
                    break
            best[name] = max(best[name], items / elapsed)
    return best


def matmul_ceiling(dtype: torch.dtype, n: int = 2048) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(6):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best / 1e9


def section_precision_dense(args, model_factory, meta, field) -> dict:
    out = {}
    fp32 = Classifier(model_factory(), meta, device="cpu", precision="fp32")
    auto = Classifier(model_factory(), meta, device="cpu", precision="auto")
    print(f"auto precision: {auto.precision_report.summary()}")
    out["auto_precision"] = auto.precision_report.to_dict()
    tile = meta.tile_size
    n64 = fp32.prepare_field(field, tile).indices.size
    n16 = fp32.prepare_field(field, tile // 4).indices.size

    def predict(c, stride=None, dense=None, n=n64):
        return lambda: (c.predict_field_sync(field, stride=stride, dense=dense), n)[1]

    def explain(c):
        return lambda: (attribution.explain_field_sync(c, field), n64)[1]

    configs = {"predict fp32": predict(fp32), "explain fp32": explain(fp32)}
    if auto.precision != "fp32":
        configs.update(
            {f"predict {auto.precision}": predict(auto), f"explain {auto.precision}": explain(auto)}
        )
    best = auto if auto.precision != "fp32" else fp32
    configs.update(
        {
            "stride tile (per-tile)": predict(best, tile, n=n64),
            "stride tile/4 dense": predict(best, tile // 4, n=n16),
        }
    )
    print(f"measuring {len(configs)} configurations, {args.rounds} interleaved rounds...")
    rates = interleaved(configs, args.seconds, args.rounds)
    # Per-tile at stride tile/4 costs ~16x: one timed pass is enough.
    start = time.perf_counter()
    per_tile = best.predict_field_sync(field, stride=tile // 4, dense=False)
    per_tile_seconds = time.perf_counter() - start
    dense = best.predict_field_sync(field, stride=tile // 4)
    flops = forward_flops(model_factory(), len(CHANNELS), tile)
    for name, rate in rates.items():
        print(f"  {name:<28} {rate:8.1f} tiles/s  ({rate * flops / 1e9:6.1f} GFLOP/s per-tile equiv.)")
    out["rates"] = rates
    r = {
        "bf16_over_fp32": rates.get(f"predict {auto.precision}", rates["predict fp32"])
        / rates["predict fp32"],
        "explain_cost_fp32": rates["predict fp32"] / rates["explain fp32"],
    }
    if auto.precision != "fp32":
        r["explain_cost_" + auto.precision] = (
            rates[f"predict {auto.precision}"] / rates[f"explain {auto.precision}"]
        )
        r["explain_precision"] = auto.precision_report.explain_precision
    # Time for the field: stride tile/4 dense vs stride tile.
    t64 = n64 / rates["stride tile (per-tile)"]
    t16 = n16 / rates["stride tile/4 dense"]
    r["stride_quarter_dense_over_stride_tile"] = t16 / t64
    r["stride_quarter_per_tile_over_stride_tile"] = per_tile_seconds / t64
    difference = np.abs(dense.probabilities - per_tile.probabilities)
    confident = per_tile.confidence >= 0.75
    r["dense_vs_per_tile"] = {
        "same_class": float((dense.predicted == per_tile.predicted).mean()),
        "same_class_confident": float((dense.predicted == per_tile.predicted)[confident].mean())
        if confident.any()
        else None,
        "confident_share": float(confident.mean()),
        "mean_abs_dp": float(difference.mean()),
        "max_abs_dp": float(difference.max()),
    }
    out["ratios"] = r
    print(json.dumps(r, indent=1))
    return out


# ------------------------------------------------------------------------------ big image


def run_measured(command: list[str], workdir: Path) -> dict:
    """Run `command`; its wall time and peak RSS (os.wait4's rusage of that child alone:
    RUSAGE_CHILDREN would report the largest child so far), stdout and return code."""
    stdout, stderr = workdir / "child.out", workdir / "child.err"
    with stdout.open("w") as out, stderr.open("w") as err:
        start = time.perf_counter()
        times = workdir / "times.json"
        times.unlink(missing_ok=True)
        child = subprocess.Popen(
            command, stdout=out, stderr=err, env={**os.environ, "CELLCLF_BENCH_TIMES": str(times)}
        )
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": child.returncode,
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "work_seconds": json.loads(times.read_text())["work_seconds"] if times.exists() else None,
        "stdout": stdout.read_text(),
        "stderr": stderr.read_text()[-2000:],
    }


# `cellclf ARGS` in this interpreter, with the time from the model loaded (probe included) to
# the command's end written to $CELLCLF_BENCH_TIMES: the tile rate without start-up, which on a
# loaded machine varies too much to subtract.
CLI_CHILD = r"""
import json, os, sys, time
from napari_cellclf.cli import main, explain, predict
marks = {}
for module in (predict, explain):
    def timed(*a, _load=module.load_classifier, **k):
        loaded = _load(*a, **k)
        marks["loaded"] = time.perf_counter()
        return loaded
    module.load_classifier = timed
code = main(sys.argv[1:])
with open(os.environ["CELLCLF_BENCH_TIMES"], "w") as handle:
    json.dump({"work_seconds": time.perf_counter() - marks.get("loaded", float("nan"))}, handle)
sys.exit(code)
"""


def cli(*arguments: str) -> list[str]:
    return [sys.executable, "-c", CLI_CHILD, *arguments]


def write_big_tiff(path: Path, size: int, rows: int | None = None) -> None:
    """(2, rows or size, size) uint16 tiled BigTIFF, written tile by tile (the benchmark itself stays
    in bounded memory): smooth blobs on noise, so tiles differ like a real field's."""
    import tifffile

    rng = np.random.default_rng(0)
    partial = path.with_name(path.name + ".partial")  # an interrupted run leaves no broken file
    with tifffile.TiffWriter(partial, bigtiff=True) as writer:
        writer.write(
            _tiles(size, rng, rows or size),
            shape=(2, rows or size, size),
            dtype=np.uint16,
            tile=(512, 512),
            compression="zlib",
            photometric="minisblack",
            metadata={"axes": "CYX"},
        )
    partial.replace(path)


def section_big(args, model_path: Path, workdir: Path) -> dict:
    """`cellclf predict` and `cellclf explain` on big tiled TIFFs, each a fresh process: peak RSS
    and tiles/s (from the model loaded, precision probe included, to the command's end). A
    reference size small enough for io to read whole (<= io.LAZY_BYTES) runs in memory: its
    tiles/s is the rate the streamed runs are compared with."""
    from napari_cellclf import io

    big_dir = Path(args.big_dir) if args.big_dir else workdir
    big_dir.mkdir(parents=True, exist_ok=True)
    reference = 2048  # 2 x 2048² uint16 = 16 MB: read whole
    sizes = sorted({reference, *args.big})
    results: dict = {"lazy_bytes": io.LAZY_BYTES, "load_average_start": os.getloadavg()}
    for size in sizes:
        rows = min(size, args.big_rows) if args.big_rows and size != reference else size
        tif = big_dir / f"big_{rows}x{size}.tif"
        if not tif.exists():
            write_big_tiff(tif, size, rows)
        # border="pad": every pixel covered
        tiles = (-(-size // args.tile_size)) * (-(-rows // args.tile_size))
        for kind in args.big_commands:
            out = workdir / (f"out_{size}.csv" if kind == "predict" else f"map_{size}.tif")
            row = run_measured(cli(kind, str(model_path), str(tif), "--out", str(out)), workdir)
            out.unlink(missing_ok=True)
            if row["rc"] != 0:
                print(f"  {size}² {kind} failed:\n{row['stderr']}")
                continue
            row["tiles"], row["shape"] = tiles, [2, rows, size]
            row["streamed"] = 2 * 2 * rows * size > io.LAZY_BYTES  # io reads it lazily: streamed
            row["tiles_per_s"] = tiles / row["work_seconds"]
            row["load_average"] = os.getloadavg()
            del row["stdout"], row["stderr"]
            results[f"{size} {kind}"] = row
            print(
                f"  {rows}x{size} {kind:<7} {'streamed' if row['streamed'] else 'in memory'}: "
                f"{tiles} tiles, {row['seconds']:.1f} s ({row['tiles_per_s']:.0f} tiles/s after "
                f"{row['seconds'] - row['work_seconds']:.1f} s start-up), peak RSS {row['peak_rss_mb']:.0f} MB, load "
                f"{row['load_average'][0]:.1f}"
            )
    for kind in args.big_commands:
        base = results.get(f"{reference} {kind}")
        for size in sizes:
            row = results.get(f"{size} {kind}")
            if base and row and size != reference:
                row["rate_vs_in_memory"] = row["tiles_per_s"] / base["tiles_per_s"]
                print(
                    f"  {row['shape'][1]}x{size} {kind}: {row['rate_vs_in_memory']:.2f}x the in-memory "
                    f"{reference}² rate (load {base['load_average'][0]:.1f} then, "
                    f"{row['load_average'][0]:.1f} now)"
                )
    return results


def _tiles(size: int, rng, rows: int):
    """Tiles of a (2, rows, size) image in TIFF tile order, generated lazily."""
    from scipy.ndimage import uniform_filter

    for _c in range(2):
        for _y in range(0, rows, 512):
            for _x in range(0, size, 512):
                blobs = uniform_filter(rng.random((512, 512), dtype=np.float32), 9)
                noise = rng.integers(0, 400, (512, 512))
                yield (np.clip(blobs - 0.45, 0, None) * 40000 + noise).astype(np.uint16)


# ------------------------------------------------------------------------------ dask


def section_dask(args, model_path: Path, workdir: Path) -> dict:
    import tifffile

    from napari_cellclf import distributed

    files = []
    rng = np.random.default_rng(1)
    for i in range(args.files):
        path = workdir / "files" / f"field_{i:03d}.tif"
        path.parent.mkdir(exist_ok=True)
        tifffile.imwrite(
            path,
            rng.integers(0, 4096, (2, 1024, 1024)).astype(np.uint16),
            photometric="minisblack",
            metadata={"axes": "CYX"},
        )
        files.append(path)
    results, outputs = {}, {}
    for label, kwargs in (("serial", {}), ("1 worker", {"workers": 1}), ("2 workers", {"workers": 2})):
        out = workdir / f"dask_{label.replace(' ', '_')}"
        threads = max(1, (os.cpu_count() or 1) // max(1, kwargs.get("workers", 1)))
        summary = distributed.predict_files(model_path, files, out, threads_per_worker=threads, **kwargs)
        outputs[label] = {p.name: p.read_bytes() for p in sorted(out.glob("*.csv"))}
        results[label] = {
            "seconds": summary.seconds,
            "tiles_per_s": summary.n_tiles / summary.seconds,
            "done": summary.count("done"),
        }
        print(f"  {label:<10} {summary.line()}  (torch threads per worker {threads})")
    same = all(outputs[k] == outputs["serial"] for k in outputs)
    results["identical_csvs"] = same
    print(f"  CSVs identical to the serial run (fp32): {same}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--arch", default="original")
    parser.add_argument("--model", type=Path, default=None, help="a trained model file")
    parser.add_argument("--field", type=int, default=768)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--big", type=int, nargs="+", default=[8192], help="sides of the big TIFFs (px), e.g. 8192 20000"
    )
    parser.add_argument(
        "--big-rows",
        type=int,
        default=None,
        help="rows of the big TIFFs (default: square); a band spans the width, so peak RSS depends "
        "on the width only and fewer rows measure it in less time",
    )
    parser.add_argument(
        "--big-commands", nargs="+", default=["predict", "explain"], choices=["predict", "explain"]
    )
    parser.add_argument(
        "--big-dir",
        default=None,
        help="where the big TIFFs are written and kept (default: a temporary folder)",
    )
    parser.add_argument("--files", type=int, default=6, help="files for the dask section")
    parser.add_argument("--skip", nargs="*", default=[], choices=["dense", "big", "dask"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    native, why = precision.cpu_bf16_support()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernels "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native} ({why}); "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    report: dict = {"native_bf16": native}
    ceilings = {"fp32": matmul_ceiling(torch.float32)}
    if native:
        ceilings["bf16"] = matmul_ceiling(torch.bfloat16)
    print("matmul ceilings (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in ceilings.items()))
    report["ceilings"] = ceilings

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        if args.model is not None:
            model, meta = load_model(args.model)
            state = {k: v.clone() for k, v in model.state_dict().items()}

            def factory():
                fresh = build_model(meta.architecture, meta.in_channels, meta.n_classes, meta.tile_size)
                fresh.load_state_dict(state)
                return fresh.eval()

            model_path = args.model
        else:
            meta = meta_for(args.tile_size, args.arch)

            def factory():
                torch.manual_seed(0)
                return build_model(args.arch, 2, 2, args.tile_size).eval()

            model_path = workdir / "model.safetensors"
            save_model(model_path, factory(), meta)
        rng = np.random.default_rng(0)
        field = rng.integers(0, 4096, (2, args.field, args.field)).astype(np.uint16)
        if args.model is not None:
            from napari_cellclf.synthetic import make_field

            field = make_field("puncta", (args.field, args.field), seed=11).image
        if "dense" not in args.skip:
            print("\n== precision, dense maps, attribution ==")
            report["engine"] = section_precision_dense(args, factory, meta, field)
            rates = report["engine"]["rates"]
            flops = forward_flops(factory(), 2, meta.tile_size)
            if native and "predict bf16" in rates:
                share = rates["predict bf16"] * flops / 1e9 / ceilings["bf16"]
                print(f"  bf16 inference = {share:.0%} of the bf16 matmul ceiling")
                report["engine"]["ratios"]["bf16_share_of_ceiling"] = share
        if "big" not in args.skip:
            print("\n== big images: cellclf predict / explain, each a fresh process ==")
            report["big"] = section_big(args, model_path, workdir)
        if "dask" not in args.skip:
            print("\n== many files: serial vs dask.distributed LocalCluster ==")
            report["dask"] = section_dask(args, model_path, workdir)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
