"""How fast the engine runs on this machine, against the naive loop and the hardware ceiling.

    python benchmarks/bench_engine.py [--tile-size 64] [--arch original] [--seconds 2]
                                      [--field 768] [--compile] [--threads N]

Prints, for one model:
- the fp32 matmul ceiling of this machine (large torch.mm, best of several), GFLOP/s;
- inference tiles/s: the naive way (one tile at a time, NCHW, autograd on) and ours (the real
  `Classifier.predict_field` path that CLI and widget use: normalisation, tile extraction,
  channels_last batches under inference_mode, softmax), with its default backend (oneDNN on CPU)
  and the eager one — optionally torch.compile too, whose compile time is reported because the
  user waits for it;
- training samples/s through `training.train` (augmentation, loss, optimiser step included);
- attribution (`attribution.explain_field`) tiles/s and its cost relative to inference;
- achieved GFLOP/s of each as a fraction of the ceiling (training counts 3x forward FLOPs).

Each rate is the best of several short rounds (the median is printed too): other processes on a
small machine steal cores, and the best round is the closest to what the code itself can do.
Not a test; nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

import numpy as np
import torch

from napari_cellclf import attribution, training
from napari_cellclf.data import Normalization, TileDataset
from napari_cellclf.inference import Classifier
from napari_cellclf.model import build_model, forward_flops
from napari_cellclf.modelfile import ModelMeta, default_class_colors

CHANNELS = ["nuclei", "protein"]
CLASSES = ["Control", "Aggregates"]


def rounds(run_once, seconds: float, n_rounds: int) -> list[float]:
    """Rates (items/s) of `n_rounds` rounds of about seconds/n_rounds each; run_once() -> items."""
    rates = []
    for _ in range(n_rounds):
        start, items = time.perf_counter(), 0
        while True:
            items += run_once()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / n_rounds:
                break
        rates.append(items / elapsed)
    return rates


def matmul_ceiling(n: int = 2048, repeats: int = 8) -> float:
    """Best fp32 GFLOP/s of an n x n @ n x n product (MKL / oneDNN use every core)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start))
    return best / 1e9


