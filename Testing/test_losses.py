"""Training losses: hand-worked values and the cycle loss's determinism and gradients."""

import pytest
import torch

from TTTInterpolationLib.nn.losses import charbonnier, cycle_loss, grad_l2, ncc_loss
from TTTInterpolationLib.nn.networks import UVINet


def test_grad_l2_of_a_linear_field_is_hand_computed():
    # channel 0 = a * i along dim 1: forward differences are a there, 0 elsewhere.
    a = 0.3
    flow = torch.zeros(1, 3, 6, 5, 4)
    flow[:, 0] = a * torch.arange(6, dtype=torch.float32).view(6, 1, 1)
    # mean over the 3 channels of d1^2 is a^2 / 3; the other axes give 0; average of 3 axes.
    assert float(grad_l2(flow)) == pytest.approx(a**2 / 9, rel=1e-6)


def test_charbonnier_and_ncc_on_identical_volumes():
    x = torch.rand(1, 1, 16, 16, 16)
    assert float(charbonnier(x, x)) == pytest.approx(1e-3, rel=1e-6)
    assert float(charbonnier(x, x + 1.0)) == pytest.approx((1 + 1e-6) ** 0.5, rel=1e-6)
    assert float(ncc_loss(x, x)) < -0.99


def test_cycle_loss_is_seeded_and_reaches_every_network(pair_tensors):
    i0, i1 = pair_tensors
    net = UVINet()
    first = cycle_loss(net, i0, i1, torch.Generator().manual_seed(3))
    second = cycle_loss(net, i0, i1, torch.Generator().manual_seed(3))
    other = cycle_loss(net, i0, i1, torch.Generator().manual_seed(4))
    assert torch.equal(first["total"], second["total"])
    assert not torch.equal(first["total"], other["total"])
    first["total"].backward()
    for part in (net.flow, net.features, net.refine):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_cycle_loss_falls_when_optimised(pair_tensors):
    i0, i1 = pair_tensors
    net = UVINet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = cycle_loss(net, i0, i1, gen)
        loss["total"].backward()
        opt.step()
        losses.append(float(loss["registration"]))
    assert losses[-1] < losses[0]
