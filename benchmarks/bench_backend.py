"""Is the private-op oneDNN backend worth keeping? The Classifier's paths, interleaved.

    nice python benchmarks/bench_backend.py [--arch original] [--seconds 40] [--rounds 8]

For one model, `Classifier.predict_field` (per-tile) and `attribution.explain_field` tiles/s with:
- oneDNN backend (private torch ops: fused conv+ReLU(+pool), packed weights), fp32 and bf16;
- public API: eager PyTorch (channels_last, inference_mode), fp32 and bf16 (torch.autocast);
- public API: torch.jit.trace + freeze + optimize_for_inference (fp32, inference only).
bf16 rows only where precision.py offers bf16 on this CPU. Rates are the best of interleaved
rounds (bench_engine.interleaved); the ratio that decides is oneDNN / best public, per precision.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from bench_engine import CHANNELS, CLASSES, interleaved
from napari_cellclf import attribution, training
from napari_cellclf.data import Normalization
from napari_cellclf.inference import Classifier
from napari_cellclf.model import ARCHITECTURES, build_model
from napari_cellclf.modelfile import ModelMeta, default_class_colors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default=training.TrainConfig().architecture, choices=ARCHITECTURES)
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--field", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--no-explain", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tile = args.tile_size
    rng = np.random.default_rng(0)
    field = rng.integers(0, 4096, (len(CHANNELS), args.field, args.field)).astype(np.uint16)
    meta = ModelMeta(
        class_names=CLASSES,
        class_colors=default_class_colors(len(CLASSES)),
        channel_names=CHANNELS,
        tile_size=tile,
        architecture=args.arch,
        normalization=Normalization(low=[100.0] * 2, high=[4000.0] * 2).to_dict(),
    )

    def model():
        torch.manual_seed(0)
        return build_model(args.arch, len(CHANNELS), len(CLASSES), tile).eval()

    classifiers = {
        "onednn fp32": Classifier(model(), meta, device="cpu", backend="onednn", precision="fp32"),
        "eager fp32": Classifier(model(), meta, device="cpu", backend="eager", precision="fp32"),
    }
    jit = Classifier(model(), meta, device="cpu", backend="eager", precision="fp32")
    probe = torch.zeros(jit.batch_size, len(CHANNELS), tile, tile).contiguous(
        memory_format=torch.channels_last
    )
    jit_name = None
    with torch.no_grad():
        try:
            frozen = torch.jit.freeze(torch.jit.trace(jit.model, probe))
        except RuntimeError as error:
            print(f"torch.jit.trace/freeze fails on this model: {str(error).splitlines()[0]}")
            frozen = None
        if frozen is not None:
            try:
                jit._net, jit_name = torch.jit.optimize_for_inference(frozen), "jit fp32"
            except RuntimeError as error:  # an op oneDNN cannot do: freeze alone
                print(f"optimize_for_inference fails: {str(error).splitlines()[0]}; freeze only")
                jit._net, jit_name = frozen, "jit(freeze) fp32"
    if jit_name is not None:
        try:
            jit.predict_field_sync(field[:, : 2 * tile, : 2 * tile])
            classifiers[jit_name] = jit
        except RuntimeError as error:
            print(f"{jit_name} fails when run on this model: {str(error).splitlines()[-1]}")
    bf16_onednn = Classifier(model(), meta, device="cpu", backend="onednn", precision="auto")
    if bf16_onednn.precision == "bf16":
        classifiers["onednn bf16"] = bf16_onednn
        eager_bf16 = Classifier(model(), meta, device="cpu", backend="eager", precision="bf16")
        classifiers["eager bf16"] = eager_bf16
    n_tiles = classifiers["eager fp32"].prepare_field(field).indices.size
    configs = {}
    for name, classifier in classifiers.items():
        configs[f"predict {name}"] = (lambda c: lambda: (c.predict_field_sync(field), n_tiles)[1])(classifier)
        if not args.no_explain and not name.startswith("jit"):
            configs[f"explain {name}"] = (
                lambda c: lambda: (attribution.explain_field_sync(c, field), n_tiles)[1]
            )(classifier)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}; {args.arch!r}, {tile} px, field {args.field}^2 "
        f"({n_tiles} tiles); default Classifier here: backend "
        f"{Classifier(model(), meta, device='cpu').backend}, precision {bf16_onednn.precision}"
    )
    rates = interleaved(configs, args.seconds, args.rounds)
    for name, rate in rates.items():
        others = "" if rate.others is None else f"  [others {rate.others:4.0%} CPU]"
        print(f"  {name:<22} best {rate.best:8.1f} tiles/s  median {rate.median:8.1f}{others}")
    for task in ("predict", "explain"):
        for precision in ("fp32", "bf16"):
            ours = rates.get(f"{task} onednn {precision}")
            public = [rates[k] for k in rates if k.startswith(task) and precision in k and "onednn" not in k]
            if ours is None or not public:
                continue
            best = max(public, key=lambda r: r.best)
            median = max(public, key=lambda r: r.median)
            print(
                f"{task} {precision}: oneDNN / best public = {ours.best / best.best:.3f} (best rounds), "
                f"{ours.median / median.median:.3f} (medians)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
