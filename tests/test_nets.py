"""Generator networks: output shapes and layout, masks, parameter counts against the closed forms."""
import numpy as np
import pytest
import torch

from xrdwidgets.ops.projector import circle_mask
from xrdwidgets.recon import nets


@pytest.mark.parametrize("npix", [16, 18, 21])
@pytest.mark.parametrize("channels", [1, 3])
def test_sd2iu_shape_mask_and_count(npix, channels):
    m = nets.SD2Iu(npix, channels, k=4, filters=8, dense_units=16, device="cpu")
    out = m()
    assert out.shape == (npix, npix, channels)
    assert out.dtype == torch.float32
    outside = ~circle_mask(npix)
    assert float(out.detach()[torch.from_numpy(outside)].abs().max()) == 0.0
    assert float(out.detach().min()) >= 0.0          # absolute value at the output
    assert m.seed_size == -(-npix // 4)
    assert nets.parameter_count(m) == nets.sd2iu_parameter_count(npix, channels, k=4, filters=8, dense_units=16)


def test_sd2iu_default_count_matches_the_paper_layout():
    # 3 dense 64, dense ⌈256/4⌉²·8, then 7 convolutions of 3×3 — counted by hand
    n, k = 256, 8
    dense = (1 * 64 + 64) + 2 * (64 * 64 + 64) + (64 + 1) * 64 * 64 * k
    convs = (9 * k * 64 + 64) + 5 * (9 * 64 * 64 + 64) + (9 * 64 * 1 + 1)
    assert nets.sd2iu_parameter_count(n) == dense + convs
    m = nets.SD2Iu(40, device="cpu")
    assert nets.parameter_count(m) == nets.sd2iu_parameter_count(40)


@pytest.mark.parametrize("channels", [1, 2])
def test_sd2i_shape_and_count(channels):
    m = nets.SD2I(12, channels, k=4, conv_filters=(8, 8, 4), dense_units=16, device="cpu")
    out = m()
    assert out.shape == (12, 12, channels)
    assert nets.parameter_count(m) == nets.sd2i_parameter_count(12, channels, k=4, conv_filters=(8, 8, 4),
                                                               dense_units=16)
    # the paper's widths
    m = nets.SD2I(10, device="cpu")
    assert nets.parameter_count(m) == nets.sd2i_parameter_count(10)
    dense = (1 * 128 + 128) + 2 * (128 * 128 + 128) + (128 + 1) * 10 * 10 * 8
    convs = (9 * 8 * 128 + 128) + (9 * 128 * 128 + 128) + (9 * 128 * 64 + 64) + (9 * 64 + 1)
    assert nets.sd2i_parameter_count(10) == dense + convs


def test_sd2vol_shape_and_count():
    m = nets.SD2Vol(6, 5, conv_filters=(4, 4, 4), device="cpu")
    out = m()
    assert out.shape == (6, 6, 5)
    assert nets.parameter_count(m) == nets.sd2vol_parameter_count(6, 5, conv_filters=(4, 4, 4))
    dense = (1 * 32 + 32) + 2 * (32 * 32 + 32) + (32 + 1) * 6 * 6 * 5
    convs = (27 * 1 * 4 + 4) + 2 * (27 * 4 * 4 + 4) + (27 * 4 + 1)
    assert nets.sd2vol_parameter_count(6, 5, conv_filters=(4, 4, 4)) == dense + convs
    assert nets.parameter_count(nets.SD2Vol(4, 3, device="cpu")) == nets.sd2vol_parameter_count(4, 3)
    pos = nets.SD2Vol(4, 3, output="abs", device="cpu")()
    assert float(pos.detach().min()) >= 0


def test_outputs_and_masks():
    m = nets.SD2Iu(16, mask=False, output="linear", filters=8, device="cpu")
    assert m().shape == (16, 16, 1)
    own = np.zeros((16, 16), bool)
    own[4:12, 4:12] = True
    out = nets.SD2Iu(16, mask=own, filters=8, device="cpu")().detach()
    assert float(out[~torch.from_numpy(own)].abs().max()) == 0.0
    assert float(nets.SD2Iu(16, output="relu", filters=8, device="cpu")().detach().min()) >= 0
    assert nets.SD2Iu(17, upsample="bilinear", filters=8, device="cpu")().shape == (17, 17, 1)


def test_gradients_flow_to_every_layer():
    m = nets.SD2Iu(12, 2, filters=8, device="cpu")
    m().sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_build_generator_seeded_and_rng_untouched():
    state = torch.get_rng_state()
    a = nets.build_generator("sd2iu", 12, 2, k=4, seed=3, device="cpu", filters=8)
    assert torch.equal(torch.get_rng_state(), state)        # caller's RNG left alone
    b = nets.build_generator("SD2Iu", 12, 2, k=4, seed=3, device="cpu", filters=8)
    c = nets.build_generator("sd2iu", 12, 2, k=4, seed=4, device="cpu", filters=8)
    assert torch.equal(a(), b())
    assert not torch.equal(a(), c())
    assert isinstance(nets.build_generator("sd2i", 8, k=4, device="cpu", conv_filters=(4,)), nets.SD2I)


def test_default_device_is_cuda_when_present_else_cpu():
    m = nets.SD2Iu(8, filters=4)
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(m.parameters()).device.type == want


@pytest.mark.parametrize("call, match", [
    (lambda: nets.SD2Iu(0), "npix"),
    (lambda: nets.SD2Iu(8, 0), "channels"),
    (lambda: nets.SD2Iu(8, k=2.5), "k must be an integer"),
    (lambda: nets.SD2Iu(8, upsample="cubic"), "upsample"),
    (lambda: nets.SD2Iu(8, output="sigmoid"), "output"),
    (lambda: nets.SD2Iu(8, mask=np.ones((4, 4), bool)), r"mask must be .* shape \(8, 8\)"),
    (lambda: nets.SD2I(8, conv_filters=(8, 0)), r"conv_filters\[1\]"),
    (lambda: nets.SD2I(8, conv_filters=()), "conv_filters"),
    (lambda: nets.SD2Vol(4, 0), "SD2Vol: m"),
    (lambda: nets.build_generator("unet", 8), "arch must be one of"),
    (lambda: nets.parameter_count("model"), "torch.nn.Module"),
])
def test_bad_arguments_are_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
