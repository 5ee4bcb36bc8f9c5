"""Precision: float32 training by default on CPU, bfloat16 inference where the CPU has bfloat16
units, bfloat16 training on request, all within the stated tolerance.

The tolerance (also printed by ``benchmarks/bench_speed.py``): with bfloat16 autocast the frames
stay within 5e-3 of float32 and their PSNR within 0.05 dB; a step's loss within 2 % and its
gradient has cosine >= 0.999 with the float32 one. The channels-last layout changes nothing
but float rounding.
"""

import math

import pytest
import torch

from TTTInterpolationLib.models.ttt_model import TTTModel
from TTTInterpolationLib.nn.losses import cycle_loss
from TTTInterpolationLib.nn.networks import channels_last_layout
from TTTInterpolationLib.runtime import precision
from TTTInterpolationLib.runtime.precision import (
    auto_precision,
    inference_precision,
    resolve_precision,
)

from .conftest import blob_pair

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> TTTModel:
    torch.manual_seed(0)
    m = TTTModel()
    torch.nn.init.normal_(m.uvinet.refine.out.weight, std=0.05)  # a visible residual
    torch.nn.init.normal_(m.uvinet.flow.head.weight, std=0.01)  # and a visible flow
    return m


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    a, b = blob_pair((32, 32, 16), shift=2.0)
    return torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]


def _psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return 20 * math.log10(1 / math.sqrt(float(((x.double() - y.double()) ** 2).mean())))


@pytest.mark.parametrize("fast", [True, False])
def test_auto_trains_fp32_on_cpu_and_infers_bf16_only_with_bf16_units(monkeypatch, fast):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    assert resolve_precision("auto", CPU) is None  # bit-reproducible by seed
    assert inference_precision("auto", CPU) is (torch.bfloat16 if fast else None)
    assert inference_precision("fp32", CPU) is None
    assert resolve_precision("bf16", CPU) is torch.bfloat16
    assert inference_precision("bf16", CPU) is torch.bfloat16
    with auto_precision("bf16"):
        assert resolve_precision("auto", CPU) is torch.bfloat16
        assert inference_precision("auto", CPU) is torch.bfloat16
    with auto_precision("fp32"):
        assert resolve_precision("auto", CPU) is None
    assert inference_precision("auto", torch.device("cuda")) is None


def test_cpu_detection_returns_a_bool():
    assert isinstance(precision.cpu_has_fast_bf16(), bool)


def test_bf16_inference_is_reproducible_run_to_run(model, pair):
    """What lets bfloat16 be the CPU inference default: the same frames every run."""
    runs = [torch.cat(model.uvinet.interpolate(*pair, [0.3, 0.6], precision="bf16"))
            for _ in range(3)]
    assert all(torch.equal(runs[0], r) for r in runs[1:])


def test_bf16_inference_within_tolerance_of_fp32(model, pair):
    i0, i1 = pair
    times = [0.25, 0.5, 0.75]
    ref = torch.cat(model.uvinet.interpolate(i0, i1, times, precision="fp32"))
    out = torch.cat(model.uvinet.interpolate(i0, i1, times, precision="bf16"))
    assert out.dtype == torch.float32
    assert float((out - ref).abs().max()) <= 5e-3
    truth = torch.cat([(1 - t) * i0 + t * i1 for t in times])
    assert abs(_psnr(out, truth) - _psnr(ref, truth)) <= 0.05


def _step(model: TTTModel, pair, dtype) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with precision.autocast(CPU, dtype):
        loss = cycle_loss(model.uvinet, *pair, torch.Generator().manual_seed(0))["total"]
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.uvinet.parameters()])
    return float(loss.detach()), grads


def test_bf16_training_step_within_tolerance_of_fp32(model, pair):
    loss_ref, g_ref = _step(model, pair, None)
    loss_bf, g_bf = _step(model, pair, torch.bfloat16)
    assert abs(loss_bf - loss_ref) <= 0.02 * abs(loss_ref)
    assert float(torch.nn.functional.cosine_similarity(g_ref, g_bf, dim=0)) >= 0.999


def test_channels_last_layout_changes_only_rounding(model, pair):
    i0, i1 = pair
    with channels_last_layout(False):
        ref = torch.cat(model.uvinet.interpolate(i0, i1, [0.5], precision="fp32"))
        loss_ref, g_ref = _step(model, pair, None)
    out = torch.cat(model.uvinet.interpolate(i0, i1, [0.5], precision="fp32"))
    loss, g = _step(model, pair, None)
    assert float((out - ref).abs().max()) <= 1e-5
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    assert float((g - g_ref).norm() / g_ref.norm()) <= 1e-4
