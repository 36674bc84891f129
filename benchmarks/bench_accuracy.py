"""Accuracy on real cells: our CNN at its defaults against classical feature pipelines.

    python benchmarks/bench_accuracy.py [--rows ROW,ROW] [--seeds 0,1,2] [--methods M,M]
                                        [--set FIELD=VALUE ...] [--out results.jsonl]
    python benchmarks/bench_accuracy.py --table results.jsonl    # the markdown table only
    (--data DIR: the shared data folder, default ../shared/data beside the repository)

Rows (data sets), on ../shared/data/mlcp_cellcycle (Jurkat cells, imaging flow cytometry,
40 px crops; see its SOURCE.md) and on the project's sample fields:
- mitotic_3ch: interphase (G1, S, G2) vs mitotic (prophase..telophase), all 3 channels;
- mitotic_dna: the same from the DNA channel only;
- phases_7: all 7 classes, 3 channels (anaphase has 16 cells, telophase 28: few test cells);
- few_25 / few_50 / few_100: interphase vs mitotic, DNA only, 25 / 50 / 100 training cells per
  class drawn from the training pool (the test set stays the full held-out set);
- sample: the two sample fields (sample_data/), 48 px tiles from the ground-truth label images,
  Control vs Aggregates (puncta vs diffuse protein).
For every row and seed the held-out test set (30 % of every original class, drawn with that seed)
never takes part in training; everything else is the training pool. The classical methods fit
on the whole pool; the CNN, at the CLI defaults, holds 20 % of it out as its validation split.

Methods: majority class; logistic_5 (a logistic regression on 5 crude features per channel,
baseline.crude_features); logistic and random_forest (the rich classical features of
baseline.extract_features); cnn (training.TrainConfig() defaults: what `cellclf train` does);
cnn_tta (the same trained model with dihedral test-time augmentation, no extra training);
cnn_ens3 (runs=3, their ensemble delivered: 3x the training). Each result line has accuracy,
balanced accuracy and training seconds (classical: feature extraction of the training cells +
fitting); the table shows mean +- sd over seeds. Results are appended as JSON lines to --out so
the table can be built from runs made in parts. Threads: torch uses 2 (`--threads`).
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

from napari_cellclf import data, training
from napari_cellclf.model import DihedralTTA, prepare_for_device

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MLCP = DATA / "mlcp_cellcycle"
MITOTIC = ("Prophase", "Metaphase", "Anaphase", "Telophase")
ROWS = ("mitotic_3ch", "mitotic_dna", "phases_7", "few_25", "few_50", "few_100", "sample")
METHODS = ("majority", "logistic_5", "logistic", "random_forest", "cnn", "cnn_tta", "cnn_ens3")
DEFAULT_METHODS = ("majority", "logistic_5", "logistic", "random_forest", "cnn", "cnn_tta")
TEST_FRACTION = 0.3
LABELS = {
    "majority": "majority class",
    "logistic_5": "5-feature logistic regression",
    "logistic": "classical features + logistic regression",
    "random_forest": "classical features + random forest",
    "cnn": "CNN, defaults",
    "cnn_tta": "CNN, defaults + TTA",
    "cnn_ens3": "CNN, defaults, ensemble of 3 runs",
}


# ----------------------------------------------------------------------------------- data

_CACHE: dict = {}


def _mlcp(channels) -> data.TileDataset:
    key = ("mlcp", tuple(channels) if channels else None)
    if key not in _CACHE:
        _CACHE[key] = data.from_class_folders(MLCP, tile_size=40, channels=channels)
    return _CACHE[key]


def _sample() -> data.TileDataset:
    if "sample" not in _CACHE:
        from napari_cellclf import _sample_data

        fields, truths = [], []
        for layers in (_sample_data.puncta_field(), _sample_data.diffuse_field()):
            fields.append(np.stack([layers[0][0], layers[1][0]]))
            truths.append(layers[2][0])
        _CACHE["sample"] = data.from_label_images(
            fields,
            truths,
            ["Control", "Aggregates"],
            tile_size=48,
            channel_names=["nuclei", "protein"],
            sources=["sample:puncta", "sample:diffuse"],
        )
    return _CACHE["sample"]


def task(row: str) -> tuple[data.TileDataset, np.ndarray]:
    """(dataset with the row's labels, strata for the test split: the original classes)."""
    if row == "sample":
        cells = _sample()
        return cells, cells.labels
    cells = _mlcp(None if row in ("mitotic_3ch", "phases_7") else ["DNA"])
    if row == "phases_7":
        return cells, cells.labels
    mitotic = np.isin(np.asarray(cells.class_names)[cells.labels], MITOTIC).astype(np.int64)
    binary = dataclasses.replace(cells, labels=mitotic, class_names=["interphase", "mitotic"])
    return binary, cells.labels


def split(row: str, dataset: data.TileDataset, strata: np.ndarray, seed: int):
    """(pool_idx, test_idx): the test set is TEST_FRACTION of every stratum; few-label rows keep
    n cells per class of the pool."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(dataset), bool)
    for k in np.unique(strata):
        members = np.flatnonzero(strata == k)
        test[rng.choice(members, max(1, round(TEST_FRACTION * len(members))), replace=False)] = True
    pool = np.flatnonzero(~test)
    if row.startswith("few_"):
        n = int(row.split("_")[1])
        pool = np.sort(
            np.concatenate(
                [
                    rng.choice(pool[dataset.labels[pool] == k], n, replace=False)
                    for k in range(len(dataset.class_names))
                ]
            )
        )
    return pool, np.flatnonzero(test)


def scores(predicted: np.ndarray, truth: np.ndarray) -> dict:
    present = np.unique(truth)
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "balanced_accuracy": float(np.mean([np.mean(predicted[truth == k] == k) for k in present])),
    }


# -------------------------------------------------------------------------------- methods

_FEATURES: dict = {}


def _features(row: str, dataset: data.TileDataset, feature_set: str):
    """Features of every tile of the row, and the extraction seconds per tile."""
    from napari_cellclf import baseline

    key = (row if row == "sample" else ("mlcp", dataset.channel_names.__repr__()), feature_set)
    if key not in _FEATURES:
        start = time.perf_counter()
        values, _ = baseline.features_for(dataset.tiles, feature_set, dataset.channel_names)
        _FEATURES[key] = (values, (time.perf_counter() - start) / len(dataset))
    return _FEATURES[key]


def classical(method: str, row, dataset, pool, test, seed) -> dict:
    from napari_cellclf import baseline

    feature_set, kind = {name: (f, k) for name, f, k in baseline.METHODS}[method]
    values, per_tile = _features(row, dataset, feature_set)
    start = time.perf_counter()
    model = baseline.FeatureModel(kind=kind, feature_set=feature_set, seed=seed)
    model.fit_features(values[pool], dataset.labels[pool], len(dataset.class_names))
    seconds = time.perf_counter() - start + per_tile * len(pool)
    predicted = np.argmax(model.predict_proba_features(values[test]), axis=1)
    return {**scores(predicted, dataset.labels[test]), "train_seconds": seconds}


@torch.inference_mode()
def predict(model, normalization, tiles: np.ndarray) -> tuple[np.ndarray, float]:
    net = prepare_for_device(model.eval(), torch.device("cpu"))
    start = time.perf_counter()
    out = []
    for i in range(0, len(tiles), 256):
        x = torch.from_numpy(normalization.apply(tiles[i : i + 256])).contiguous(
            memory_format=torch.channels_last
        )
        out.append(net(x).argmax(1).numpy())
    return np.concatenate(out), time.perf_counter() - start


def cnn(dataset, pool, test, seed, overrides: dict, runs: int = 1) -> tuple[dict, training.TrainingResult]:
    config = dataclasses.replace(
        training.TrainConfig(), device="cpu", seed=seed, runs=runs, compare_baseline=False, **overrides
    )
    start = time.perf_counter()
    result = training.run_training(dataset.subset(pool), config)
    seconds = time.perf_counter() - start
    predicted, infer = predict(result.model, result.normalization, dataset.tiles[test])
    info = {
        "train_seconds": seconds,
        "infer_seconds": infer,
        "epochs": result.epochs,
        "val_balanced_accuracy": result.history.delivered.get("val_balanced_accuracy"),
    }
    return {**scores(predicted, dataset.labels[test]), **info}, result


def run_row(row: str, seeds, methods, overrides: dict, out, tag: str) -> None:
    dataset, strata = task(row)
    for seed in seeds:
        pool, test = split(row, dataset, strata, seed)
        base = {
            "row": row,
            "seed": seed,
            "n_train": int(len(pool)),
            "n_test": int(len(test)),
            "tag": tag,
            "overrides": overrides,
        }
        truth = dataset.labels[test]
        trained = None
        for method in methods:
            if method == "majority":
                majority = np.bincount(dataset.labels[pool], minlength=len(dataset.class_names)).argmax()
                line = {**scores(np.full(len(test), majority), truth), "train_seconds": 0.0}
            elif method in ("logistic_5", "logistic", "random_forest"):
                line = classical(method, row, dataset, pool, test, seed)
            elif method == "cnn":
                line, trained = cnn(dataset, pool, test, seed, overrides)
            elif method == "cnn_tta":
                if trained is None:
                    _, trained = cnn(dataset, pool, test, seed, overrides)
                predicted, infer = predict(
                    DihedralTTA(trained.model), trained.normalization, dataset.tiles[test]
                )
                line = {
                    **scores(predicted, truth),
                    "infer_seconds": infer,
                    "train_seconds": None,
                }  # the cnn row's training, reused
            elif method == "cnn_ens3":
                line, _ = cnn(dataset, pool, test, seed, overrides, runs=3)
            else:
                raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
            record = {
                **base,
                "method": method,
                **line,
                "threads": torch.get_num_threads(),
                "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            }
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(
                f"{row:12s} seed {seed} {method:14s} acc {record['accuracy']:.3f} "
                f"bal {record['balanced_accuracy']:.3f} train {record.get('train_seconds') or 0:.1f} s",
                file=sys.stderr,
                flush=True,
            )


# ---------------------------------------------------------------------------------- table


def table(lines: list[dict]) -> str:
    groups: dict = {}
    for line in lines:
        name = line["method"] + (f" [{line['tag']}]" if line.get("tag") else "")
        groups.setdefault((line["row"], name), []).append(line)
    order = {row: i for i, row in enumerate(ROWS)}
    rows = [
        "| data | n train / test | method | accuracy | balanced accuracy | training s | seeds |",
        "|---|---|---|---|---|---|---|",
    ]

    def stat(values) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "—"
        return (
            f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"
        )

    for (row, name), items in sorted(
        groups.items(), key=lambda kv: (order.get(kv[0][0], 99), METHODS.index(kv[1][0]["method"]), kv[0][1])
    ):
        seconds = [i["train_seconds"] for i in items if i.get("train_seconds") is not None]
        method = items[0]["method"]
        label = LABELS.get(method, method) + name[len(method) :]
        rows.append(
            f"| {row} | {items[0]['n_train']} / {items[0]['n_test']} | {label} | "
            f"{stat([i['accuracy'] for i in items])} | {stat([i['balanced_accuracy'] for i in items])} | "
            f"{np.mean(seconds):.0f} | {','.join(str(i['seed']) for i in items)} |"
            if seconds
            else f"| {row} | {items[0]['n_train']} / {items[0]['n_test']} | {label} | "
            f"{stat([i['accuracy'] for i in items])} | {stat([i['balanced_accuracy'] for i in items])} | "
            f"(as above) | {','.join(str(i['seed']) for i in items)} |"
        )
    return "\n".join(rows)


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a TrainConfig default for the CNN (an ablation; tagged in the table)",
    )
    parser.add_argument("--tag", default=None, help="label for this configuration in the table")
    parser.add_argument("--out", default="bench_accuracy.jsonl")
    parser.add_argument(
        "--table", default=None, metavar="JSONL", help="only print the table of a results file"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default=str(DATA), help=f"the shared data folder (default {DATA})")
    args = parser.parse_args(argv)
    global MLCP
    MLCP = Path(args.data) / "mlcp_cellcycle"
    if args.table:
        lines = [json.loads(line) for line in Path(args.table).read_text().splitlines() if line.strip()]
        print(table(lines))
        return
    torch.set_num_threads(args.threads)
    overrides = dict(item.split("=", 1) for item in args.set)
    overrides = {key: _value(value) for key, value in overrides.items()}
    tag = args.tag if args.tag is not None else ",".join(f"{k}={v}" for k, v in overrides.items())
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown row(s) {unknown}; choose from {', '.join(ROWS)}")
    if any(r != "sample" for r in rows) and not MLCP.is_dir():
        raise SystemExit(f"{MLCP} is missing (the real-data rows need it)")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    start = time.perf_counter()
    with open(args.out, "a") as out:
        for row in rows:
            run_row(row, seeds, methods, overrides, out, tag)
    print(f"{time.perf_counter() - start:.0f} s in all", file=sys.stderr)
    lines = [json.loads(line) for line in Path(args.out).read_text().splitlines() if line.strip()]
    print(table(lines))


if __name__ == "__main__":
    main()
