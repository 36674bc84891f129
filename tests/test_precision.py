"""bf16 inference: chosen when the hardware has it and a probe agrees with fp32, refused otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellclf import precision
from napari_cellclf.attribution import explain_field_sync
from napari_cellclf.data import Normalization
from napari_cellclf.inference import Classifier
from napari_cellclf.model import build_model
from napari_cellclf.modelfile import ModelMeta, default_class_colors
from napari_cellclf.synthetic import make_field

TILE = 16
NATIVE, WHY = precision.cpu_bf16_support()
needs_bf16 = pytest.mark.skipif(not NATIVE, reason=f"no native bf16 here: {WHY}")


def meta(tile=TILE) -> ModelMeta:
    return ModelMeta(
        class_names=["Control", "Aggregates"],
        class_colors=default_class_colors(2),
        channel_names=["nuclei", "protein"],
        tile_size=tile,
        architecture="original",
        normalization=Normalization(low=[20.0, 20.0], high=[1500.0, 600.0]).to_dict(),
    )


def model(seed=0, arch="original", tile=TILE):
    torch.manual_seed(seed)
    return build_model(arch, 2, 2, tile)


def tied_model(seed=0):
    """Logits of both classes nearly equal (the rows of the last layer differ by +-0.1 %
    relative, signs at random, so which logit wins varies from tile to tile): fp32 separates
    them, bf16 (8 mantissa bits, 0.4 % steps) rounds both rows to the same weights."""
    net = model(seed)
    last = net.classifier[-1]
    signs = torch.randint(0, 2, last.weight[0].shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        last.weight[1] = last.weight[0] * (1 + 1e-3 * (2 * signs - 1))
        last.bias[1] = last.bias[0]
    return net


def test_requested_precision_parses_and_rejects(monkeypatch):
    monkeypatch.delenv(precision.ENV_VAR, raising=False)
    assert precision.requested_precision(None) == "auto"
    assert precision.requested_precision("BF16") == "bf16"
    assert precision.requested_precision("float32") == "fp32"
    monkeypatch.setenv(precision.ENV_VAR, "fp32")
    assert precision.requested_precision(None) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.requested_precision("fp8")
    with pytest.raises(ValueError, match="precision must be one of"):
        Classifier(model(), meta(), device="cpu", precision="half")


def test_cpu_detection_reads_flags_and_kernel_level():
    assert precision.cpu_bf16_support(flags={"avx512f", "avx2"}, capability="AVX512")[0] is False
    ok, why = precision.cpu_bf16_support(flags={"avx512_bf16"}, capability="AVX2")
    assert not ok and "AVX2" in why  # PyTorch would not use the bf16 units
    # flags and kernel level given, oneDNN's own bf16 check (of the real CPU) still decides:
    # on a CPU without bf16 units (AVX2-only machines) it says no, and the reason names it
    ok, why = precision.cpu_bf16_support(flags={"amx_bf16"}, capability="AVX512")
    onednn_check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert ok == (torch.backends.mkldnn.is_available() and bool(onednn_check()))
    if not ok:
        assert "oneDNN" in why


def test_fp32_forced_and_no_native_bf16_keep_fp32(monkeypatch):
    forced = Classifier(model(), meta(), device="cpu", precision="fp32")
    assert forced.precision == "fp32" and forced.precision_report.reason == "fp32 asked for"
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (False, "test: no bf16"))
    auto = Classifier(model(), meta(), device="cpu", precision="auto")
    assert auto.precision == "fp32" and "no native bf16" in auto.precision_report.summary()


@needs_bf16
def test_auto_chooses_bf16_when_the_probe_agrees():
    classifier = Classifier(model(), meta(), device="cpu", precision="auto")
    report = classifier.precision_report
    assert classifier.precision == "bf16", report.summary()
    assert report.argmax_agreement >= precision.ARGMAX_AGREEMENT
    assert report.max_probability_difference <= precision.PROBABILITY_TOLERANCE
    # On real-looking pixels too: same classes, probabilities within the stated tolerance.
    field = make_field("puncta", (160, 160), seed=3).image
    reference = Classifier(model(), meta(), device="cpu", precision="fp32")
    fast, exact = (c.predict_field_sync(field, stride=TILE) for c in (classifier, reference))
    assert np.abs(fast.probabilities - exact.probabilities).max() <= precision.PROBABILITY_TOLERANCE
    assert (fast.predicted == exact.predicted).mean() >= 0.95


@needs_bf16
def test_auto_refuses_bf16_when_the_probe_disagrees():
    tied = Classifier(tied_model(), meta(), device="cpu", precision="auto")
    report = tied.precision_report
    assert tied.precision == "fp32" and report.explain_precision == "fp32"
    assert report.argmax_agreement < precision.ARGMAX_AGREEMENT
    assert "disagreed" in report.reason
    # Forcing bf16 still works (the user asked for it), and reports it.
    forced = Classifier(tied_model(), meta(), device="cpu", precision="bf16")
    assert forced.precision == "bf16"


@needs_bf16
def test_attribution_precision_follows_the_rank_rule(monkeypatch):
    monkeypatch.setattr(precision, "RANK_CORRELATION", -1.0)  # any map passes
    lenient = Classifier(model(), meta(), device="cpu", precision="auto")
    assert lenient.precision_report.explain_precision == "bf16"
    monkeypatch.setattr(precision, "RANK_CORRELATION", 1.01)  # no map can pass
    strict = Classifier(model(), meta(), device="cpu", precision="auto")
    assert strict.precision == "bf16" and strict.precision_report.explain_precision == "fp32"
    field = make_field("puncta", (96, 96), seed=1).image
    exact = Classifier(model(), meta(), device="cpu", precision="fp32")
    # fp32 attribution when the rule refused bf16: the same maps as a pure fp32 Classifier.
    np.testing.assert_allclose(
        explain_field_sync(strict, field), explain_field_sync(exact, field), rtol=1e-4, atol=1e-6
    )
    approximate = explain_field_sync(lenient, field)
    reference = explain_field_sync(exact, field)
    assert (
        precision.rank_correlation(torch.from_numpy(reference)[None], torch.from_numpy(approximate)[None])
        > 0.9
    )


def test_rank_correlation_and_probability_comparison():
    a = torch.arange(20.0).reshape(2, 10)
    assert precision.rank_correlation(a, a * 3 + 1) == pytest.approx(1.0)
    assert precision.rank_correlation(a, -a) == pytest.approx(-1.0)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    same, diff = precision.compare_probabilities(logits, logits.flip(1))
    assert same == 0.0 and diff > 0.5
