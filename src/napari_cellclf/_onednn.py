"""The CPU backend on private oneDNN ops: each stride-1 convolution fused with the ReLU (and max
pool) after it, weights packed once into oneDNN's blocked layout (fp32 or bf16), with its own
input-gradient convolution for attribution. No Qt.

Kept because it measures faster than the public alternatives on the default models
(benchmarks/README.md, "Backend decision"). It uses private torch API —
`torch._C._nn.mkldnn_reorder_conv2d_weight`, `torch.ops.mkldnn._convolution_pointwise` and aten
convolution-backward ops — so a torch upgrade may break it: `onednn_net` then returns None and the
Classifier runs eager PyTorch, and tests/test_onednn.py fails loudly so the breakage is seen.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def _pack_weight(weight: torch.Tensor, padding: list[int], input_shape) -> torch.Tensor:
    """Convolution weight reordered once into oneDNN's blocked layout (any batch size works)."""
    # A private op: torch's type stub lists it without the input-size argument it takes.
    reorder: Any = torch._C._nn.mkldnn_reorder_conv2d_weight
    return reorder(weight.to_mkldnn(), padding, [1, 1], [1, 1], 1, list(input_shape))


class _FusedConv:
    """A stride-1 Conv2d, the ReLU after it when there is one, and the max pool after that when
    there is one, as one step: the convolution and ReLU are one oneDNN call."""

    def __init__(
        self,
        conv: nn.Conv2d,
        relu: bool,
        input_shape: tuple[int, ...],
        pool: nn.MaxPool2d | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        weight = conv.weight.detach().to(dtype).contiguous()
        if isinstance(conv.padding, str):  # _fusable lets only numeric padding through
            raise ValueError(f"padding {conv.padding!r} cannot be fused")
        (kh, kw), (ph, pw) = conv.kernel_size, conv.padding
        self.relu = relu
        self.padding = [ph, pw]
        self.bias = None if conv.bias is None else conv.bias.detach().to(dtype).contiguous()
        self.weight = _pack_weight(weight, self.padding, input_shape)
        # The input gradient of a stride-1 convolution is the convolution of the output gradient
        # with the kernel flipped and its in/out channels swapped, padded by k - 1 - p.
        self.back_padding = [kh - 1 - ph, kw - 1 - pw]
        self.back_weight = _pack_weight(
            weight.transpose(0, 1).flip(2, 3).contiguous(),
            self.back_padding,
            (input_shape[0], conv.out_channels, *input_shape[2:]),
        )
        self.pool = pool
        if pool is not None:
            stride = pool.kernel_size if pool.stride is None else pool.stride
            self.pool_args = [
                _pair(pool.kernel_size),
                _pair(stride),
                _pair(pool.padding),
                _pair(pool.dilation),
                bool(pool.ceil_mode),
            ]

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x,
            self.weight,
            self.bias,
            self.padding,
            [1, 1],
            [1, 1],
            1,
            "relu" if self.relu else "none",
            [],
            "",
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        output = self.convolve(x)
        return output if self.pool is None else self.pool(output)

    def convolve_back(self, grad: torch.Tensor) -> torch.Tensor:
        """Gradient with respect to the convolution's input, given the one of its output."""
        return torch.ops.mkldnn._convolution_pointwise(
            grad.contiguous(memory_format=torch.channels_last),
            self.back_weight,
            None,
            self.back_padding,
            [1, 1],
            [1, 1],
            1,
            "none",
            [],
            "",
        )


class _FusedConvFunction(torch.autograd.Function):
    """Autograd for a fused step: the input gradient only (weights stay fixed: attribution)."""

    @staticmethod
    def forward(ctx, x, step: _FusedConv):
        ctx.step = step
        output = step.convolve(x)
        if step.pool is None:
            ctx.save_for_backward(output)
            return output
        pooled, indices = torch.ops.aten.max_pool2d_with_indices(output, *step.pool_args)
        ctx.save_for_backward(output, pooled, indices)
        return pooled

    @staticmethod
    def backward(ctx, grad):
        step = ctx.step
        if step.pool is None:
            (output,) = ctx.saved_tensors
            if step.relu:
                grad = torch.ops.aten.threshold_backward(grad, output, 0)
        else:
            output, pooled, indices = ctx.saved_tensors
            # ReLU's mask is applied before un-pooling, on the smaller pooled gradient: the pool
            # hands each window's gradient to the window's maximum, which is > 0 exactly when
            # the pooled value is, so masking before or after un-pooling gives the same result.
            grad = torch.ops.aten.threshold_backward(grad, pooled, 0)
            grad = torch.ops.aten.max_pool2d_with_indices_backward(grad, output, *step.pool_args, indices)
        return step.convolve_back(grad), None


class _OneDNNNet(nn.Module):
    """The model as a sequence of fused oneDNN steps and the model's own other layers."""

    def __init__(self, steps: list):
        super().__init__()
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        track = torch.is_grad_enabled() and x.requires_grad
        for step in self.steps:
            if isinstance(step, _FusedConv):
                x = _FusedConvFunction.apply(x, step) if track else step(x)
            else:
                x = step(x)
        return x


# Layers the oneDNN network runs as they are (besides the convolutions it fuses).
_PLAIN_LAYERS = (
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Linear,
    nn.Dropout,
    nn.Identity,
)


def _leaf_sequence(module: nn.Module) -> list[nn.Module] | None:
    """The layers in the order a chain of Sequentials runs them; None for anything else."""
    children = list(module.children())
    if not children:
        return [module]
    if not isinstance(module, nn.Sequential) and not all(
        isinstance(child, nn.Sequential) for child in children
    ):
        return None
    layers: list[nn.Module] = []
    for child in children:
        sub = _leaf_sequence(child)
        if sub is None:
            return None
        layers += sub
    return layers


def onednn_net(
    model: nn.Module, in_channels: int, tile_size: int, batch_size: int, dtype: torch.dtype = torch.float32
) -> _OneDNNNet | None:
    """The oneDNN version of `model`, or None when it does not apply or does not agree with the
    model (outputs and input gradients are compared on a random probe batch). With dtype
    torch.bfloat16 the weights are packed in bf16 and the net takes and returns bf16 tensors;
    it is not compared here (precision.py's probe rule decides whether bf16 may be used)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return None
    layers = _leaf_sequence(model)
    if layers is None:
        return None
    try:
        steps: list = []
        x = torch.zeros(1, in_channels, tile_size, tile_size)
        with torch.inference_mode():
            i = 0
            while i < len(layers):
                layer = layers[i]
                if isinstance(layer, nn.Conv2d):
                    if not _fusable(layer):
                        return None
                    relu = _is_layer(layers, i + 1, nn.ReLU)
                    after = layers[i + 2] if relu and i + 2 < len(layers) else None
                    pool = after if isinstance(after, nn.MaxPool2d) and not after.return_indices else None
                    used = layers[i : i + 1 + relu + (pool is not None)]
                    steps.append(_FusedConv(layer, relu, (batch_size, *x.shape[1:]), pool, dtype))
                    for module in used:
                        x = module(x)
                    i += len(used)
                elif isinstance(layer, _PLAIN_LAYERS):
                    if dtype != torch.float32 and next(layer.parameters(), None) is not None:
                        with torch.inference_mode(False):  # weights autograd may use
                            steps.append(copy.deepcopy(layer).to(dtype))
                    else:
                        steps.append(layer)
                    x = layer(x)
                    i += 1
                else:
                    return None
        net = _OneDNNNet(steps)
        if dtype != torch.float32:
            return net
        return net if _agrees(net, model, in_channels, tile_size) else None
    except (RuntimeError, TypeError, ValueError, AttributeError, NotImplementedError):
        return None  # a PyTorch build whose oneDNN ops differ: eager is always there


def _is_layer(layers: list[nn.Module], i: int, kind: type) -> bool:
    return i < len(layers) and isinstance(layers[i], kind)


def _pair(value) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * 2


def _fusable(conv: nn.Conv2d) -> bool:
    return (
        conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and all(p <= k - 1 for p, k in zip(conv.padding, conv.kernel_size))
        and conv.weight.dtype == torch.float32
    )


def _agrees(net: nn.Module, model: nn.Module, in_channels: int, tile_size: int) -> bool:
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(3, in_channels, tile_size, tile_size, generator=generator)
    probe = probe.contiguous(memory_format=torch.channels_last)
    outputs, gradients = [], []
    for candidate in (model, net):
        x = probe.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = candidate(x)
            (gradient,) = torch.autograd.grad(logits[:, 0].sum(), x)
        outputs.append(logits.detach())
        gradients.append(gradient)

    def close(fast: torch.Tensor, reference: torch.Tensor) -> bool:
        scale = float(reference.abs().max())
        return bool(torch.allclose(fast, reference, rtol=1e-3, atol=1e-4 * scale + 1e-7))

    return close(outputs[1], outputs[0]) and close(gradients[1], gradients[0])


def available() -> bool:
    """The private ops this backend needs exist in this torch build."""
    return bool(
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
    )
