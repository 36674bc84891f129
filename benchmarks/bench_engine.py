"""How fast the engine runs on this machine, against the naive loop and the hardware ceiling.

    python benchmarks/bench_engine.py [--tile-size 64] [--arch original] [--seconds 10]
                                      [--rounds 5] [--field 768] [--compile] [--threads N]
                                      [--device cpu|cuda] [--precision auto|fp32|bf16]

Prints, for one model:
- the fp32 matmul ceiling of this machine (2048^3 torch.mm, best of several), GFLOP/s;
- inference tiles/s: the naive way (one tile at a time, NCHW, autograd on) and ours (the real
  `Classifier.predict_field` path that CLI and widget use: normalisation, tile extraction,
  channels_last batches under inference_mode, softmax) with its default backend (oneDNN on CPU)
  and with the eager one; optionally torch.compile too, whose compile time is reported because
  the user waits for it;
- attribution (`attribution.explain_field`) tiles/s and its cost relative to inference;
- training samples/s through `training.train` (augmentation, weighted loss, optimiser step);
- achieved GFLOP/s of each as a fraction of the ceiling (training counts 3x forward FLOPs).

Configurations are measured in interleaved rounds (each round runs every configuration once
for seconds/rounds), and each rate is the best round: on a small shared machine other processes
steal cores now and then, and interleaving gives every configuration the same chances. The CPU
share other processes took during the reported round is printed beside it (Linux only).
On `--device cuda` the same table runs on the GPU: the Classifier sizes batches by its GPU
activation budget, copies pinned host tiles with non_blocking transfers, runs under autocast
(bf16 where the GPU has it, else fp16, unless --precision fp32), the matmul ceiling is a CUDA
torch.mm, training uses the GPU with its AMP, and peak GPU memory is printed per section
(torch.cuda.max_memory_allocated; the cache is emptied after each job): one number for the
interleaved inference and attribution rounds, one for training.
Not a test; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from napari_cellclf import attribution, training
from napari_cellclf.data import Normalization, TileDataset
from napari_cellclf.inference import Classifier
from napari_cellclf.model import ARCHITECTURES, build_model, forward_flops
from napari_cellclf.modelfile import ModelMeta, default_class_colors

CHANNELS = ["nuclei", "protein"]
CLASSES = ["Control", "Aggregates"]


class CpuMeter:
    """CPU time used by other processes over an interval, as a share of all CPUs (Linux)."""

    def __init__(self):
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.n_cpus = os.cpu_count() or 1

    def _read(self):
        try:
            with open("/proc/stat") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
        except OSError:
            return None
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        own = os.times()
        return busy / self.ticks, own.user + own.system, time.perf_counter()

    def start(self):
        return self._read()

    def others_share(self, started, now=None) -> float | None:
        now = self._read() if now is None else now
        if started is None or now is None:
            return None
        busy, own, wall = (b - a for a, b in zip(started, now))
        return max(0.0, (busy - own) / (wall * self.n_cpus))


METER = CpuMeter()


@dataclass
class Rate:
    best: float  # items/s of the best round
    median: float
    others: float | None  # CPU share other processes took during the best round


def interleaved(configs: dict, seconds: float, n_rounds: int) -> dict[str, Rate]:
    """configs: name -> run_once() returning items done. Every round runs each configuration
    for seconds/n_rounds; rates per configuration over the rounds."""
    per_round = seconds / n_rounds
    results: dict[str, list[tuple[float, float | None]]] = {name: [] for name in configs}
    for run_once in configs.values():
        run_once()  # warm-up: allocations, oneDNN primitives
    for _ in range(n_rounds):
        for name, run_once in configs.items():
            meter, start, items = METER.start(), time.perf_counter(), 0
            while True:
                items += run_once()
                elapsed = time.perf_counter() - start
                if elapsed >= per_round:
                    break
            results[name].append((items / elapsed, METER.others_share(meter)))
    rates = {}
    for name, values in results.items():
        best, others = max(values, key=lambda v: v[0])
        rates[name] = Rate(best, statistics.median(v[0] for v in values), others)
    return rates


def matmul_ceiling(
    n: int = 2048, repeats: int = 10, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Best GFLOP/s of an n x n @ n x n product (MKL uses every core; cuBLAS on a GPU)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    sync()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync()
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best / 1e9


def show(name: str, rate: Rate, flops_per_item: float, ceiling: float, unit: str = "tiles/s") -> None:
    gflops = rate.best * flops_per_item / 1e9
    others = "" if rate.others is None else f"  [others {rate.others:4.0%} CPU]"
    print(
        f"  {name:<40} {rate.best:8.1f} {unit} (median {rate.median:7.1f})  "
        f"{gflops:6.1f} GFLOP/s = {gflops / ceiling:5.1%} of ceiling{others}"
    )


def gpu_memory(device: str, section: str) -> None:
    """On CUDA: the section's peak allocated memory, then the cache emptied and the peak reset,
    so each section's number is its own (a no-op on CPU)."""
    if not device.startswith("cuda"):
        return
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    print(f"  peak GPU memory, {section}: {peak:.0f} MiB (cache emptied after the job)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument(
        "--arch",
        default=training.TrainConfig().architecture,
        choices=ARCHITECTURES,
        help="default: training.TrainConfig's",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="time per measured configuration, over all rounds (default 10)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--field", type=int, default=768, help="side of the square test field")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="inference batch (default: the Classifier's memory-based choice)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also measure Classifier(backend='compile'), compile time included",
    )
    parser.add_argument(
        "--jit",
        action="store_true",
        help="also measure the public-API alternative torch.jit.trace + freeze + "
        "optimize_for_inference (inference only: frozen graphs have no gradient)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="Classifier precision (default auto: bf16 where the hardware has it and the probe agrees)",
    )
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)

    tile = args.tile_size
    rng = np.random.default_rng(0)
    # Speed does not depend on pixel values (dense kernels); a random 12-bit field will do.
    field = rng.integers(0, 4096, (len(CHANNELS), args.field, args.field)).astype(np.uint16)
    meta = ModelMeta(
        class_names=CLASSES,
        class_colors=default_class_colors(len(CLASSES)),
        channel_names=CHANNELS,
        tile_size=tile,
        architecture=args.arch,
        normalization=Normalization(low=[100.0] * 2, high=[4000.0] * 2).to_dict(),
    )

    def fresh_model():
        torch.manual_seed(0)
        return build_model(args.arch, len(CHANNELS), len(CLASSES), tile)

    flops = forward_flops(fresh_model(), len(CHANNELS), tile)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"model {args.arch!r}, {tile} px tiles, {len(CHANNELS)} channels: "
        f"{flops / 1e6:.1f} MFLOP per tile forward; field {args.field}x{args.field} px"
    )
    ceiling = matmul_ceiling(device=args.device)
    print(f"fp32 matmul ceiling (2048^3 torch.mm on {args.device}, best of 10): {ceiling:.1f} GFLOP/s")
    if cuda:
        print(
            f"GPU: {torch.cuda.get_device_name(args.device)}; bf16 matmul ceiling "
            f"{matmul_ceiling(device=args.device, dtype=torch.bfloat16):.1f} GFLOP/s"
        )

    # Naive: what a first script does: a plain model, one tile per call, NCHW, autograd on.
    naive_model = fresh_model().eval().to(args.device)
    normalization = Normalization.from_dict(meta.normalization)
    naive_tiles = torch.from_numpy(
        normalization.apply(
            field[:, : tile * 4, : tile * 4]
            .reshape(2, 4, tile, 4, tile)
            .transpose(1, 3, 0, 2, 4)
            .reshape(16, 2, tile, tile)
        )
    )

    def naive_once() -> int:
        for n in range(len(naive_tiles)):
            torch.softmax(naive_model(naive_tiles[n : n + 1].to(args.device)), dim=1).cpu()
        return len(naive_tiles)

    ours = Classifier(
        fresh_model(), meta, device=args.device, batch_size=args.batch_size, precision=args.precision
    )
    print(f"Classifier: {ours.precision_report.summary()}")
    eager = Classifier(
        fresh_model(),
        meta,
        device=args.device,
        batch_size=args.batch_size,
        precision=args.precision,
        backend="eager",
    )
    n_tiles = ours.prepare_field(field).indices.size

    def predict(classifier: Classifier):
        return lambda: (classifier.predict_field_sync(field), n_tiles)[1]

    def explain(classifier: Classifier):
        return lambda: (attribution.explain_field_sync(classifier, field), n_tiles)[1]

    def prepare_once() -> int:  # the engine's own overhead: normalise, cut tiles, no model
        prepared = ours.prepare_field(field)
        for start in range(0, n_tiles, ours.batch_size):
            prepared.tiles(prepared.indices[start : start + ours.batch_size])
        return n_tiles

    configs = {
        "naive": naive_once,
        "eager": predict(eager),
        "ours": predict(ours),
        "explain eager": explain(eager),
        "explain ours": explain(ours),
    }
    compiled = None
    if args.compile:
        compiled = Classifier(
            fresh_model(), meta, device=args.device, batch_size=args.batch_size, backend="compile"
        )
        start = time.perf_counter()
        compiled.predict_field_sync(field)
        first_call = time.perf_counter() - start
        configs["compiled"] = predict(compiled)
    jitted = None
    if args.jit:
        jitted = Classifier(fresh_model(), meta, device="cpu", batch_size=args.batch_size, backend="eager")
        probe = torch.zeros(jitted.batch_size, len(CHANNELS), tile, tile).contiguous(
            memory_format=torch.channels_last
        )
        with torch.no_grad():
            traced = torch.jit.trace(jitted.model, probe)
            jitted._net = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        configs["jit"] = predict(jitted)
    print(
        f"measuring {len(configs)} configurations in {args.rounds} interleaved rounds of "
        f"{args.seconds / args.rounds:.1f} s each...\n"
    )
    rates = interleaved(configs, args.seconds, args.rounds)
    prepare = interleaved({"prepare": prepare_once}, args.seconds / 4, 2)["prepare"]

    print("inference")
    show("naive (1 tile/call, NCHW, autograd on)", rates["naive"], flops, ceiling)
    show(f"Classifier, eager (batch {eager.batch_size})", rates["eager"], flops, ceiling)
    show(f"Classifier, default: {ours.backend} (batch {ours.batch_size})", rates["ours"], flops, ceiling)
    print(
        f"  speed-up over naive: {rates['ours'].best / rates['naive'].best:.2f}x "
        f"(eager backend {rates['eager'].best / rates['naive'].best:.2f}x); normalising the "
        f"field and cutting tiles alone runs at {prepare.best:.0f} tiles/s, "
        f"{rates['ours'].best / prepare.best:.1%} of the Classifier's time"
    )
    if compiled is not None:
        show(f"Classifier, backend='compile' -> {compiled.backend}", rates["compiled"], flops, ceiling)
        print(
            f"  first call {first_call:.1f} s, i.e. ~{first_call - n_tiles / rates['compiled'].best:.1f} s "
            f"of compilation; {rates['compiled'].best / rates['ours'].best:.2f}x the default"
        )

    if jitted is not None:
        show("Classifier, jit trace+freeze+optimize", rates["jit"], flops, ceiling)
        print(
            f"  default / jit: {rates['ours'].best / rates['jit'].best:.3f}x; "
            f"default / eager: {rates['ours'].best / rates['eager'].best:.3f}x (best rounds); "
            f"medians {rates['ours'].median / rates['jit'].median:.3f}x, "
            f"{rates['ours'].median / rates['eager'].median:.3f}x"
        )

    print("\nattribution (gradient x input of each tile's predicted class)")
    show("explain_field, eager", rates["explain eager"], flops, ceiling)
    show(f"explain_field, default: {ours.backend}", rates["explain ours"], flops, ceiling)
    print(
        f"  default / eager: {rates['explain ours'].best / rates['explain eager'].best:.3f}x (best), "
        f"{rates['explain ours'].median / rates['explain eager'].median:.3f}x (medians)"
    )
    print(
        f"  cost relative to inference: {rates['ours'].best / rates['explain ours'].best:.2f}x"
        f" (eager: {rates['eager'].best / rates['explain eager'].best:.2f}x)"
    )

    gpu_memory(args.device, "inference and attribution rounds (interleaved, so one number)")
    if not args.skip_training:
        train_rate = measure_training(args, rng, tile)
        print("\ntraining (training.train: augmentation, weighted loss, optimiser step)")
        show(
            f"training.train (batch {training.TrainConfig().batch_size})",
            train_rate,
            3 * flops,
            ceiling,
            unit="samples/s",
        )

        gpu_memory(args.device, "training")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return 0


