"""MS-D and U-Net denoisers of Noise2Inverse: shapes, parameter counts, gradients, bad input."""
import pytest
import torch
import torch.nn.functional as F

from xrdwidgets.recon.denoise_nets import (
    MSDNet,
    UNet,
    build_denoiser,
    msd_parameter_count,
    parameter_count,
    unet_parameter_count,
)


def test_msd_shapes_and_parameter_count():
    net = MSDNet(3, 2, depth=7, width=2, dilations=(1, 2, 3))
    out = net(torch.randn(2, 3, 13, 17))
    assert out.shape == (2, 2, 13, 17)
    assert parameter_count(net) == msd_parameter_count(3, 2, depth=7, width=2)
    # the paper's network: depth 100, width 1, one channel in and out
    assert parameter_count(MSDNet()) == msd_parameter_count() == 45652
    assert net.dilations == (1, 2, 3, 1, 2, 3, 1)
    # the output layer starts at zero
    assert float(out.detach().abs().max()) == 0.0


def _naive_msd(net, x):
    """MS-D written with torch.cat and plain autograd (the reference for the buffered version)."""
    feats = x
    for i, d in enumerate(net.dilations):
        o = torch.relu(F.conv2d(feats, net.weights[i], net.biases[i], padding=d, dilation=d))
        feats = torch.cat([feats, o], 1)
    return net.final(feats)


@pytest.mark.parametrize("width", [1, 2])
def test_msd_matches_concatenation_network(width):
    torch.manual_seed(0)
    net = MSDNet(3, 2, depth=9, width=width, dilations=(1, 3, 10)).double()
    with torch.no_grad():
        net.final.weight.normal_()
        for b in net.biases:
            b.normal_(0, 0.1)
    x = torch.randn(2, 3, 11, 14, dtype=torch.float64, requires_grad=True)
    y1, y2 = net(x), _naive_msd(net, x)
    torch.testing.assert_close(y1, y2)
    g = torch.randn_like(y1)
    params = list(net.parameters()) + [x]
    for a, b in zip(torch.autograd.grad(y1, params, g), torch.autograd.grad(y2, params, g)):
        torch.testing.assert_close(a, b)


def test_unet_shapes_and_parameter_count():
    net = UNet(6, 4, filters=8, levels=3)
    for h, w in [(16, 16), (13, 21), (5, 7)]:
        assert net(torch.randn(2, 6, h, w)).shape == (2, 4, h, w)
    assert parameter_count(net) == unet_parameter_count(6, 4, filters=8, levels=3)
    assert parameter_count(UNet(1, 1, levels=1)) == unet_parameter_count(1, 1, levels=1)


def test_build_denoiser_and_bad_input():
    assert isinstance(build_denoiser("MSD", 2, 2, depth=3), MSDNet)
    assert isinstance(build_denoiser("unet", 2, 2, filters=4, levels=2), UNet)
    with pytest.raises(ValueError, match="net must be one of"):
        build_denoiser("dncnn", 1, 1)
    with pytest.raises(ValueError, match="bad options"):
        build_denoiser("msd", 1, 1, filters=3)
    with pytest.raises(ValueError, match="depth"):
        MSDNet(1, 1, depth=0)
    with pytest.raises(ValueError, match="dilations"):
        MSDNet(1, 1, dilations=(1, 0))
    with pytest.raises(ValueError, match=r"expected input \(B, 2, H, W\)"):
        MSDNet(2, 1, depth=2)(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"expected input \(B, 2, H, W\)"):
        UNet(2, 1)(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError):
        parameter_count("not a model")
