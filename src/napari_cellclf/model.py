"""The CNNs (PyTorch) and device choice. No Qt.

- "original": the method's net — 3x3 'same' conv + ReLU blocks 16/16/16 | pool | 32/32/32 | pool |
  64/64/64 | pool, dense 512, dense 50, logits over classes (softmax applied by callers/loss).
  Every tile size from 16 px keeps all three 2x2 pools (16 px ends at 2x2, never below). When the
  pools leave more than a 6x6 grid (tiles of 56 px and up) an adaptive average pool brings it to
  6x6, so the dense head (and the model file) stays small however large the tile.
- "fast": one conv per block (16 | pool | 32 | pool | 64 | pool), a 3x3 adaptive pool and a
  dense 64 head: about a tenth of the original's compute, for quick interactive use.
- "batchnorm": 3x3 conv + BatchNorm + ReLU, two per block, widths 16/32/64 (a fourth block of
  64 from 96 px tiles, only two blocks below 24 px), 2x2 max-pool after each block, global
  average pool, one linear layer (no dropout: it would draw from the global RNG, and weight
  decay, label smoothing and augmentation already regularise). Normalisation lets it train at one learning rate
  on any data set size, and the pooled head has few weights to memorise small sets with.
  For inference the BatchNorm layers are folded into their convolutions (`fold_batchnorm`), so it
  runs through the same fused Conv+ReLU(+pool) path as the others.
- Models take float32 (N, C, T, T) normalised tiles and return (N, K) logits.
- `Ensemble(members)` and `DihedralTTA(model)` are models too: their output is
  log(mean probability) over the members / the 8 rotations and reflections of the input, so
  softmax(output) is exactly the mean probability and argmax/loss code needs no special case.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

# The network's smallest tile. tiling.MIN_TILE_SIZE is the rule everyone checks against; this
# file cannot import it because it ships stand-alone as a bioimage.io package's architecture
# source (bioimageio/weights.py refuses own-package imports). test_model checks they agree.
MIN_TILE_SIZE = 16

ARCHITECTURES = ("batchnorm", "original", "fast")

# Per architecture: convs per block, filters per block, grid the head sees at most, dense widths.
_SPECS: dict[str, dict[str, Any]] = {
    "original": dict(convs_per_block=3, filters=(16, 32, 64), head_grid=6, dense=(512, 50)),
    "fast": dict(convs_per_block=1, filters=(16, 32, 64), head_grid=3, dense=(64,)),
}


_NORMED = dict(filters=(16, 32, 64))


class TileCNN(nn.Module):
    """Conv blocks with 2x2 max-pooling, an optional adaptive pool, then a dense head."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        tile_size: int,
        convs_per_block: int,
        filters: tuple[int, ...],
        head_grid: int,
        dense: tuple[int, ...],
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        size = tile_size
        for width in filters:
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2))
            size //= 2
        if size > head_grid:
            # Large tiles: summarise to a fixed grid instead of growing the first dense layer.
            layers.append(nn.AdaptiveAvgPool2d(head_grid))
            size = head_grid
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        width_in = channels * size * size
        for width in dense:
            head += [nn.Linear(width_in, width), nn.ReLU(inplace=True)]
            width_in = width
        head.append(nn.Linear(width_in, n_classes))
        self.classifier = nn.Sequential(*head)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation suits the ReLU stack (no batch norm here, as in the original method);
        # PyTorch's default init is smaller and makes the 9-conv net slow to start learning.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:  # every layer here is built with a bias
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _normed_blocks(tile_size: int) -> int:
    """2 blocks below 24 px, 4 from 96 px, else 3: the last map is about 4-12 px wide."""
    return 2 if tile_size < 24 else 4 if tile_size >= 96 else 3


class NormedCNN(nn.Module):
    """(Conv-BN-ReLU) x 2 per block, 2x2 max-pool, global average pool, linear."""

    def __init__(self, in_channels: int, n_classes: int, tile_size: int, filters: tuple[int, ...]):
        super().__init__()
        n_blocks = _normed_blocks(tile_size)
        widths = list(filters[:n_blocks]) + [filters[-1]] * max(0, n_blocks - len(filters))
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            for _ in range(2):
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
            layers.append(nn.MaxPool2d(2))
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels, n_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _log_mean_softmax(outputs: list[torch.Tensor]) -> torch.Tensor:
    """log(mean_i softmax(outputs[i])), computed stably (logsumexp of log-softmaxes)."""
    stacked = torch.stack([torch.log_softmax(o.float(), dim=1) for o in outputs])
    return torch.logsumexp(stacked, dim=0) - math.log(len(outputs))


class Ensemble(nn.Module):
    """The average of several models of one architecture: softmax(output) = mean of the members'
    probabilities. `members` is an nn.ModuleList (saved as members.<i>.<name> in a model file)."""

    def __init__(self, members):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an Ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _log_mean_softmax([member(x) for member in self.members])


def dihedral(x: torch.Tensor, op: int) -> torch.Tensor:
    """One of the 8 symmetries of the square (op 0..7: op & 4 = mirror, op & 3 = quarter turns)."""
    if op & 4:
        x = x.flip(-1)
    return torch.rot90(x, op & 3, dims=(-2, -1)) if op & 3 else x


