"""The private-op oneDNN backend (_onednn.py) fails loudly here when a torch upgrade breaks it.

At run time a broken backend only makes the Classifier fall back to eager PyTorch (slower, still
right); these tests make the breakage visible instead: port _onednn.py to the new torch, or measure
again (benchmarks/bench_backend.py) and delete it if it no longer pays (benchmarks/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellclf import _onednn
from napari_cellclf.data import Normalization
from napari_cellclf.inference import Classifier
from napari_cellclf.model import ARCHITECTURES, build_model, prepare_for_device
from napari_cellclf.modelfile import ModelMeta, default_class_colors
from napari_cellclf.precision import cpu_bf16_support

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(),
    reason="this torch build has no oneDNN (not a CPU build for x86/ARM)",
)
BROKEN = (
    f"torch {torch.__version__}: the oneDNN backend no longer applies; port _onednn.py or "
    "re-measure with benchmarks/bench_backend.py and delete it"
)


def _model(architecture: str, tile: int = 32):
    torch.manual_seed(0)
    return prepare_for_device(build_model(architecture, 2, 3, tile).eval(), torch.device("cpu"))


def test_the_private_ops_exist():
    assert _onednn.available(), BROKEN


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_takes_the_fused_path_and_agrees(architecture):
    model = _model(architecture)
    net = _onednn.onednn_net(model, 2, 32, 4)
    assert net is not None, f"{architecture}: {BROKEN}"
    x = torch.randn(4, 2, 32, 32, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(net(x), model(x), rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(not cpu_bf16_support()[0], reason="no native bf16 on this CPU")
def test_bf16_weights_pack():
    net = _onednn.onednn_net(_model("original"), 2, 32, 4, dtype=torch.bfloat16)
    assert net is not None, BROKEN


def test_the_default_cpu_classifier_uses_it():
    meta = ModelMeta(
        class_names=["a", "b", "c"],
        class_colors=default_class_colors(3),
        channel_names=["x", "y"],
        tile_size=32,
        architecture="original",
        normalization=Normalization(low=[0.0, 0.0], high=[1.0, 1.0]).to_dict(),
    )
    classifier = Classifier(_model("original"), meta, device="cpu", precision="fp32")
    assert classifier.backend == "onednn", BROKEN
    field = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)
    eager = Classifier(_model("original"), meta, device="cpu", backend="eager", precision="fp32")
    np.testing.assert_allclose(
        classifier.predict_field_sync(field).probabilities,
        eager.predict_field_sync(field).probabilities,
        atol=1e-4,
    )
