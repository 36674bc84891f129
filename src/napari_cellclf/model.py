"""The CNNs (PyTorch) and device choice. No Qt.

- "original": the method's net — 3x3 'same' conv + ReLU blocks 16/16/16 | pool | 32/32/32 | pool |
  64/64/64 | pool, dense 512, dense 50, logits over classes (softmax applied by callers/loss).
  Every tile size from 16 px keeps all three 2x2 pools (16 px ends at 2x2, never below). When the
  pools leave more than a 6x6 grid (tiles of 56 px and up) an adaptive average pool brings it to
  6x6, so the dense head (and the model file) stays small however large the tile.
- "fast": one conv per block (16 | pool | 32 | pool | 64 | pool), a 3x3 adaptive pool and a
  dense 64 head: about a tenth of the original's compute, for quick interactive use.
- Models take float32 (N, C, T, T) normalised tiles and return (N, K) logits.
"""
from __future__ import annotations

import torch
from torch import nn

ARCHITECTURES = ("original", "fast")
MIN_TILE_SIZE = 16

# Per architecture: convs per block, filters per block, grid the head sees at most, dense widths.
_SPECS = {
    "original": dict(convs_per_block=3, filters=(16, 32, 64), head_grid=6, dense=(512, 50)),
    "fast": dict(convs_per_block=1, filters=(16, 32, 64), head_grid=3, dense=(64,)),
}


class TileCNN(nn.Module):
    """Conv blocks with 2x2 max-pooling, an optional adaptive pool, then a dense head."""

    def __init__(self, in_channels: int, n_classes: int, tile_size: int, convs_per_block: int,
                 filters: tuple[int, ...], head_grid: int, dense: tuple[int, ...]):
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
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_model(architecture: str, in_channels: int, n_classes: int, tile_size: int) -> nn.Module:
    """ValueError for unknown architecture, tile_size < 16, in_channels < 1, n_classes < 2."""
    if architecture not in _SPECS:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    for name, value, minimum in (("tile_size", tile_size, MIN_TILE_SIZE), ("in_channels", in_channels, 1),
                                 ("n_classes", n_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return TileCNN(in_channels, n_classes, tile_size, **_SPECS[architecture])


def choose_device(requested: str = "auto") -> torch.device:
    """"auto" -> cuda if available else (mps if available) else cpu; "cpu"/"cuda"/"cuda:1"/"gpu"
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
        raise ValueError(f"device {requested!r} is not understood; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} was asked for but this PyTorch sees no CUDA GPU "
                             "(use device 'auto' or 'cpu')")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {requested!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) present")
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
    """Move to device; channels_last memory format (fast on CPU and CUDA); eval mode untouched."""
    return model.to(device=torch.device(device), memory_format=torch.channels_last)


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