def describe(name: str, rates: list[float], flops_per_item: float, ceiling: float,
             unit: str = "tiles/s") -> float:
    best = max(rates)
    gflops = best * flops_per_item / 1e9
    print(f"  {name:<44} {best:8.1f} {unit}  (median {statistics.median(rates):7.1f})  "
          f"{gflops:6.1f} GFLOP/s = {gflops / ceiling:5.1%} of ceiling")
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--arch", default="original", choices=["original", "fast"])
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="time per measured configuration (default 2)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per configuration")
    parser.add_argument("--field", type=int, default=768, help="side of the square test field")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="inference batch (default: the Classifier's memory-based choice)")
    parser.add_argument("--compile", action="store_true",
                        help="also measure Classifier(backend='compile'), compile time included")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    tile = args.tile_size
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    field = rng.integers(0, 4096, (len(CHANNELS), args.field, args.field)).astype(np.uint16)
    meta = ModelMeta(class_names=CLASSES, class_colors=default_class_colors(len(CLASSES)),
                     channel_names=CHANNELS, tile_size=tile, architecture=args.arch,
                     normalization=Normalization(low=[100.0, 100.0], high=[4000.0, 4000.0]).to_dict())

    def fresh_model():
        torch.manual_seed(0)
        return build_model(args.arch, len(CHANNELS), len(CLASSES), tile)

    flops = forward_flops(fresh_model(), len(CHANNELS), tile)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"model {args.arch!r}, {tile} px tiles, {len(CHANNELS)} channels: "
          f"{flops / 1e6:.1f} MFLOP per tile forward; field {args.field}x{args.field} px")
    ceiling = matmul_ceiling()
    print(f"fp32 matmul ceiling (2048^3 torch.mm, best of 8): {ceiling:.1f} GFLOP/s\n")

    print("inference")
    # Naive: what a first script does — a plain model, one tile per call, NCHW, autograd on.
    naive_model = fresh_model().eval()
    normalization = Normalization.from_dict(meta.normalization)
    naive_tiles = torch.from_numpy(normalization.apply(
        field[:, :tile * 4, :tile * 4].reshape(2, 4, tile, 4, tile).transpose(1, 3, 0, 2, 4)
        .reshape(16, 2, tile, tile)))

    def naive_once() -> int:
        for n in range(len(naive_tiles)):
            torch.softmax(naive_model(naive_tiles[n:n + 1]), dim=1)
        return len(naive_tiles)

    naive_once()
    naive = describe("naive (1 tile/call, NCHW, autograd on)",
                     rounds(naive_once, args.seconds, args.rounds), flops, ceiling)

    classifier = Classifier(fresh_model(), meta, device="cpu", batch_size=args.batch_size)
    eager = Classifier(fresh_model(), meta, device="cpu", batch_size=args.batch_size,
                       backend="eager")
    n_tiles = classifier.prepare_field(field).indices.size

    def predict(which: Classifier):
        def once() -> int:
            which.predict_field_sync(field)
            return n_tiles
        once()
        return once

    eager_rate = describe(f"Classifier, eager backend (batch {eager.batch_size})",
                          rounds(predict(eager), args.seconds, args.rounds), flops, ceiling)
    ours = describe(f"Classifier, default: {classifier.backend} (batch {classifier.batch_size})",
                    rounds(predict(classifier), args.seconds, args.rounds), flops, ceiling)

    # Where the rest of the time goes: preparing the field and cutting tiles, without the model.
    def prepare_once() -> int:
        prepared = classifier.prepare_field(field)
        for start in range(0, n_tiles, classifier.batch_size):
            prepared.tiles(prepared.indices[start:start + classifier.batch_size])
        return n_tiles

    prepare_rate = max(rounds(prepare_once, args.seconds / 2, args.rounds))
    print(f"  (normalising the field + cutting tiles alone: {prepare_rate:.0f} tiles/s, "
          f"{ours / prepare_rate:.1%} of the default Classifier's time)")
    print(f"  speed-up over naive: {ours / naive:.2f}x (eager backend {eager_rate / naive:.2f}x)")

    if args.compile:
        compiled = Classifier(fresh_model(), meta, device="cpu", batch_size=args.batch_size,
                              backend="compile")
        start = time.perf_counter()
        compiled.predict_field_sync(field)
        first = time.perf_counter() - start
        fast = describe(f"Classifier, backend={compiled.backend!r}",
                        rounds(predict(compiled), args.seconds, args.rounds), flops, ceiling)
        compile_cost = first - n_tiles / fast
        print(f"  compile time ~{compile_cost:.1f} s (first call {first:.1f} s); "
              f"{fast / ours:.2f}x the default backend")

    print("\nattribution (gradient x input of the predicted class)")

    def explain(which: Classifier):
        def once() -> int:
            attribution.explain_field_sync(which, field)
            return n_tiles
        once()
        return once

    explain_eager = describe("explain_field, eager backend",
                             rounds(explain(eager), args.seconds, args.rounds), flops, ceiling)
    explain_ours = describe(f"explain_field, default: {classifier.backend}",
                            rounds(explain(classifier), args.seconds, args.rounds), flops, ceiling)
    print(f"  cost relative to inference: {ours / explain_ours:.2f}x "
          f"(eager backend: {eager_rate / explain_eager:.2f}x)")

    if not args.skip_training:
        print("\ntraining (training.train: augmentation, weighted loss, Adam step; 3x forward FLOPs)")
        batch = training.TrainConfig().batch_size
        n_samples = batch * 12
        tiles = rng.integers(0, 4096, (n_samples, len(CHANNELS), tile, tile)).astype(np.float32)
        dataset = TileDataset(tiles=tiles, labels=np.arange(n_samples) % 2,
                              groups=np.zeros(n_samples, dtype=np.int64),
                              positions=np.stack([np.arange(n_samples) // 16,
                                                  np.arange(n_samples) % 16], axis=1),
                              class_names=CLASSES, channel_names=CHANNELS)
        config = training.TrainConfig(epochs=max(1, args.rounds), val_fraction=0.0, patience=0,
                                      device="cpu", architecture=args.arch)
        rates: list[float] = []
        last_time, last_epoch = None, None
        for event in training.train(dataset, config, stop=threading.Event()):
            if isinstance(event, training.BatchProgress):
                now = time.perf_counter()
                # The first batch of each epoch is excluded: its time includes the epoch setup.
                if last_time is not None and event.epoch == last_epoch:
                    rates.append(batch / (now - last_time))
                last_time, last_epoch = now, event.epoch
        # Per-batch rates are noisy; report per-epoch means as rounds.
        per_epoch = np.array_split(np.array(rates), max(1, args.rounds))
        epoch_rates = [len(r) / float(np.sum(1 / r)) for r in per_epoch if len(r)]
        describe("training.train (batch %d)" % batch, epoch_rates, 3 * flops, ceiling,
                 unit="samples/s")

    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
