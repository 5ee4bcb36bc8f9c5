"""Motion held in-plane for stacks of thick slices: which axis, the flows, every workflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import TTTInterpolationLib as tl
from TTTInterpolationLib.config import ModelConfig, TTTConfig
from TTTInterpolationLib.data.slices import through_plane_axis
from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.models.ttt import Case, adapt_and_apply
from TTTInterpolationLib.nn.networks import UVINet, motion_held_along
from TTTInterpolationLib.nn.temporal import TemporalUVINet
from TTTInterpolationLib.volume import Geometry, Sequence4D

from .conftest import blob_pair


@pytest.mark.parametrize(("spacing", "shape", "motion", "axis"), [
    ((1.37, 1.37, 10.0), (128, 128, 12), "auto", 2),   # Sunnybrook cine: thick slices
    ((10.0, 1.4, 1.4), (9, 128, 128), "auto", 0),      # slices along the first axis
    ((1.0, 1.0, 1.0), (100, 95, 7), "auto", 2),        # ACDC 4D: spacing lost, few slices
    ((1.0, 1.0, 1.0), (64, 64, 64), "auto", None),     # isotropic volume: free 3D motion
    ((1.0, 1.0, 1.0), (32, 32, 16), "auto", None),     # half as many slices is not "few"
    ((1.5, 1.5, 2.5), (128, 128, 40), "auto", None),   # mildly anisotropic CT
    ((1.37, 1.37, 10.0), (128, 128, 12), "3d", None),
    ((1.5, 1.5, 2.5), (128, 128, 40), "in-plane", 2),  # asked for: the largest spacing
    ((1.0, 1.0, 1.0), (64, 64, 32), "in-plane", 2),    # asked for: then the fewest voxels
])
def test_through_plane_axis(spacing, shape, motion, axis):
    assert through_plane_axis(Geometry(spacing=spacing), shape, motion) == axis


def test_through_plane_axis_refuses_an_unknown_motion():
    with pytest.raises(InputError, match="motion"):
        through_plane_axis(Geometry(), (8, 8, 8), "sideways")


@pytest.mark.parametrize("network", [UVINet, TemporalUVINet])
def test_flows_hold_still_along_the_axis_only_inside_the_context(network, pair_tensors):
    torch.manual_seed(0)
    net = network(ModelConfig()).eval()
    i0, i1 = pair_tensors
    with torch.no_grad():
        free = net.flow(i0, i1)
        with motion_held_along(2):
            held = net.flow(i0, i1)
        after = net.flow(i0, i1)
    assert float(free[0][:, 2].abs().max()) > 0  # the untrained net does move across slices
    for f, h, a in zip(free, held, after, strict=True):
        assert torch.equal(h[:, 2], torch.zeros_like(h[:, 2]))
        torch.testing.assert_close(h[:, :2], f[:, :2])
        assert torch.equal(a, f)


def test_ttt_adapts_and_predicts_each_case_with_its_own_axis(pair_tensors):
    """Cases of one run may differ (a slice stack, then a 3D volume): the flows each case's
    adaptation and prediction see follow that case."""
    i0, i1 = pair_tensors
    model = tl.load_model("untrained", "cpu").model
    cases = [Case(i0, i1, [0.5], held_axis=2), Case(i0, i1, [0.5], held_axis=None)]

    def flows(adapted, case):
        with torch.no_grad():
            return adapted.uvinet.flow(case.i0, case.i1)[0]

    for config in (TTTConfig(), TTTConfig("cycle", steps=1)):
        held, free = adapt_and_apply(model, cases, config, flows)
        assert float(held[:, 2].abs().max()) == 0.0
        assert float(free[:, 2].abs().max()) > 0


def test_every_workflow_takes_the_motion_and_auto_follows_the_geometry():
    a, b = blob_pair((32, 32, 16), shift=3.0)
    thick = Sequence4D(np.stack([a, b, a, b]), Geometry(spacing=(1.0, 1.0, 8.0)))
    frames = {motion: tl.upsample_sequence(thick, 2, ttt=TTTConfig(guard=False),
                                           device="cpu", weights="untrained", motion=motion,
                                           seed=1).frames
              for motion in ("auto", "in-plane", "3d")}
    np.testing.assert_array_equal(frames["auto"], frames["in-plane"])
    assert float(np.abs(frames["in-plane"] - frames["3d"]).max()) > 0
    pair = {motion: tl.interpolate(a, b, [0.5], device="cpu", weights="untrained",
                                   motion=motion, seed=1)[0] for motion in ("auto", "in-plane")}
    assert float(np.abs(pair["auto"] - pair["in-plane"]).max()) > 0  # 32x32x16: 3D by shape
    with pytest.raises(InputError, match="motion"):
        tl.interpolate(a, b, [0.5], method="linear", motion="sideways")