class DihedralTTA(nn.Module):
    """Test-time augmentation: the mean probability over the 8 rotations/reflections of each tile
    (8x the cost of the wrapped model). Its output is the same for a tile and any of its dihedral
    transforms, up to rounding."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for op in range(8):
            view = dihedral(x, op)
            if x.is_contiguous(memory_format=torch.channels_last):
                view = view.contiguous(memory_format=torch.channels_last)
            outputs.append(self.model(view))
        return _log_mean_softmax(outputs)


def unwrap(model: nn.Module) -> tuple[nn.Module, bool]:
    """(the model without a DihedralTTA wrapper, whether there was one)."""
    if isinstance(model, DihedralTTA):
        return model.model, True
    return model, False


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with every Conv2d -> BatchNorm2d pair inside a Sequential
    merged into one Conv2d (same outputs up to rounding); the model itself when it has none."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        layers = list(module)
        merged: list[nn.Module] = []
        i = 0
        while i < len(layers):
            layer = layers[i]
            following = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(layer, nn.Conv2d) and isinstance(following, nn.BatchNorm2d):
                merged.append(_fold(layer, following))
                i += 2
            else:
                merged.append(layer)
                i += 1
        if len(merged) != len(layers):
            for key in list(module._modules):
                del module._modules[key]
            for index, layer in enumerate(merged):
                module.add_module(str(index), layer)
    return folded


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:  # track_running_stats=False: nothing to fold with
        raise ValueError("a BatchNorm without running statistics cannot be folded")
    scale = bn.weight / torch.sqrt(var + bn.eps)

    def pair(value: tuple[int, ...]) -> tuple[int, int]:  # a Conv2d's sizes are 2-tuples
        return int(value[0]), int(value[1])

    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        pair(conv.kernel_size),
        stride=pair(conv.stride),
        padding=conv.padding if isinstance(conv.padding, str) else pair(conv.padding),
        dilation=pair(conv.dilation),
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
    fused_bias = fused.bias
    assert fused_bias is not None  # built with bias=True above
    fused_bias.copy_((bias - mean) * scale + bn.bias)
    return fused


def build_model(architecture: str, in_channels: int, n_classes: int, tile_size: int) -> nn.Module:
    """ValueError for unknown architecture, tile_size < 16, in_channels < 1, n_classes < 2."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    for name, value, minimum in (
        ("tile_size", tile_size, MIN_TILE_SIZE),
        ("in_channels", in_channels, 1),
        ("n_classes", n_classes, 2),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if architecture == "batchnorm":
        return NormedCNN(in_channels, n_classes, tile_size, **_NORMED)
    return TileCNN(in_channels, n_classes, tile_size, **_SPECS[architecture])


def build_ensemble(
    architecture: str, in_channels: int, n_classes: int, tile_size: int, n_members: int
) -> nn.Module:
    """One model (n_members == 1) or an Ensemble of n_members fresh models."""
    if n_members == 1:
        return build_model(architecture, in_channels, n_classes, tile_size)
    return Ensemble([build_model(architecture, in_channels, n_classes, tile_size) for _ in range(n_members)])


def choose_device(requested: str = "auto") -> torch.device:
    """ "auto" -> cuda if available else (mps if available) else cpu; "cpu"/"cuda"/"cuda:1"/"gpu"
    honoured; asking for cuda without one -> ValueError with a clear message."""
    if isinstance(requested, torch.device):
        requested = str(requested)
    text = str(requested).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "gpu":
        text = "cuda"
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise ValueError(
            f"device {requested!r} is not understood; use auto, cpu, cuda, cuda:N or mps"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {requested!r} was asked for but this PyTorch sees no CUDA GPU "
                "(use device 'auto' or 'cpu')"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {requested!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) present"
            )
    elif device.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {requested!r} was asked for but Apple MPS is not available")
    elif device.type != "cpu":
        raise ValueError(f"device {requested!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def prepare_for_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to device; channels_last memory format (fast on CPU and CUDA); eval mode untouched.
    A model in eval mode with BatchNorm layers comes back with them folded into its convolutions
    (a new module with the same outputs; see fold_batchnorm): inference then takes the fused path."""
    if not model.training:
        model = fold_batchnorm(model)
    # torch's stubs leave out Module.to's documented memory_format keyword
    return model.to(device=torch.device(device), memory_format=torch.channels_last)  # type: ignore[call-overload]


def forward_flops(model: nn.Module, in_channels: int, tile_size: int) -> int:
    """Multiply-adds x 2 of one forward pass on one tile (conv + linear layers), for benchmarks."""
    total = 0

    def count_conv(module: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += 2 * output.numel() * (module.in_channels // module.groups) * kh * kw

    def count_linear(module: nn.Linear, inputs, output) -> None:
        nonlocal total
        total += 2 * output.numel() * module.in_features

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(count_conv))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(count_linear))
    try:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, in_channels, tile_size, tile_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return int(total)
