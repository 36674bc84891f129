"""How unsure the model is about each tile (or cell), and which unlabelled ones to ask about next.
No Qt.

- `entropy`: the entropy of the class probabilities divided by log(K), so 0 (one class certain)
  to 1 (all classes equally likely) whatever the number of classes.
- `margin`: 1 - (top probability - second probability): 0 when one class wins outright, 1 on a tie
  between the two best classes. It ranks close calls between two classes first, where entropy
  also rewards spreading probability over many classes.
- `disagreement` (ensembles, model.Ensemble): the mutual information between the prediction and
  the member (entropy of the mean minus mean entropy of the members, divided by log(K)). It is
  high where the members are each confident but disagree (what more labels can settle), low where
  they agree, even on a 50/50 tile (what more labels of the same kind may not settle).
- `rank_unlabelled` / `next_uncertain`: candidates ordered by score, highest first, ties by tile
  index, never a labelled (or already visited) one.

The widget's uncertainty layer and "Next uncertain" button, and benchmarks/bench_active_learning.py
(simulated labelling by uncertainty vs at random), read these.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

METHODS = ("entropy", "margin", "disagreement")
DEFAULT_METHOD = "entropy"


def _probabilities(probabilities) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (N, K) with K >= 2 classes, got shape {p.shape}")
    return p


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=axis)


def entropy(probabilities) -> np.ndarray:
    """(N,) normalised entropy in [0, 1] of (N, K) class probabilities."""
    p = _probabilities(probabilities)
    return np.clip(_entropy(p) / np.log(p.shape[1]), 0.0, 1.0)


def margin(probabilities) -> np.ndarray:
    """(N,) 1 - (best - second best probability), in [0, 1]."""
    p = _probabilities(probabilities)
    top2 = np.sort(p, axis=1)[:, -2:]
    return np.clip(1.0 - (top2[:, 1] - top2[:, 0]), 0.0, 1.0)


def disagreement(member_probabilities) -> np.ndarray:
    """(N,) mutual information of (M, N, K) per-member probabilities, divided by log(K)."""
    members = np.asarray(member_probabilities, dtype=np.float64)
    if members.ndim != 3 or members.shape[0] < 2 or members.shape[2] < 2:
        raise ValueError(f"member probabilities must be (M >= 2, N, K >= 2), got shape {members.shape}")
    mean_entropy = _entropy(members).mean(axis=0)
    information = _entropy(members.mean(axis=0)) - mean_entropy
    return np.clip(information / np.log(members.shape[2]), 0.0, 1.0)


def scores(probabilities, method: str = DEFAULT_METHOD, member_probabilities=None) -> np.ndarray:
    """(N,) uncertainty by `method` (METHODS); "disagreement" needs the members' probabilities."""
    if method == "entropy":
        return entropy(probabilities)
    if method == "margin":
        return margin(probabilities)
    if method == "disagreement":
        if member_probabilities is None:
            raise ValueError("disagreement needs the probabilities of each ensemble member")
        return disagreement(member_probabilities)
    raise ValueError(f"uncertainty method must be one of {', '.join(METHODS)}, got {method!r}")


def rank_unlabelled(
    tile_scores, candidates: Sequence[int] | np.ndarray, exclude: Sequence[int] | np.ndarray = ()
) -> np.ndarray:
    """`candidates` (indices into `tile_scores`) not in `exclude`, most uncertain first; ties in
    index order (a stable order, so the same scores always ask in the same order)."""
    values = np.asarray(tile_scores, dtype=np.float64)
    pool = np.asarray(candidates, dtype=np.int64)
    if len(exclude):
        pool = pool[~np.isin(pool, np.asarray(exclude, dtype=np.int64))]
    pool = np.sort(pool)
    order = np.argsort(-values[pool], kind="stable")
    return pool[order]


def next_uncertain(
    tile_scores, candidates: Sequence[int] | np.ndarray, exclude: Sequence[int] | np.ndarray = ()
) -> int | None:
    """The most uncertain candidate not excluded, or None when none is left."""
    ranked = rank_unlabelled(tile_scores, candidates, exclude)
    return int(ranked[0]) if len(ranked) else None


def member_models(model) -> list:
    """The members of an ensemble (each wrapped in the ensemble's test-time augmentation, if
    any), or [] for a single model."""
    from .model import DihedralTTA, unwrap

    inner, tta = unwrap(model)
    members = list(getattr(inner, "members", []) or [])
    if len(members) < 2:
        return []
    return [DihedralTTA(m) if tta else m for m in members]


def member_probabilities(classifier, tiles: np.ndarray) -> np.ndarray | None:
    """(M, N, K) probabilities of each ensemble member on raw (N, C, T, T) tiles, through a
    Classifier per member on the classifier's device (M times the cost of classifying); None
    when the classifier's model is not an ensemble."""
    from .inference import Classifier

    members = member_models(classifier.model)
    if not members:
        return None
    out = []
    for member in members:
        wrapped = Classifier(member, classifier.meta, device=str(classifier.device), precision="fp32")
        out.append(wrapped.predict_tiles(tiles))
    return np.stack(out)
