"""Which number format the Classifier computes in: fp32, or bf16 where it is fast and safe. No Qt.

bf16 (8 bits of mantissa) halves the bytes every layer moves and, on CPUs with AVX512-BF16 or AMX,
runs the convolutions on the bf16 dot-product units: measured 1.9-2.5x the fp32 oneDNN rate of the
"original" net on a 2-core Sapphire Rapids (benchmarks/README.md). Probabilities only need a few
digits, but a model is only switched to bf16 when a probe batch shows that it keeps them:

- "auto" (default): bf16 when the hardware has it (CPU: the avx512_bf16 or amx_bf16 flag in
  /proc/cpuinfo and an AVX512/AMX kernel level in torch.backends.cpu.get_cpu_capability();
  CUDA: torch.cuda.is_bf16_supported(), else fp16 autocast as before) AND, on the probe batch,
  the predicted class is the same as fp32's on >= 99.5 % of tiles AND no class probability moves
  by more than PROBABILITY_TOLERANCE (0.02). Otherwise fp32.
- "bf16": bf16 wherever it can run at all (a CPU without native bf16 emulates it, slowly), no
  probe; "fp32": never.
- gradient x input (attribution) gets bf16 only when, besides the above, its maps on the probe
  keep the order of the pixels: mean per-tile Spearman rank correlation with the fp32 maps
  >= 0.99. Otherwise attribution runs in fp32 while classification may run in bf16.

The probe is PROBE_TILES (200, fewer for large tiles) normalised tiles of noise and smooth
blob fields (seeded), or tiles the caller passes (`Classifier.set_precision(probe=...)`, e.g.
tiles of the first real image). The environment variable CELLCLF_PRECISION sets the default
("auto" when unset): the test suite pins fp32 there, because its references are fp32.
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")
ARGMAX_AGREEMENT = 0.995  # share of probe tiles whose predicted class must not change
PROBABILITY_TOLERANCE = 0.02  # largest allowed |p_bf16 - p_fp32| of any class on any probe tile
RANK_CORRELATION = 0.99  # mean per-tile Spearman of gradient x input maps vs fp32
PROBE_TILES = 200  # 200: one disagreeing tile still passes 99.5 %
PROBE_PIXELS = 200 * 64 * 64  # cap on probe size for large tiles (time of the probe)
ENV_VAR = "CELLCLF_PRECISION"


@dataclass
class PrecisionReport:
    """What was chosen and why; `summary()` is the line the CLI and the widget show."""

    precision: str  # "fp32" | "bf16" | "fp16" (CUDA without bf16)
    explain_precision: str  # precision of gradient x input
    requested: str
    reason: str
    hardware: str = ""
    argmax_agreement: float | None = None
    max_probability_difference: float | None = None
    rank_correlation: float | None = None
    probe_tiles: int = 0
    extra: dict = field(default_factory=dict)

    def summary(self) -> str:
        text = f"precision {self.precision} (attribution {self.explain_precision}; {self.reason})"
        if self.argmax_agreement is not None:
            text += (
                f"; probe of {self.probe_tiles} tiles: same class on "
                f"{self.argmax_agreement:.1%}, probabilities within "
                f"{self.max_probability_difference:.2g}"
            )
            if self.rank_correlation is not None:
                text += f", attribution rank correlation {self.rank_correlation:.4f}"
        return text

    def to_dict(self) -> dict:
        return asdict(self)


def requested_precision(precision: str | None) -> str:
    """None -> $CELLCLF_PRECISION or "auto"; ValueError for anything but auto/fp32/bf16."""
    if precision is None:
        precision = os.environ.get(ENV_VAR, "").strip() or "auto"
    text = str(precision).strip().lower()
    text = {"float32": "fp32", "bfloat16": "bf16", "32": "fp32"}.get(text, text)
    if text not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return text


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_support(flags: set[str] | None = None, capability: str | None = None) -> tuple[bool, str]:
    """(native bf16 compute on this CPU, why). Detected, never assumed: the CPU must report
    avx512_bf16 or amx_bf16 (Linux /proc/cpuinfo), PyTorch's kernels must be built for an AVX512
    or AMX level, and oneDNN must accept bf16. Elsewhere (macOS, Windows, ARM) bf16 would be
    emulated or unverified, so "auto" keeps fp32 there."""
    if capability is None:
        try:
            capability = str(torch.backends.cpu.get_cpu_capability())
        except (AttributeError, RuntimeError):
            capability = "unknown"
    flags = _cpu_flags() if flags is None else set(flags)
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if not native:
        machine = platform.machine() or "this CPU"
        return False, f"{machine} reports no avx512_bf16/amx_bf16 (kernels: {capability})"
    if "AVX512" not in capability.upper() and "AMX" not in capability.upper():
        return False, f"CPU has {'+'.join(native)} but PyTorch runs {capability} kernels"
    mkldnn_ok = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if not torch.backends.mkldnn.is_available() or (mkldnn_ok is not None and not mkldnn_ok()):
        return False, "oneDNN bf16 is not available in this PyTorch build"
    return True, f"CPU has {'+'.join(native)}, kernels {capability}"


def probe_batch(in_channels: int, tile_size: int, n: int | None = None, seed: int = 0) -> torch.Tensor:
    """(n, C, T, T) float32 tiles in the normalised range: half white noise in [0, 1], half
    smooth blob fields (noise averaged over growing windows, stretched to [0, 1], a few bright
    spots), so that both textures and cell-like structures are probed."""
    if n is None:
        n = int(np.clip(PROBE_PIXELS // tile_size**2, 16, PROBE_TILES))
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, in_channels, tile_size, tile_size, generator=generator)
    smooth = noise.clone()
    for i in range(n // 2, n):
        k = 3 + 2 * (i % max(1, tile_size // 8))
        blurred = torch.nn.functional.avg_pool2d(
            noise[i : i + 1], k, stride=1, padding=k // 2, count_include_pad=False
        )
        low = blurred.amin(dim=(2, 3), keepdim=True)
        high = blurred.amax(dim=(2, 3), keepdim=True)
        smooth[i] = ((blurred - low) / (high - low + 1e-6))[0] ** 2
    return smooth.contiguous(memory_format=torch.channels_last)


class CastNet(nn.Module):
    """Runs `net` (which takes and returns `dtype`) on float32 inputs, returns float32 logits;
    autograd flows through both casts, so gradient x input works unchanged."""

    net: nn.Module
    dtype: torch.dtype

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.dtype)).float()


class AutocastNet(nn.Module):
    """Runs `net` under torch.autocast (any model: ensembles, batch norm, custom layers)."""

    net: nn.Module
    device_type: str
    dtype: torch.dtype

    def __init__(self, net: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.net, self.device_type, self.dtype = net, device_type, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            return self.net(x).float()


def compare_probabilities(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
    """(share of tiles with the same argmax, largest absolute probability difference)."""
    p_ref = torch.softmax(reference.float(), dim=1)
    p_new = torch.softmax(candidate.float(), dim=1)
    same = (p_ref.argmax(dim=1) == p_new.argmax(dim=1)).float().mean().item()
    return float(same), float((p_ref - p_new).abs().max().item()) if len(p_ref) else 0.0


def rank_correlation(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """Mean over tiles of the Spearman rank correlation of two (N, ...) attribution maps."""
    a = reference.float().reshape(len(reference), -1)
    b = candidate.float().reshape(len(candidate), -1)

    def ranks(values: torch.Tensor) -> torch.Tensor:
        order = values.argsort(dim=1)
        out = torch.empty_like(values)
        out.scatter_(
            1, order, torch.arange(values.shape[1], dtype=values.dtype).expand_as(values).contiguous()
        )
        return out - out.mean(dim=1, keepdim=True)

    ra, rb = ranks(a), ranks(b)
    denominator = (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)
    correlation = (ra * rb).sum(dim=1) / denominator
    # A tile whose fp32 map is flat (all zeros: a dead input) says nothing either way.
    informative = a.std(dim=1) > 0
    if not bool(informative.any()):
        return 1.0
    return float(correlation[informative].mean().item())


def _gradient_x_input(net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    with torch.inference_mode(False), torch.enable_grad():
        logits = net(x)
        (gradient,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
    return (gradient * x).detach()


def _logits(net: nn.Module, probe: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([net(probe[i : i + batch_size]).float() for i in range(0, len(probe), batch_size)])


def select(
    classifier, precision: str | None = None, probe: torch.Tensor | np.ndarray | None = None
) -> tuple[nn.Module | None, nn.Module | None, PrecisionReport]:
    """(net for classifying, net for attribution, report) for a Classifier whose fp32 nets are
    in place (`classifier._fp32_net`, `classifier.model`). A None net means: the fp32 one (on CUDA
    "bf16"/"fp16" is applied by the Classifier's autocast, as before)."""
    requested = requested_precision(precision)
    device = classifier.device
    if requested == "fp32":
        return None, None, PrecisionReport("fp32", "fp32", requested, "fp32 asked for")
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        hardware = "CUDA " + ("bf16" if dtype == torch.bfloat16 else "fp16 (no bf16)")
        candidate: nn.Module = AutocastNet(classifier._fp32_net, "cuda", dtype)
        label = "bf16" if dtype == torch.bfloat16 else "fp16"
    elif device.type == "cpu":
        native, hardware = cpu_bf16_support()
        if requested == "auto" and not native:
            return (
                None,
                None,
                PrecisionReport("fp32", "fp32", requested, "no native bf16 on this CPU", hardware),
            )
        if getattr(classifier, "backend", "") == "compile" or classifier._compile_pending:
            return (
                None,
                None,
                PrecisionReport("fp32", "fp32", requested, "backend 'compile' runs fp32 only", hardware),
            )
        candidate = _cpu_bf16_net(classifier)
        label = "bf16"
    else:
        return None, None, PrecisionReport("fp32", "fp32", requested, f"bf16 not offered on {device.type}")
    if requested == "bf16":
        return candidate, candidate, PrecisionReport(label, label, requested, "bf16 asked for", hardware)

    if probe is None:
        probe = probe_batch(classifier.in_channels, classifier.tile_size)
    elif isinstance(probe, np.ndarray):
        probe = torch.from_numpy(np.ascontiguousarray(probe, dtype=np.float32))
    probe = probe.to(device).contiguous(memory_format=torch.channels_last)
    try:
        reference = _logits(classifier._fp32_net, probe, classifier.batch_size)
        fast = _logits(candidate, probe, classifier.batch_size)
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as error:
        # A model with layers that have no bf16 kernel (or a custom one): fp32 always works.
        return (
            None,
            None,
            PrecisionReport(
                "fp32", "fp32", requested, f"{label} failed on this model ({type(error).__name__})", hardware
            ),
        )
    agreement, difference = compare_probabilities(reference, fast)
    report = PrecisionReport("fp32", "fp32", requested, "", hardware, agreement, difference, None, len(probe))
    if agreement < ARGMAX_AGREEMENT or difference > PROBABILITY_TOLERANCE:
        report.reason = (
            f"the probe disagreed in {label} (needs >= {ARGMAX_AGREEMENT:.1%} same "
            f"class and probabilities within {PROBABILITY_TOLERANCE})"
        )
        return None, None, report
    report.precision = label
    # Attribution: on a subset of the probe (it costs a backward pass).
    subset = probe[: min(len(probe), 64)]
    target = reference[: len(subset)].argmax(dim=1)
    try:
        fp32_maps = _gradient_x_input(classifier._fp32_net, subset, target)
        fast_maps = _gradient_x_input(candidate, subset, target)
        report.rank_correlation = rank_correlation(fp32_maps.sum(dim=1), fast_maps.sum(dim=1))
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        report.rank_correlation = float("nan")  # no gradient in bf16: attribution in fp32
    if report.rank_correlation >= RANK_CORRELATION:
        report.explain_precision = label
        report.reason = "native bf16 and the probe agreed"
        return candidate, candidate, report
    report.reason = (
        f"native bf16 and the probe agreed; attribution stays fp32 (rank correlation "
        f"below {RANK_CORRELATION})"
    )
    return candidate, None, report


def _cpu_bf16_net(classifier) -> nn.Module:
    """The oneDNN net with bf16 packed weights when the model has its shape, else autocast."""
    from ._onednn import onednn_net as _onednn_net

    if classifier.backend == "onednn":
        with contextlib.suppress(RuntimeError, TypeError, ValueError):
            net = _onednn_net(
                classifier.model,
                classifier.in_channels,
                classifier.tile_size,
                classifier.batch_size,
                dtype=torch.bfloat16,
            )
            if net is not None:
                return CastNet(net, torch.bfloat16)
    return AutocastNet(classifier.model, "cpu", torch.bfloat16)
