"""Can gradient x input run in bf16 and keep precision.py's rank rule (>= 0.99)? Ratios, one run.

    nice python benchmarks/bench_attribution.py [--arch batchnorm] [--threads 1] [--rounds 4]

Splits the bf16 error between the two halves of an attribution: for the oneDNN net of one model
it computes the input gradient four ways, fp32 autograd (the reference, what explain_field runs
when bf16 is refused), all bf16 (what "bf16" attribution means today), a bf16 forward pass with
an fp32 backward pass, and an fp32 forward pass with a bf16 backward pass (the last two written
out by hand: masks and pool choices of one pass, the backward convolutions of the other), and
prints the mean per-tile Spearman rank correlation of each map with the reference on
precision.py's probe and on tiles of a synthetic field; then the rates of inference (fp32, bf16)
and of each attribution (fp32 at batch sizes 16/32/64) in interleaved rounds. Not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from napari_cellclf import attribution, precision
from napari_cellclf._onednn import _FusedConv, _FusedConvFunction
from napari_cellclf.data import Normalization
from napari_cellclf.inference import Classifier
from napari_cellclf.model import build_model
from napari_cellclf.modelfile import ModelMeta, default_class_colors
from napari_cellclf.synthetic import make_field


def split_gradient(forward_net, backward_net, fp32_net, x, target):
    """Input gradient with the forward pass (ReLU masks, max-pool choices) of `forward_net` and
    the backward convolutions of `backward_net` (oneDNN nets of one model, fp32 or bf16)."""
    forward_dtype = torch.bfloat16 if forward_net is not fp32_net else torch.float32
    backward_dtype = torch.bfloat16 if backward_net is not fp32_net else torch.float32
    saved, h = [], x.detach().to(forward_dtype)
    with torch.no_grad():
        for step in forward_net.steps:
            if not isinstance(step, _FusedConv):
                break
            output = step.convolve(h)
            if step.pool is None:
                saved.append((step, output, None, output.shape))
                h = output
            else:
                h, indices = torch.ops.aten.max_pool2d_with_indices(output, *step.pool_args)
                saved.append((step, h, indices, output.shape))
    tail = h.detach().float().requires_grad_(True)
    with torch.enable_grad():
        logits = tail
        for step in fp32_net.steps[len(saved) :]:
            logits = _FusedConvFunction.apply(logits, step) if isinstance(step, _FusedConv) else step(logits)
        chosen = logits.detach().argmax(dim=1) if target is None else target
        (grad,) = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), tail)
    grad = grad.to(backward_dtype)
    for k in range(len(saved) - 1, -1, -1):
        step, activation, indices, shape = saved[k]
        if step.relu:
            grad = grad.masked_fill_(activation <= 0, 0)
        if indices is not None:
            grad = F.max_unpool2d(grad, indices, step.pool_args[0], step.pool_args[1], output_size=shape[-2:])
        grad = backward_net.steps[k].convolve_back(grad)
    return grad.float()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="batchnorm")
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batches", type=int, default=4, help="batches of 16 tiles per timed call")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tile = args.tile_size
    meta = ModelMeta(
        class_names=["Control", "Aggregates"],
        class_colors=default_class_colors(2),
        channel_names=["nuclei", "protein"],
        tile_size=tile,
        architecture=args.arch,
        normalization=Normalization(low=[20.0] * 2, high=[1500.0] * 2).to_dict(),
    )
    torch.manual_seed(0)
    classifier = Classifier(build_model(args.arch, 2, 2, tile).eval(), meta, device="cpu", precision="bf16")
    fp32, bf16 = classifier._fp32_net, classifier._net.net
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {args.arch!r} ({classifier.backend}), "
        f"{tile} px; load average {os.getloadavg()[0]:.2f}"
    )
    field = make_field("puncta", (8 * tile, 8 * tile), seed=3).image
    prepared = classifier.prepare_field(field)
    sets = {
        "probe": precision.probe_batch(2, tile)[:64],
        "synthetic field": classifier.to_tensor(prepared.tiles(prepared.indices)).clone(),
    }
    ways = {
        "all bf16": (bf16, bf16),
        "bf16 forward, fp32 backward": (bf16, fp32),
        "fp32 forward, bf16 backward": (fp32, bf16),
    }
    print("rank correlation of gradient x input with fp32 (precision.py needs >= 0.99):")
    for name, x in sets.items():
        with torch.no_grad():
            target = fp32(x).argmax(dim=1)
        reference = (attribution.input_gradient(fp32, x, target) * x).sum(dim=1)
        line = ", ".join(
            f"{way} {precision.rank_correlation(reference, (split_gradient(f, b, fp32, x, target) * x).sum(dim=1)):.4f}"
            for way, (f, b) in ways.items()
        )
        print(f"  {name}: {line}")

    x = precision.probe_batch(2, tile, n=16 * args.batches)

    def predict(net):
        def run():
            with torch.inference_mode():
                for i in range(0, len(x), 16):
                    net(x[i : i + 16])

        return run

    def explain(net, batch=16):
        return lambda: [attribution.gradient_x_input(net, x[i : i + batch]) for i in range(0, len(x), batch)]

    def split(f, b):
        return lambda: [
            split_gradient(f, b, fp32, x[i : i + 16], None) * x[i : i + 16] for i in range(0, len(x), 16)
        ]

    configs = {
        "predict bf16": predict(classifier._net),
        "predict fp32": predict(fp32),
        "explain fp32, batch 16": explain(fp32),
        "explain fp32, batch 32": explain(fp32, 32),
        "explain fp32, batch 64": explain(fp32, 64),
        "explain all bf16": explain(classifier._net),
        "explain fp32 fwd + bf16 bwd": split(fp32, bf16),
    }
    best = dict.fromkeys(configs, float("inf"))
    for run in configs.values():
        run()
    for _ in range(args.rounds):
        for name, run in configs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"rates (best of {args.rounds} interleaved rounds):")
    for name, seconds in best.items():
        print(
            f"  {name:<30} {len(x) / seconds:7.0f} tiles/s  {seconds / best['predict bf16']:5.2f}x bf16 "
            f"inference, {seconds / best['predict fp32']:5.2f}x fp32 inference"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
