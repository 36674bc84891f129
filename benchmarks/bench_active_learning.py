"""Labels by uncertainty vs labels at random: how many does each need for a given accuracy?

    python benchmarks/bench_active_learning.py [--seeds 0,1] [--rounds 12] [--start 10] [--step 10]
        [--steps 200] [--method entropy] [--target 0.85,0.90] [--threads 1] [--out results.jsonl]
        [--data DIR]    (the shared data folder, default ../shared/data beside the repository)

A simulated user on ../shared/data/mlcp_cellcycle, DNA channel only, interphase (G1, S, G2) vs
mitotic (prophase..telophase): the split of bench_accuracy.py (30 % of every original class held
out as the test set, drawn with the seed; the rest is the unlabelled pool). The user starts with
`--start` labelled cells per class drawn at random from the pool; each round a CNN is trained
from scratch on the labelled cells (fast network, about `--steps` optimiser steps of 32 cells
whatever the number of labels, no validation split: every label trains), scored on the test set, and `--step` more cells are labelled: the most uncertain
pool cells under that model (uncertainty.scores, `--method`) or cells drawn at random. Both
strategies start from the same cells and the same training seeds. The table gives the balanced
accuracy (beside plain accuracy and chance 0.5) at each number of labels, and the labels each
strategy needed to first reach each `--target` balanced accuracy (">N": not within the rounds).
Not a test; nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_accuracy  # noqa: E402  (the task and its test split, shared with the accuracy table)
from napari_cellclf import training, uncertainty  # noqa: E402
from napari_cellclf.inference import Classifier  # noqa: E402

STRATEGIES = ("uncertainty", "random")


def initial_labels(labels: np.ndarray, pool: np.ndarray, per_class: int, rng) -> np.ndarray:
    picked = [rng.choice(pool[labels[pool] == k], per_class, replace=False) for k in np.unique(labels[pool])]
    return np.sort(np.concatenate(picked))


def train_and_score(dataset, labelled, test, seed, steps):
    batch = training.TrainConfig().batch_size
    epochs = max(2, -(-steps // -(-len(labelled) // batch)))  # ceil(steps / batches per epoch)
    config = dataclasses.replace(
        training.TrainConfig(),
        architecture="fast",
        epochs=epochs,
        val_fraction=0.0,
        compare_baseline=False,
        memorisation_epochs=0,
        device="cpu",
        seed=seed,
    )
    result = training.run_training(dataset.subset(labelled), config)
    classifier = Classifier(result.model, result.meta(), device="cpu")
    return classifier, bench_accuracy.scores(
        classifier.predict_tiles(dataset.tiles[test]).argmax(1), dataset.labels[test]
    )


def simulate(dataset, pool, test, seed, args, strategy: str, out) -> list[dict]:
    rng = np.random.default_rng(1000 + seed)
    labelled = initial_labels(dataset.labels, pool, args.start, rng)
    pick_rng = np.random.default_rng(2000 + seed)
    lines = []
    for round_ in range(args.rounds):
        start = time.perf_counter()
        classifier, score = train_and_score(dataset, labelled, test, seed + round_, args.steps)
        line = {
            "seed": seed,
            "strategy": strategy,
            "method": args.method,
            "round": round_,
            "n_labels": int(len(labelled)),
            "mitotic_labels": int(dataset.labels[labelled].sum()),
            **score,
            "seconds": time.perf_counter() - start,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        }
        out.write(json.dumps(line) + "\n")
        out.flush()
        print(
            f"seed {seed} {strategy:11s} {len(labelled):4d} labels ({line['mitotic_labels']} mitotic): "
            f"bal {score['balanced_accuracy']:.3f} acc {score['accuracy']:.3f} ({line['seconds']:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        lines.append(line)
        if round_ == args.rounds - 1:
            break
        unlabelled = np.setdiff1d(pool, labelled)
        if strategy == "uncertainty":
            probabilities = classifier.predict_tiles(dataset.tiles[unlabelled])
            tile_scores = uncertainty.scores(probabilities, args.method)
            chosen = unlabelled[
                uncertainty.rank_unlabelled(tile_scores, np.arange(len(unlabelled)))[: args.step]
            ]
        else:
            chosen = pick_rng.choice(unlabelled, args.step, replace=False)
        labelled = np.sort(np.concatenate([labelled, chosen]))
    return lines


def table(lines: list[dict], targets: list[float]) -> str:
    seeds = sorted({line["seed"] for line in lines})
    counts = sorted({line["n_labels"] for line in lines})
    out = ["| labels | " + " | ".join(f"{s}: balanced acc (acc)" for s in STRATEGIES) + " |"]
    out.append("|---:|" + "---|" * len(STRATEGIES))
    for n in counts:
        cells = []
        for strategy in STRATEGIES:
            rows = [x for x in lines if x["strategy"] == strategy and x["n_labels"] == n]
            if not rows:
                cells.append("")
                continue
            bal = np.array([r["balanced_accuracy"] for r in rows])
            acc = np.array([r["accuracy"] for r in rows])
            spread = f" ± {bal.std():.3f}" if len(rows) > 1 else ""
            cells.append(f"{bal.mean():.3f}{spread} ({acc.mean():.3f})")
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("| labels to reach balanced accuracy | " + " | ".join(STRATEGIES) + " |")
    out.append("|---|" + "---|" * len(STRATEGIES))
    for target in targets:
        cells = []
        for strategy in STRATEGIES:
            needed = []
            for seed in seeds:
                rows = sorted(
                    (x for x in lines if x["strategy"] == strategy and x["seed"] == seed),
                    key=lambda r: r["n_labels"],
                )
                hit = next((r["n_labels"] for r in rows if r["balanced_accuracy"] >= target), None)
                needed.append(str(hit) if hit is not None else f">{rows[-1]['n_labels']}" if rows else "?")
            cells.append(", ".join(needed) + " (per seed)")
        out.append(f"| ≥ {target:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--start", type=int, default=10, help="labelled cells per class to start from")
    parser.add_argument("--step", type=int, default=10, help="cells labelled per round")
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps per training")
    parser.add_argument("--method", default="entropy", choices=("entropy", "margin"))
    parser.add_argument("--target", default="0.85,0.90")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=str(bench_accuracy.DATA), help="the shared data folder")
    parser.add_argument("--out", default=None, help="append JSON lines here (default: none kept)")
    parser.add_argument("--table", default=None, help="only print the table of this JSON lines file")
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.target.split(",")]
    if args.table:
        lines = [json.loads(x) for x in Path(args.table).read_text().splitlines() if x.strip()]
        print(table(lines, targets))
        return
    bench_accuracy.MLCP = Path(args.data) / "mlcp_cellcycle"
    if not bench_accuracy.MLCP.is_dir():
        raise SystemExit(f"{bench_accuracy.MLCP} is absent")
    torch.set_num_threads(args.threads)
    dataset, strata = bench_accuracy.task("mitotic_dna")
    out = open(args.out, "a") if args.out else open(os.devnull, "w")
    lines: list[dict] = []
    started = time.perf_counter()
    with out:
        for seed in [int(s) for s in args.seeds.split(",")]:
            pool, test = bench_accuracy.split("mitotic_dna", dataset, strata, seed)
            for strategy in STRATEGIES:
                lines += simulate(dataset, pool, test, seed, args, strategy, out)
    print(table(lines, targets))
    print(
        f"\n{len(lines)} trainings in {time.perf_counter() - started:.0f} s, torch threads {args.threads}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