def measure_training(args, rng, tile: int) -> Rate:
    """samples/s of the real training loop; rounds are epochs after the first (timed from the
    end of their first batch, which carries the epoch's setup, to the end of their last full
    batch)."""
    batch = training.TrainConfig().batch_size
    n_samples = batch * 8 + 1  # +1: the short last batch is the one left out
    tiles = rng.integers(0, 4096, (n_samples, len(CHANNELS), tile, tile)).astype(np.float32)
    dataset = TileDataset(
        tiles=tiles,
        labels=np.arange(n_samples) % 2,
        groups=np.zeros(n_samples, dtype=np.int64),
        positions=np.stack([np.arange(n_samples) // 32, np.arange(n_samples) % 32], axis=1),
        class_names=CLASSES,
        channel_names=CHANNELS,
    )
    config = training.TrainConfig(
        epochs=min(args.rounds, 3) + 1,
        val_fraction=0.0,
        patience=0,
        device=args.device,
        architecture=args.arch,
    )
    epochs: dict[int, list] = {}
    for event in training.train(dataset, config, stop=threading.Event()):
        if isinstance(event, training.BatchProgress) and event.batch < event.n_batches - 1:
            epochs.setdefault(event.epoch, []).append((time.perf_counter(), METER.start()))
    values = []
    for epoch, marks in sorted(epochs.items()):
        if epoch == 0 or len(marks) < 2:  # epoch 0 warms up
            continue
        (t0, first), (t1, last) = marks[0], marks[-1]
        values.append(((len(marks) - 1) * batch / (t1 - t0), METER.others_share(first, last)))
    best, others = max(values, key=lambda v: v[0])
    return Rate(best, statistics.median(v[0] for v in values), others)


if __name__ == "__main__":
    sys.exit(main())
