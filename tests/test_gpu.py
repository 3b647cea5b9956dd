"""Accelerator checks (``pytest -m gpu``; run by ``benchmarks/gpu_suite.sh``): the same results on the
device as on the CPU, and the mixed-precision (``amp``) and ``torch.compile`` paths keeping quality.

The device is ``$XRDW_TEST_DEVICE`` (default ``cuda``); without CUDA these tests skip, unless
``XRDW_TEST_DEVICE=cpu`` (``gpu_suite.sh --cpu-smoke``), which runs their logic on the CPU (where
``amp``/``compile`` are no-ops: see :func:`xrdwidgets.recon.training.train`).
Data: exact line integrals of analytic phantoms and the simulator's peak profiles (no inverse crime).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from xrdwidgets.ops import ParallelProjector
from xrdwidgets.recon.fbp import fbp_array

DEVICE = os.environ.get("XRDW_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                       reason="needs CUDA (XRDW_TEST_DEVICE=cpu runs these checks on the CPU)"),
]


def _psnr(x, ref):
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return float(10 * np.log10(1.0 / np.mean((x.astype(np.float64) - ref) ** 2)))


def test_projector_and_fbp_on_device_match_cpu():
    rng = np.random.default_rng(0)
    th = np.linspace(0, 180, 31, endpoint=False)
    cpu = ParallelProjector(40, th, n_translations=44, centre_offset=0.3, mask=True, device="cpu")
    dev = ParallelProjector(40, th, n_translations=44, centre_offset=0.3, mask=True, device=DEVICE)
    x = torch.as_tensor(rng.random((40, 40, 3), np.float32))
    y = torch.as_tensor(rng.random((44, 31, 3), np.float32))
    torch.testing.assert_close(dev(x.to(DEVICE)).cpu(), cpu(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dev.T(y.to(DEVICE)).cpu(), cpu.T(y), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fbp_array(y.to(DEVICE), th, n=40, centre_offset=0.3, device=DEVICE).cpu(),
                               fbp_array(y, th, n=40, centre_offset=0.3, device="cpu"), rtol=1e-4, atol=1e-4)


def test_fbp_quality_on_device():
    # test_oracles' FBP check on the device: measured 34.85 dB on the CPU (ramp)
    from xrdwidgets.sim.phantoms import shepp_logan

    n = 256
    th = np.linspace(0.0, 180.0, 400, endpoint=False)
    ph = shepp_logan().in_pixels(n)
    sino = torch.as_tensor(ph.line_integrals(np.arange(n) - (n - 1) / 2.0, th), dtype=torch.float32)
    assert _psnr(fbp_array(sino.to(DEVICE), th, device=DEVICE), ph.raster()) >= 33.0


@pytest.mark.parametrize("flags", [{}, {"amp": True}, {"amp": True, "compile": True}],
                         ids=["fp32", "amp", "amp+compile"])
def test_sd2iu_amp_and_compile_keep_quality(flags):
    # test_oracles' SD2Iu check (8 angles, 32², exact line integrals) on the device with each
    # precision path; measured on the CPU (fp32): FBP 20.33 dB, SD2Iu 23.70-24.67 dB (seeds 0-2)
    from test_oracles import sparse_problem

    from xrdwidgets.recon.sd2i import sd2i_array

    torch.manual_seed(0)
    sino, truth, th, op = sparse_problem(8, device=DEVICE)
    p_fbp = _psnr(fbp_array(sino, th, projector=op), truth)
    x = sd2i_array(sino, op, epochs=400, pretrain=100, preview_every=0, seed=0, net_options={"filters": 16},
                   **flags)
    assert x.device.type == torch.device(DEVICE).type and bool(torch.isfinite(x).all())
    assert _psnr(x, truth) > p_fbp + 2.5, (flags, _psnr(x, truth), p_fbp)


def test_parallaxnet_amp_and_compile_run_on_device():
    from xrdwidgets.ops.parallax import ParallaxProjector
    from xrdwidgets.recon.parallaxnet import parallaxnet_array

    n, c = 16, 24
    th = np.linspace(0.0, 180.0, n, endpoint=False)
    tth = np.linspace(3.3, 4.25, c)
    op = ParallaxProjector(n, th, tth, 1000.0, 0.2, mask=True, device=DEVICE)
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) / (n / 2)
    vol = ((xx**2 + yy**2 < 0.8)[..., None] * (np.exp(-0.5 * ((tth - 3.8) / 0.1) ** 2) + 0.05)).astype(np.float32)
    sino = op(torch.as_tensor(vol, device=DEVICE))
    for flags in ({}, {"amp": True, "compile": True}):
        x = parallaxnet_array(sino, op, epochs=3, preview_every=0, **flags)
        assert x.shape == (n, n, c) and bool(torch.isfinite(x).all()), flags


def test_peak_fit_on_device_matches_cpu():
    from test_peakfitcnn import BOUNDS, MODEL

    from xrdwidgets.analysis.fitting import fit_volume
    from xrdwidgets.sim.peak_phantom import peak_phantom

    vol, truth, _ = peak_phantom(16)
    rng = np.random.default_rng(0)
    noisy = vol.copy(data=(rng.poisson(np.clip(vol.values, 0, None) * 20.0) / 20.0).astype(np.float32))
    cpu = fit_volume(noisy, MODEL, bounds=BOUNDS, device="cpu", dtype=torch.float64)
    dev = fit_volume(noisy, MODEL, bounds=BOUNDS, device=DEVICE, dtype=torch.float64)
    both = cpu["converged"].values & dev["converged"].values
    assert both.mean() > 0.9
    for name in MODEL.param_names:
        np.testing.assert_allclose(dev[name].values[both], cpu[name].values[both], rtol=1e-5, atol=1e-7,
                                   err_msg=name)
    sel = truth["area_0"] > 0.6
    assert np.abs(dev["position_0"].values - truth["position_0"])[sel].mean() < 0.01


def test_noise2inverse_on_device_beats_fbp():
    # test_noise2inverse's denoising check on the device (measured on the CPU: +4 to +5 dB over FBP)
    from test_oracles import n2i_scan, n2i_truth

    from xrdwidgets.explore import metrics
    from xrdwidgets.recon.fbp import fbp
    from xrdwidgets.recon.noise2inverse import noise2inverse

    torch.manual_seed(0)
    noisy = n2i_scan()
    base = metrics.psnr(fbp(noisy).values, n2i_truth())
    vol = noise2inverse(noisy, net="msd", net_options=dict(depth=30), epochs=10, steps_per_epoch=10, batch_size=8,
                        preview_every=0, checkpoint_every=0, seed=0, device=DEVICE)
    assert metrics.psnr(vol.values, n2i_truth()) > base + 2.0
