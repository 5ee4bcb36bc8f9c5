"""UVI-Net architecture: published sizes, any size divisible by 16, untrained ~ linear blend."""

import pytest
import torch
import torch.nn.functional as F

from TTTInterpolationLib.config import ModelConfig
from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.nn.networks import UVINet, check_spatial_size


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_published_model():
    net = UVINet()
    assert _count(net.features) == 13556  # 1->4->4, 4->8->8, 8->16->16 (3^3 kernels + biases)
    assert _count(net) == pytest.approx(0.51e6, rel=0.02)


@pytest.mark.parametrize("shape", [(32, 48, 16), (16, 16, 16), (64, 32, 32)])
def test_any_size_divisible_by_16(shape):
    net = UVINet()
    i0, i1 = torch.rand(1, 1, *shape), torch.rand(1, 1, *shape)
    phi01, phi10 = net.flow(i0, i1)
    assert phi01.shape == phi10.shape == (1, 3, *shape)
    frames = net.interpolate(i0, i1, [0.25, 0.75])
    assert [f.shape for f in frames] == [(1, 1, *shape)] * 2


def _with_visible_flow(net: UVINet) -> UVINet:
    torch.manual_seed(1)
    torch.nn.init.normal_(net.flow.head.weight, std=0.05)
    return net


def test_half_resolution_flow_is_the_full_flow_of_the_halved_frames_upsampled():
    # Frames that are exact 2x2x2 blocks average down to the small frames without loss, so
    # the half-resolution flows must be the small frames' full-resolution flows, upsampled
    # and doubled (voxel units of the large grid).
    torch.manual_seed(0)
    full = _with_visible_flow(UVINet())
    half = UVINet(ModelConfig(flow_resolution="half"))
    half.load_state_dict(full.state_dict())
    small = [torch.rand(1, 1, 16, 32, 16) for _ in range(2)]
    large = [x.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)
             for x in small]
    with torch.no_grad():
        expected = [2 * F.interpolate(f, scale_factor=2, mode="trilinear", align_corners=False)
                    for f in full.flow(*small)]
        got = half.flow(*large)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == (1, 3, 32, 64, 32)
        assert float(e.abs().max()) > 1e-3  # a flow worth comparing
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def test_half_resolution_flow_takes_any_size_divisible_by_16_and_trains():
    # 16 slices halve to 8, which the flow network cannot take: padded, then cropped back.
    net = _with_visible_flow(UVINet(ModelConfig(flow_resolution="half")))
    i0, i1 = torch.rand(1, 1, 32, 48, 16), torch.rand(1, 1, 32, 48, 16)
    flows = net.flow(i0, i1)
    assert [f.shape for f in flows] == [(1, 3, 32, 48, 16)] * 2
    net(i0, i1, 0.5).square().mean().backward()
    assert float(net.flow.encoder[0][0].weight.grad.abs().sum()) > 0
    with pytest.raises(InputError, match="flow resolution"):
        ModelConfig(flow_resolution="quarter")


def test_untrained_model_is_close_to_linear_blending(pair_tensors):
    i0, i1 = pair_tensors
    frame = UVINet().interpolate(i0, i1, [0.3])[0]
    assert torch.allclose(frame, 0.7 * i0 + 0.3 * i1, atol=1e-3)


def test_interpolate_clamps_but_forward_does_not():
    net = UVINet()
    with torch.no_grad():
        net.refine.out.bias.fill_(2.0)  # a large residual pushes the frame above 1
    i0 = i1 = torch.full((1, 1, 16, 16, 16), 0.5)
    assert net.interpolate(i0, i1, [0.5])[0].max() == 1.0
    assert net(i0, i1, 0.5).max() > 2.0


def test_per_batch_times_and_width_scaling():
    net = UVINet(ModelConfig(width=0.5))
    assert _count(net) < 0.2e6
    i0, i1 = torch.rand(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16, 16)
    out = net(i0, i1, torch.tensor([0.2, 0.8]))
    assert out.shape == (2, 1, 16, 16, 16)


def test_check_spatial_size():
    check_spatial_size((32, 16, 48))
    with pytest.raises(ValueError, match="multiple of 16"):
        check_spatial_size((32, 20, 16))
