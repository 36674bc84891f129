"""Training/validation split that never shares a field, or neighbouring tiles, across sides. No Qt."""

from __future__ import annotations

import numpy as np

from .dataset import TileDataset

# A whole field bigger than its class's validation target goes out only up to this many times
# the target; a bigger one (two sample fields: the diffuse one held 151 of 181 Control tiles)
# would take most of the class from training, so a block inside it is held out instead.
MAX_GROUP_OVERSHOOT = 2.0


def split_train_val(
    dataset: TileDataset, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx). Per class: when the class's tiles come from >= 2 groups, whole groups
    go to validation; when from one group, a contiguous block of grid columns/rows goes to
    validation and tiles adjacent to that block (8-neighbourhood) are dropped from both sides.
    Every class with >= 2 tiles gets at least one validation tile. val_fraction=0 -> empty val.

    A group held out goes out whole (tiles of every class in it), only when every class in it
    keeps training tiles elsewhere and it holds at most MAX_GROUP_OVERSHOOT x the class's target. A class with >= 2 groups for which no group can go out that
    way (each of its fields also holds the only tiles of another class) falls back to a block
    held out inside one of its fields. Blocks sit at one end of the class's tiles (fewest
    neighbours to drop). Deterministic for a seed."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be within [0, 1), got {val_fraction}")
    n = len(dataset)
    everything = np.arange(n, dtype=np.int64)
    if val_fraction == 0 or n == 0:
        return everything, np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    labels = np.asarray(dataset.labels, dtype=np.int64)
    _, groups = np.unique(np.asarray(dataset.groups), return_inverse=True)
    groups = groups.ravel()
    n_groups, n_classes = groups.max() + 1, max(len(dataset.class_names), labels.max() + 1)
    per_group = np.zeros((n_groups, n_classes), dtype=np.int64)  # tiles of class k in group g
    np.add.at(per_group, (groups, labels), 1)
    class_total = per_group.sum(axis=0)
    target = {
        k: min(class_total[k] - 1, max(1, int(round(val_fraction * class_total[k]))))
        for k in range(n_classes)
        if class_total[k] >= 2
    }

    val_group = np.zeros(n_groups, dtype=bool)
    held = np.zeros(n_classes, dtype=np.int64)  # tiles of each class in held-out groups

    def may_hold_out(g: int) -> bool:  # every class in g keeps training tiles elsewhere
        present = per_group[g] > 0
        return bool(np.all(class_total[present] - held[present] > per_group[g, present]))

    def hold_out(g: int) -> None:
        val_group[g] = True
        held[:] += per_group[g]

    # Whole groups first; small classes first, since they have the fewest groups to choose from.
    for k in sorted(target, key=lambda k: (class_total[k], k)):
        found = np.flatnonzero(per_group[:, k])
        if len(found) < 2:
            continue
        its_groups = [int(g) for g in rng.permutation(found)]
        for g in its_groups:
            if held[k] >= target[k]:
                break
            if not val_group[g] and held[k] + per_group[g, k] <= target[k] and may_hold_out(g):
                hold_out(g)
        if held[k] == 0:  # every group is bigger than the target: take the smallest that may go
            allowed = [
                g
                for g in its_groups
                if may_hold_out(g) and per_group[g, k] <= MAX_GROUP_OVERSHOOT * target[k]
            ]
            if allowed:
                hold_out(min(allowed, key=lambda g: (per_group[g, k], g)))

    is_val = val_group[groups]
    # Blocks inside one field for classes still without validation tiles.
    positions = np.asarray(dataset.positions, dtype=np.int64).reshape(-1, 2)
    block_groups = set()
    for k in sorted(target):
        if is_val[labels == k].any():
            continue
        candidates = np.flatnonzero(per_group[:, k] * ~val_group)
        if len(candidates) == 0:
            continue
        g = int(max(candidates, key=lambda c: (per_group[c, k], -c)))
        mine = np.flatnonzero((labels == k) & (groups == g))
        block = _end_block(positions[mine], target[k], rng)
        is_val[mine[block]] = True
        block_groups.add(int(g))

    # Drop training tiles that touch (8-neighbourhood) a validation tile of the same field, or,
    # with overlapping tiles, share any pixel with one.
    dropped = np.zeros(n, dtype=bool)
    if block_groups:
        reach = dataset.overlap_reach
        in_blocks = np.isin(groups, list(block_groups))
        val_tiles = np.flatnonzero(is_val & in_blocks)
        candidates = np.flatnonzero(~is_val & in_blocks)
        steps = range(-reach, reach + 1)
        offsets = np.array([(dy, dx) for dy in steps for dx in steps])
        touched = np.concatenate(
            [
                _cell_key(positions[val_tiles] + offset, groups[val_tiles], positions, reach)
                for offset in offsets
            ]
        )
        dropped[candidates] = np.isin(
            _cell_key(positions[candidates], groups[candidates], positions, reach), touched
        )
    return everything[~is_val & ~dropped], everything[is_val]


def _cell_key(pos: np.ndarray, group: np.ndarray, all_positions: np.ndarray, margin: int = 1) -> np.ndarray:
    """One integer per (group, row, col), valid for positions up to `margin` steps outside."""
    origin = all_positions.min(axis=0) - margin
    span = all_positions.max(axis=0) - origin + 2 * margin
    pos = pos - origin
    return (group * span[0] + pos[:, 0]) * span[1] + pos[:, 1]


def _end_block(positions: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of a contiguous block of grid columns (or rows) at one end of `positions`
    (one field, one class) holding at least `target` of them, and never all of them when the
    tiles span more than one column/row."""
    extents = [len(np.unique(positions[:, axis])) for axis in (0, 1)]
    if extents[0] != extents[1]:
        axis = int(np.argmax(extents))  # cut across the longer side: a thinner block
    else:
        axis = int(rng.integers(2))
    values = np.unique(positions[:, axis])
    if rng.integers(2):
        values = values[::-1]  # block at the far end instead
    coordinate = positions[:, axis]
    counts = np.array([(coordinate == v).sum() for v in values])
    taken = int(np.searchsorted(np.cumsum(counts), target) + 1)
    taken = min(taken, max(1, len(values) - 1))
    if len(values) == 1:  # all in one line of the grid: split along it
        order = np.argsort(positions[:, 1 - axis], kind="stable")
        block = np.zeros(len(positions), dtype=bool)
        block[order[: max(1, min(target, len(positions) - 1))]] = True
        return block
    return np.isin(coordinate, values[:taken])
