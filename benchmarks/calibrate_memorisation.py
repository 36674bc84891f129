"""Calibration data for the memorisation detector (memorisation.py): per-epoch training accuracy
and validation balanced accuracy on real cells with true and with shuffled labels, default recipe.

    PYTHONPATH=src python benchmarks/calibrate_memorisation.py TASK LABELS SEED OUT.json [RECIPE]
LABELS: "true" or "shuffled"; RECIPE: "default" (TrainConfig()) or "plain" (no augmentation, no
label smoothing, no weight decay, constant learning rate: the recipe that memorises fastest).
TASK: "7class" (all three channels, seven phases) or "mitotic" (DNA channel, interphase vs mitotic).
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_cellclf import data, training

ROOT = Path(__file__).resolve().parents[1] / ".." / ".." / "shared" / "data" / "mlcp_cellcycle"
ROOT = Path("/work/shared/data/mlcp_cellcycle") if not ROOT.is_dir() else ROOT
INTERPHASE = ("G1", "S_phase", "G2")


def load(task: str) -> data.TileDataset:
    if task == "7class":
        return data.from_class_folders(ROOT, 40)
    ds = data.from_class_folders(ROOT, 40, channels=[1])
    mitotic = np.array([name not in INTERPHASE for name in ds.class_names])
    ds.labels = mitotic[ds.labels].astype(np.int64)
    ds.class_names = ["interphase", "mitotic"]
    return ds


PLAIN = dict(augment=False, label_smoothing=0.0, weight_decay=0.0, lr_schedule="constant")


def main(task, shuffle, seed, out, recipe="default", epochs=20):
    torch.set_num_threads(1)
    ds = load(task)
    if shuffle == "shuffled":
        ds.labels = np.random.default_rng(seed + 100).permutation(ds.labels)
    start = time.time()
    result = training.run_training(
        ds,
        training.TrainConfig(seed=seed, device="cpu", epochs=epochs, **(PLAIN if recipe == "plain" else {})),
    )
    run = result.history.runs[0]
    counts = np.bincount(ds.labels)
    Path(out).write_text(
        json.dumps(
            {
                "task": task,
                "labels": shuffle,
                "recipe": recipe,
                "seed": seed,
                "seconds": time.time() - start,
                "majority": float(counts.max() / counts.sum()),
                "n_classes": len(ds.class_names),
                "train_accuracy": run["train_accuracy"],
                "val_accuracy": run["val_accuracy"],
                "val_balanced_accuracy": run["val_balanced_accuracy"],
                "train_loss": run["train_loss"],
                "val_loss": run["val_loss"],
                "best_epoch": run["best_epoch"],
                "epochs_completed": run["epochs_completed"],
                "old_rule": run["memorisation"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], *sys.argv[5:])
