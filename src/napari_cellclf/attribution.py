"""Gradient x input attributions stitched over the original pixels. No Qt.

- For each tile: d(logit of target class)/d(input) * input, on the normalised input the model saw.
- Target: the predicted class per tile (default) or a fixed class index.
- Batched like inference (same tiles, same normalisation, same batch size), cancellable, stitched
  with tiling.stitch_tile_maps into a map the size of the field ((H, W) summed over channels;
  (C, H, W) with per_channel=True).

Only the input gradient is asked of autograd (torch.autograd.grad with inputs=x), so weight
gradients are never computed: one attribution batch is a forward pass plus an input-gradient
backward pass. On CPU the Classifier's oneDNN network does both with fused, pre-packed
convolutions (the backward of a convolution is a convolution with the flipped kernel, and each
ReLU's mask is applied on the 4x smaller pooled gradient where a max pool follows), so
explaining costs ~2.5x classifying (2-core AVX-512 CPU, 64 px tiles; benchmarks/README.md).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ._generators import drive
from .inference import Classifier, InferenceProgress
from .tiling import stitch_tile_maps

METHODS = ("gradient_x_input", "smoothgrad", "gradient")
SMOOTHGRAD_SAMPLES = 16
SMOOTHGRAD_NOISE = 0.15  # noise std as a share of each tile's intensity range (Smilkov et al.)


def _chosen_classes(logits: torch.Tensor, target) -> torch.Tensor:
    n_classes = logits.shape[1]
    if target is None:
        chosen = logits.detach().argmax(dim=1)
    elif isinstance(target, torch.Tensor):
        chosen = target.to(device=logits.device, dtype=torch.long).reshape(-1)
        if chosen.numel() != len(logits):
            raise ValueError(f"target has {chosen.numel()} entries for {len(logits)} tiles")
    else:
        chosen = torch.full(
            (len(logits),), _check_class(target, n_classes), dtype=torch.long, device=logits.device
        )
    if chosen.numel() and (int(chosen.min()) < 0 or int(chosen.max()) >= n_classes):
        raise ValueError(f"target classes must be in 0..{n_classes - 1}")
    return chosen


def _as_leaf(inputs: torch.Tensor) -> torch.Tensor:
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be (N, C, T, T), got shape {tuple(inputs.shape)}")
    # A tensor made under inference_mode cannot enter autograd; a plain copy can.
    x = inputs.clone() if inputs.is_inference() else inputs.detach()
    return x.requires_grad_(True)


def predicted_classes(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """(N,) argmax class of the model (an Ensemble's: of its mean probability)."""
    with torch.no_grad():
        return model(inputs).argmax(dim=1)


def input_gradient(
    model: nn.Module, inputs: torch.Tensor, target: int | torch.Tensor | None = None
) -> torch.Tensor:
    """(N, C, T, T) d(logit of target class)/d(input) on normalised inputs (target None: argmax).

    For a model with `.members` (model.Ensemble) the mean of the members' gradients, each for the
    ensemble's target class (the agreed contract: an ensemble's map is the mean of its members')."""
    members: nn.ModuleList | None = getattr(model, "members", None)
    if members is not None:
        if target is None:
            target = predicted_classes(
                model, inputs.detach() if not inputs.is_inference() else inputs.clone()
            )
        maps = [input_gradient(member, inputs, target) for member in members]
        return torch.stack(maps).mean(dim=0)
    x = _as_leaf(inputs)
    with torch.inference_mode(False), torch.enable_grad():
        logits = model(x)
        chosen = _chosen_classes(logits, target)
        selected = logits.gather(1, chosen[:, None]).sum()
        (gradient,) = torch.autograd.grad(selected, x)
    return gradient.detach()


def gradient_x_input(
    model: nn.Module, inputs: torch.Tensor, target: int | torch.Tensor | None = None
) -> torch.Tensor:
    """(N, C, T, T) normalised inputs -> (N, C, T, T) attributions for `target` (None: argmax).

    `target` is one class index for every tile, or an (N,) tensor of per-tile indices. The
    model's mode (eval/train) and its parameters' requires_grad flags are left as they are.
    An Ensemble (`.members`) gives the mean of its members' maps."""
    x = inputs.clone() if inputs.is_inference() else inputs.detach()
    return (input_gradient(model, x, target) * x).detach()


def smoothgrad(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | torch.Tensor | None = None,
    samples: int = SMOOTHGRAD_SAMPLES,
    noise: float = SMOOTHGRAD_NOISE,
    seed: int = 0,
) -> torch.Tensor:
    """SmoothGrad of gradient x input: the mean of gradient x input over `samples` copies of each
    tile with Gaussian noise added (std = `noise` x the tile's intensity range), all for the class
    the model gives the clean tile (or `target`). Less speckled maps at `samples` x the cost."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    if not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
        raise ValueError(f"noise must be between 0 and 1, got {noise!r}")
    x = inputs.clone() if inputs.is_inference() else inputs.detach()
    if target is None:
        target = predicted_classes(model, x)
    flat = x.reshape(len(x), -1)
    span = (
        (flat.max(dim=1).values - flat.min(dim=1).values).clamp_min(1e-6)
        if len(x)
        else torch.zeros(0, device=x.device)
    )
    scale = (noise * span).reshape(-1, 1, 1, 1)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    total = torch.zeros_like(x)
    for _ in range(int(samples)):
        eps = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        noisy = (x + eps * scale).contiguous(memory_format=torch.channels_last)
        total += input_gradient(model, noisy, target) * noisy
    return (total / samples).detach()


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    method: str = "gradient_x_input",
    samples: int = SMOOTHGRAD_SAMPLES,
    noise: float = SMOOTHGRAD_NOISE,
    seed: int = 0,
) -> torch.Tensor:
    """(N, C, T, T) map by `method`: "gradient_x_input" (default), "smoothgrad" or "gradient"."""
    if method == "gradient_x_input":
        return gradient_x_input(model, inputs, target)
    if method == "smoothgrad":
        return smoothgrad(model, inputs, target, samples=samples, noise=noise, seed=seed)
    if method == "gradient":
        return input_gradient(model, inputs, target)
    raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def _check_class(target, n_classes: int) -> int:
    if (
        isinstance(target, bool)
        or not isinstance(target, (int, np.integer))
        or not 0 <= int(target) < n_classes
    ):
        raise ValueError(
            f"target must be a class index in 0..{n_classes - 1} (or None for each "
            f"tile's predicted class), got {target!r}"
        )
    return int(target)


def explain_field(
    classifier: Classifier,
    image_cyx: np.ndarray,
    target: int | None = None,
    stride: int | None = None,
    per_channel: bool = False,
    stop: threading.Event | None = None,
    method: str = "gradient_x_input",
    samples: int = SMOOTHGRAD_SAMPLES,
    noise: float = SMOOTHGRAD_NOISE,
) -> Generator[InferenceProgress, None, np.ndarray]:
    """Gradient x input (or `method` "smoothgrad" / "gradient", see `attribute`) of every tile
    of the field (border='pad', every pixel covered), stitched into an (H, W) float32 map
    (channels summed) or (C, H, W) with per_channel.

    Yields InferenceProgress(stage="explain") once before the first batch and after each batch;
    `stop` is checked between batches, and a stopped run returns the map of the tiles done so
    far (zero elsewhere)."""
    if target is not None:
        target = _check_class(target, len(classifier.class_names))
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    prepared = classifier.prepare_field(image_cyx, stride)
    grid, indices = prepared.grid, prepared.indices
    total = len(indices)
    size = grid.tile_size
    shape = (total, classifier.in_channels, size, size) if per_channel else (total, size, size)
    maps = np.zeros(shape, dtype=np.float32)
    done = 0
    yield InferenceProgress(0, total, stage="explain")
    while done < total:
        if stop is not None and stop.is_set():
            break
        which = indices[done : done + classifier.batch_size]
        inputs = classifier.to_tensor(prepared.tiles(which))
        attributions = attribute(
            classifier.gradient_model, inputs, target, method=method, samples=samples, noise=noise, seed=done
        )
        if not per_channel:
            attributions = attributions.sum(dim=1)
        maps[done : done + len(which)] = attributions.cpu().numpy()
        done += len(which)
        yield InferenceProgress(done, total, stage="explain")
    return stitch_tile_maps(maps[:done], grid, indices[:done])


def explain_field_sync(classifier: Classifier, image_cyx: np.ndarray, **kwargs) -> np.ndarray:
    return drive(explain_field(classifier, image_cyx, **kwargs))


# ---------------------------------------------------------------------------------------------
# Sanity checks: does the map show what the model learnt, and where does it fall?

BORDER_PX = 2
# A class's maps put "far more" on the 2-px border than its pixel share when both hold:
BORDER_RATIO = 2.0  # at least this many times the border's pixel share ...
BORDER_EXCESS = 0.15  # ... and this much above it (small tiles have a wide border)
# The map shows the image more than the model when |gradient x input| of the trained model
# ranks pixels (Spearman) this much like the same network with re-initialised weights does.
RANDOMISATION_LIMIT = 0.8
# ... or at least the border's pixel share and this many times what the random network puts there.
BORDER_RANDOM_RATIO = 2.0
# A fixed hotspot: the top 1 % of pixel positions of a class's mean (per-tile normalised) map
# hold this share of its attribution. Measured on 32 px synthetic tiles: 2.5-4.5 % for models
# that learnt the cells, 5-6 % for random weights, 29-30 % for a model that learnt a corner mark.
HOTSPOT_PIXELS = 0.01
HOTSPOT_SHARE = 0.15
HOTSPOT_MIN_TILES = 8
CHECK_TILES = 256


@dataclass
class AttributionChecks:
    method: str
    n_tiles: int
    randomisation_similarity: float | None  # Spearman, |gradient x input|, trained vs random
    gradient_randomisation_similarity: float | None  # the same for the plain gradient
    foreground_share: float | None  # share of |attribution| on foreground pixels
    foreground_pixel_share: float | None  # share of pixels that are foreground
    border_share: float | None  # mean over tiles of the share of |attribution| on the outer 2 px
    border_pixel_share: float  # share of pixels in that border
    border_share_by_class: dict[str, float | None] = field(default_factory=dict)  # by predicted class
    hotspot_share_by_class: dict[str, float] = field(default_factory=dict)  # top 1 % positions
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "n_tiles": int(self.n_tiles),
            "randomisation_similarity": self.randomisation_similarity,
            "gradient_randomisation_similarity": self.gradient_randomisation_similarity,
            "foreground_share": self.foreground_share,
            "foreground_pixel_share": self.foreground_pixel_share,
            "border_share": self.border_share,
            "border_pixel_share": self.border_pixel_share,
            "border_px": BORDER_PX,
            "border_share_by_class": dict(self.border_share_by_class),
            "hotspot_share_by_class": dict(self.hotspot_share_by_class),
            "hotspot_pixels": HOTSPOT_PIXELS,
            "warnings": list(self.warnings),
        }


def reinitialised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """The same architecture with fresh random weights (a module's own `_init_weights` where it
    has one, as TileCNN does, else each layer's reset_parameters); `model` is not touched."""
    clone = copy.deepcopy(model)

    def reset(module: nn.Module) -> None:
        # Looked up, not called as attributes: nn.Module types unknown ones as Tensor | Module.
        init_weights = getattr(module, "_init_weights", None)
        if init_weights is not None:
            init_weights()
            return
        reset_parameters = getattr(module, "reset_parameters", None)
        if reset_parameters is not None and not list(module.children()):
            reset_parameters()
        for child in module.children():
            reset(child)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        with torch.no_grad():
            reset(clone)
    return clone.eval()


def spearman_per_tile(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) Spearman rank correlation between a[i] and b[i] (any trailing shape); NaN where one
    map is constant."""
    from scipy.stats import rankdata

    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / denominator, np.nan)


def _mean_or_none(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def foreground_masks(normalised: np.ndarray, threshold: float | None = None) -> np.ndarray | None:
    """(N, T, T) bool: pixels where the brightest normalised channel is above one Otsu threshold
    pooled over all the tiles (so a background-only tile has little or no foreground, as in the
    field it came from). None when the tiles are flat."""
    from skimage.filters import threshold_otsu

    brightest = np.asarray(normalised, dtype=np.float32).max(axis=1)
    if threshold is None:
        values = brightest.ravel()
        if values.size > 2**20:
            values = values[:: values.size // 2**20]
        if values.size == 0 or values.min() == values.max():
            return None
        threshold = float(threshold_otsu(values))
    return brightest > threshold


def border_mask(tile_size: int, width: int = BORDER_PX) -> np.ndarray:
    mask = np.zeros((tile_size, tile_size), dtype=bool)
    mask[:width], mask[-width:], mask[:, :width], mask[:, -width:] = True, True, True, True
    return mask


def tile_attributions(
    classifier: Classifier,
    raw_tiles: np.ndarray,
    target=None,
    method: str = "gradient_x_input",
    model: nn.Module | None = None,
    samples: int = SMOOTHGRAD_SAMPLES,
    noise: float = SMOOTHGRAD_NOISE,
) -> np.ndarray:
    """(N, C, T, T) float32 maps of raw tiles (normalised the model's way), in the classifier's
    batches; `model` replaces the classifier's own network (e.g. a re-initialised copy)."""
    raw_tiles = np.asarray(raw_tiles)
    net = classifier.gradient_model if model is None else model
    out = np.zeros(raw_tiles.shape, dtype=np.float32)
    for start in range(0, len(raw_tiles), classifier.batch_size):
        stop = start + classifier.batch_size
        inputs = classifier.to_tensor(classifier.normalization.apply(raw_tiles[start:stop]))
        which = target[start:stop] if isinstance(target, torch.Tensor) else target
        out[start:stop] = (
            attribute(net, inputs, which, method=method, samples=samples, noise=noise, seed=start)
            .cpu()
            .numpy()
        )
    return out


def attribution_checks(
    classifier: Classifier,
    raw_tiles: np.ndarray,
    method: str = "gradient_x_input",
    max_tiles: int = CHECK_TILES,
    seed: int = 0,
    foreground: np.ndarray | None = None,
) -> AttributionChecks:
    """Sanity checks of the maps over (up to `max_tiles`, chosen with `seed`) raw tiles:
    model randomisation (Adebayo et al. 2018), where the attribution falls (foreground vs
    background by Otsu, each tile's outer 2 px), and `warnings` in plain sentences.

    Every tile is explained for the class the trained model predicts for it; the randomised
    network is asked about the same class. `foreground` (N, T, T) bool overrides the Otsu mask
    (e.g. masks cut from the whole field's threshold)."""
    raw_tiles = np.asarray(raw_tiles)
    size = int(raw_tiles.shape[-1]) if raw_tiles.ndim == 4 else int(classifier.tile_size)
    border = border_mask(size)
    border_pixel_share = float(border.mean())
    if len(raw_tiles) > max_tiles:
        chosen = np.sort(np.random.default_rng(seed).choice(len(raw_tiles), max_tiles, replace=False))
        raw_tiles = raw_tiles[chosen]
        if foreground is not None:
            foreground = np.asarray(foreground)[chosen]
    if len(raw_tiles) == 0:
        return AttributionChecks(
            method,
            0,
            None,
            None,
            None,
            None,
            None,
            border_pixel_share,
            warnings=["no tiles to check the attribution maps on"],
        )
    predicted = torch.from_numpy(classifier.predict_tiles(raw_tiles).argmax(axis=1))
    maps = np.abs(tile_attributions(classifier, raw_tiles, predicted, method)).sum(axis=1)

    # Model randomisation: the same question asked of the architecture with random weights.
    random_model = reinitialised_copy(classifier.model, seed=seed)
    trained_gxi = (
        maps
        if method == "gradient_x_input"
        else np.abs(tile_attributions(classifier, raw_tiles, predicted)).sum(axis=1)
    )
    random_gxi = np.abs(tile_attributions(classifier, raw_tiles, predicted, model=random_model)).sum(axis=1)
    trained_grad = np.abs(tile_attributions(classifier, raw_tiles, predicted, "gradient")).sum(axis=1)
    random_grad = np.abs(
        tile_attributions(classifier, raw_tiles, predicted, "gradient", model=random_model)
    ).sum(axis=1)
    similarity = _mean_or_none(spearman_per_tile(trained_gxi, random_gxi))
    gradient_similarity = _mean_or_none(spearman_per_tile(trained_grad, random_grad))

    total = float(maps.sum())
    if foreground is None:
        foreground = foreground_masks(classifier.normalization.apply(raw_tiles))
    foreground_share = foreground_pixel_share = None
    if foreground is not None and total > 0:
        foreground = np.asarray(foreground, dtype=bool).reshape(maps.shape)
        foreground_share = float(maps[foreground].sum() / total)
        foreground_pixel_share = float(foreground.mean())
    # Each tile's map as shares of its own total, so every tile counts the same.
    sums = maps.sum(axis=(1, 2), keepdims=True)
    shares = np.divide(maps, sums, out=np.zeros_like(maps), where=sums > 0)
    random_shares = _shares(np.abs(random_gxi) if method == "gradient_x_input" else random_gxi)
    live = sums.reshape(-1) > 0
    border_share = float(shares[live][:, border].sum(axis=1).mean()) if live.any() else None
    by_class: dict[str, float | None] = {}
    hotspots: dict[str, tuple[float, tuple[int, int]]] = {}
    random_by_class: dict[str, float | None] = {}
    labels = predicted.numpy()
    for k, name in enumerate(classifier.class_names):
        chosen = live & (labels == k)
        if not chosen.any():
            by_class[name] = None
            continue
        mean_map = shares[chosen].mean(axis=0)
        by_class[name] = float(mean_map[border].sum())
        random_by_class[name] = float(random_shares[chosen].mean(axis=0)[border].sum())
        if chosen.sum() >= HOTSPOT_MIN_TILES:
            top = max(1, round(HOTSPOT_PIXELS * mean_map.size))
            order = np.argsort(mean_map.ravel())[::-1][:top]
            peak = np.unravel_index(order[0], mean_map.shape)
            hotspots[name] = (float(mean_map.ravel()[order].sum()), (int(peak[0]), int(peak[1])))

    checks = AttributionChecks(
        method,
        len(raw_tiles),
        similarity,
        gradient_similarity,
        foreground_share,
        foreground_pixel_share,
        border_share,
        border_pixel_share,
        by_class,
        {name: value[0] for name, value in hotspots.items()},
    )
    checks.warnings = _warnings(checks, random_by_class, hotspots, total)
    return checks


def _shares(maps: np.ndarray) -> np.ndarray:
    sums = maps.sum(axis=(1, 2), keepdims=True)
    return np.divide(maps, sums, out=np.zeros_like(maps), where=sums > 0)


def _warnings(
    checks: AttributionChecks,
    random_by_class: dict[str, float | None],
    hotspots: dict[str, tuple[float, tuple[int, int]]],
    total: float,
) -> list[str]:
    """What the measured `checks` say a user should doubt; `random_by_class` is the border share of
    the random-weights network, `hotspots` each class's top share and its peak position."""
    similarity = checks.randomisation_similarity
    gradient_similarity = checks.gradient_randomisation_similarity
    foreground_share, foreground_pixel_share = checks.foreground_share, checks.foreground_pixel_share
    border_pixel_share = checks.border_pixel_share
    warnings: list[str] = []
    if total <= 0:
        warnings.append(
            "The attribution maps are zero everywhere: the model's output does not "
            "change with its input, so the maps say nothing."
        )
        return warnings
    for name, share in checks.border_share_by_class.items():
        if share is None:
            continue
        random_share = random_by_class.get(name)
        far_above_pixels = (
            share >= BORDER_RATIO * border_pixel_share and share >= border_pixel_share + BORDER_EXCESS
        )
        above_random = (
            random_share is not None
            and share >= border_pixel_share
            and share >= BORDER_RANDOM_RATIO * random_share
        )
        if far_above_pixels or above_random:
            warnings.append(
                f"For tiles it calls '{name}', {share:.0%} of the model's attribution falls on "
                f"the tiles' outer {BORDER_PX}-pixel border, which is {border_pixel_share:.0%} of "
                f"the pixels (the same network with random weights puts {random_share:.0%} there):"
                " it may have learnt an artefact at the tile edges (a mark, a stitching seam, "
                "vignetting) rather than the cells. Check the gallery and the raw images."
            )
    for name, (share, (row, col)) in hotspots.items():
        if share >= HOTSPOT_SHARE:
            warnings.append(
                f"For tiles it calls '{name}', {share:.0%} of the attribution falls on the same "
                f"{HOTSPOT_PIXELS:.0%} of pixel positions in every tile (around row {row}, column "
                f"{col} of the tile): cells sit anywhere in a tile, so the model may be reading a "
                "fixed mark or artefact rather than the cells."
            )
    if (
        foreground_share is not None
        and foreground_pixel_share is not None
        and 0.02 < foreground_pixel_share < 0.98
        and foreground_share < foreground_pixel_share
    ):
        warnings.append(
            f"Only {foreground_share:.0%} of the attribution falls on the bright (cell) pixels, "
            f"which are {foreground_pixel_share:.0%} of the pixels: the model looks mostly where "
            "the image has no cells (background, noise or an artefact)."
        )
    if similarity is not None and similarity >= RANDOMISATION_LIMIT:
        gradient_note = "" if gradient_similarity is None else f" (plain gradient: {gradient_similarity:.2f})"
        warnings.append(
            f"The gradient x input maps rank pixels almost as the same network with random "
            f"weights does (Spearman {similarity:.2f}{gradient_note}): they mostly show the "
            "image, not what the model learnt; do not read them as evidence on their own."
        )
    return warnings
