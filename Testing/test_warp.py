"""The warp function: identity, exact integer shifts, zero padding, shape errors."""

import numpy as np
import pytest
import torch

from TTTInterpolationLib.nn.warp import downsample_flow, warp


def _volume(shape=(8, 12, 16)) -> torch.Tensor:
    return torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(1))


def test_zero_flow_is_identity():
    x = _volume()
    assert torch.allclose(warp(x, torch.zeros(1, 3, *x.shape[2:])), x, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_integer_flow_samples_shifted_voxels_with_zero_padding(axis):
    x = _volume()
    flow = torch.zeros(1, 3, *x.shape[2:])
    flow[:, axis] = 2.0  # W(I, phi)(x) = I(x + 2 e_axis)
    out = warp(x, flow)[0, 0].numpy()
    src = x[0, 0].numpy()
    n = src.shape[axis]
    expected = np.zeros_like(src)
    take = [slice(None)] * 3
    put = [slice(None)] * 3
    take[axis], put[axis] = slice(2, n), slice(0, n - 2)
    expected[tuple(put)] = src[tuple(take)]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_half_voxel_flow_interpolates_linearly():
    x = torch.arange(8, dtype=torch.float32).view(1, 1, 8, 1, 1).expand(1, 1, 8, 2, 2).contiguous()
    flow = torch.zeros(1, 3, 8, 2, 2)
    flow[:, 0] = 0.5
    out = warp(x, flow)[0, 0, :7, 0, 0]
    np.testing.assert_allclose(out.numpy(), np.arange(7) + 0.5, atol=1e-5)


def test_shape_mismatch_names_expected_and_actual():
    with pytest.raises(ValueError, match=r"flow must have shape \(B, 3, 8, 12, 16\)"):
        warp(_volume(), torch.zeros(1, 3, 8, 12, 8))


def test_downsample_flow_scales_vectors():
    flow = torch.full((1, 3, 16, 16, 8), 4.0)
    down = downsample_flow(flow, 2)
    assert down.shape == (1, 3, 4, 4, 2)
    assert torch.all(down == 1.0)
    assert downsample_flow(flow, 0) is flow


def test_nearest_mode_keeps_label_values():
    """Labels warped by a fractional flow must stay labels: no blended class numbers."""
    labels = torch.randint(0, 4, (1, 1, 8, 12, 16), generator=torch.Generator().manual_seed(2))
    labels = labels.float()
    flow = torch.full((1, 3, 8, 12, 16), 0.4)
    out = warp(labels, flow, mode="nearest")
    assert set(out.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert torch.equal(out, labels)  # 0.4 voxel rounds back to the same voxel
    flow[:, 1] = 1.6  # rounds to 2 voxels along axis 1
    np.testing.assert_array_equal(warp(labels, flow, mode="nearest")[0, 0, :, :-2].numpy(),
                                  labels[0, 0, :, 2:].numpy())
    assert not torch.equal(warp(labels, flow), warp(labels, flow, mode="nearest"))


def test_unknown_warp_mode_is_refused():
    with pytest.raises(ValueError, match="warp mode"):
        warp(_volume(), torch.zeros(1, 3, 8, 12, 16), mode="bicubic-spline")


@pytest.mark.parametrize("batch,threads", [(1, 2), (1, 3), (2, 4), (3, 2)])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_warp_on_all_threads_equals_one_grid_sample(batch, threads, mode):
    """The warp cuts a volume's voxels into one run per CPU thread (grid_sample's 3D CPU kernel
    parallelises over the batch only); every output voxel and the flow's gradient must be the
    plain call's, bit for bit, and the image's gradient equal to rounding. The odd shape leaves
    a remainder that the last run pads."""
    gen = torch.Generator().manual_seed(3)
    shape = (9, 7, 5)
    image = torch.rand(batch, 2, *shape, generator=gen).requires_grad_()
    flow = (torch.randn(batch, 3, *shape, generator=gen) * 2).requires_grad_()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = warp(image, flow, mode=mode)
    finally:
        torch.set_num_threads(previous)
    scale = torch.tensor([2.0 / (s - 1) for s in shape]).view(1, 3, 1, 1, 1)
    axes = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    grid = ((torch.stack(axes)[None] + flow) * scale - 1.0).permute(0, 2, 3, 4, 1).flip(-1)
    plain = torch.nn.functional.grid_sample(image, grid, mode=mode, padding_mode="zeros",
                                            align_corners=True)
    assert torch.equal(out, plain)
    weights = torch.rand(plain.shape, generator=gen)
    ours = torch.autograd.grad((out * weights).sum(), (image, flow))
    theirs = torch.autograd.grad((plain * weights).sum(), (image, flow))
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=1e-6)
    assert torch.equal(ours[1], theirs[1])


@pytest.mark.parametrize("held_axis", [0, 1, 2])
def test_warp_slice_by_slice_is_the_volume_warp_with_the_held_component_ignored(held_axis):
    torch.manual_seed(held_axis)
    image = torch.rand(2, 3, 7, 8, 9)
    flow = 2.0 * torch.randn(2, 3, 7, 8, 9)
    in_plane = flow.clone()
    in_plane[:, held_axis] = 0.0
    torch.testing.assert_close(warp(image, flow, held_axis=held_axis), warp(image, in_plane),
                               atol=1e-5, rtol=1e-5)
    still = warp(image, torch.zeros_like(flow), "bicubic", held_axis=held_axis)
    torch.testing.assert_close(still, image, atol=1e-5, rtol=1e-5)


def test_bicubic_warp_keeps_a_half_pixel_shift_sharper_than_bilinear():
    """A fine stripe pattern moved by half a pixel and back: bilinear sampling smooths it
    twice, bicubic far less (why fitted motion samples bicubically within slices)."""
    x = torch.arange(32, dtype=torch.float32)
    image = torch.sin(x * 1.2)[None, None, :, None, None].expand(1, 1, 32, 6, 2).contiguous()
    half = torch.zeros(1, 3, 32, 6, 2)
    half[:, 0] = 0.5
    errors = {}
    for mode in ("bilinear", "bicubic"):
        there = warp(image, half, mode, held_axis=2)
        back = warp(there, -half, mode, held_axis=2)
        errors[mode] = float((back - image)[:, :, 3:-3].abs().mean())
    assert errors["bicubic"] < 0.5 * errors["bilinear"]


def test_bicubic_warp_needs_a_held_axis():
    with pytest.raises(ValueError, match="held_axis"):
        warp(torch.rand(1, 1, 4, 4, 4), torch.zeros(1, 3, 4, 4, 4), "bicubic")
