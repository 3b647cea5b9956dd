"""Quality checks that fail when a method is broken (issue 19, item 5).

Every check compares a method with an independent oracle — exact line integrals of analytic
phantoms (:mod:`xrdwidgets.sim.shapes`, not our projector: no inverse crime), the same network
without the information under test, or a pixel-wise fit — and its threshold is the figure
measured when the test was written, minus a margin (both written beside the assertion).
Figures were measured with ``OMP_NUM_THREADS=1`` on the CPU; training runs are seeded.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xrdwidgets.ops import ParallelProjector
from xrdwidgets.recon.fbp import fbp_array
from xrdwidgets.sim.phantoms import shepp_logan
from xrdwidgets.sim.shapes import Circle, Ellipse, Phantom, Rectangle


def _psnr(x, ref, data_range=1.0):
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return float(10 * np.log10(data_range**2 / np.mean((x.astype(np.float64) - ref) ** 2)))


# the oracle data (kept here, not imported from other test modules, so that they stay fixed)
def sd2i_phantom():
    """test_sd2i's small phantom (values in [0, 1])."""
    return Phantom((
        Circle(0.6, (0.0, 0.0), 0.75),
        Ellipse(0.4, (0.2, -0.15), (0.32, 0.16), 30.0),
        Circle(-0.35, (-0.3, 0.25), 0.2),
        Rectangle(0.3, (-0.15, -0.42), (0.35, 0.16), 10.0),
    ))


def sparse_problem(n_angles=8, n=32, device="cpu"):
    """Exact line integrals ``(n, n_angles)`` float32 tensor of :func:`sd2i_phantom`, its area-averaged
    raster, the angles and a built projector (mask on)."""
    th = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    ph = sd2i_phantom().in_pixels(n)
    sino = torch.as_tensor(ph.line_integrals(np.arange(n) - (n - 1) / 2.0, th), dtype=torch.float32, device=device)
    op = ParallelProjector(n, th, mask=True, device=device)
    op(torch.zeros(n, n, device=device))
    return sino, ph.raster(), th, op


N2I_N, N2I_TTH = 32, np.linspace(2.0, 6.0, 8)
N2I_PATTERNS = np.stack([np.exp(-((N2I_TTH - 3) / 0.8) ** 2), np.exp(-((N2I_TTH - 5) / 0.8) ** 2)]) + 0.1


def _n2i_phantoms(shift):
    return {"a": Phantom([Circle(1.0, (0.0, 0.0), 0.8), Circle(-1.0, (0.25 + shift, 0.1), 0.3)]),
            "b": Phantom([Circle(1.0, (0.25 + shift, 0.1), 0.3), Ellipse(1.0, (-0.4, -0.3), (0.25, 0.12), 30.0)])}


def n2i_truth(shift=0.0):
    """test_noise2inverse's two-phase truth volume ``(y, x, tth)`` (32², 8 channels)."""
    return sum(np.clip(p.raster(N2I_N), 0, None)[..., None] * pat
               for p, pat in zip(_n2i_phantoms(shift).values(), N2I_PATTERNS))


def n2i_scan(dose=100.0, seed=0, n_angles=40, shift=0.0):
    """Exact line integrals of :func:`n2i_truth`'s phantoms with Poisson noise, in truth units."""
    from xrdwidgets.sim.scan import acquire_analytic

    ds = acquire_analytic(_n2i_phantoms(shift), N2I_TTH, n=N2I_N, patterns=N2I_PATTERNS, dose=dose, seed=seed,
                          n_angles=n_angles)
    return ds["sinogram"] / float(ds.attrs.get("scale", 1.0))


# ------------------------------------------------------------------------------ FBP
@pytest.mark.parametrize("filter_name, floor", [("ramp", 33.0), ("shepp-logan", 32.5)])
def test_fbp_exact_line_integrals_256_400(filter_name, floor):
    # Shepp–Logan (modified, values in [0, 1]) 256² from its analytic ellipses: exact line integrals
    # at 400 angles over [0°, 180°), scored against the exact area-averaged raster over the whole
    # image (benchmarks/bench_quality.py's "exact" recipe). Measured: ramp 34.85 dB, shepp-logan
    # 34.35 dB (hann 29.20 dB: a smoothing filter, not tested here). Floors: measured - ~1.9 dB.
    n = 256
    th = np.linspace(0.0, 180.0, 400, endpoint=False)
    ph = shepp_logan().in_pixels(n)
    sino = ph.line_integrals(np.arange(n) - (n - 1) / 2.0, th)
    rec = fbp_array(sino, th, filter=filter_name)
    assert rec.shape == (n, n)
    got = _psnr(rec, ph.raster())
    assert got >= floor, (filter_name, got)


# ------------------------------------------------------------------------------ SD2I
def test_sd2iu_defaults_with_pretraining_beat_fbp_at_eight_angles():
    # SD2Iu with the library's defaults (loss "mae", k 8, lr 5e-4) and pre-training towards the FBP,
    # on exact line integrals of a small phantom (test_sd2i's) at 8 angles, 32².
    # Measured (seeds 0, 1, 2): FBP 20.33 dB, FBP clipped at 0 22.37 dB;
    # SD2Iu (100 pre-training + 400 epochs, 16 filters) 24.04, 23.70, 24.67 dB.
    from xrdwidgets.recon.sd2i import sd2i_array

    torch.manual_seed(0)
    sino, truth, th, op = sparse_problem(8)
    fbp = fbp_array(sino, th, projector=op)
    p_fbp, p_clip = _psnr(fbp, truth), _psnr(fbp.clamp_min(0), truth)
    x = sd2i_array(sino, op, epochs=400, pretrain=100, preview_every=0, seed=0, net_options={"filters": 16})
    got = _psnr(x, truth)
    assert got > p_fbp + 2.5, (got, p_fbp)        # measured +3.4 to +4.3 dB
    assert got > p_clip + 0.8, (got, p_clip)      # measured +1.3 to +2.3 dB


# ------------------------------------------------------------------------------ Noise2Inverse
def test_noise2inverse_space_context_beats_no_context():
    # 5 slices along z of the same two-phase sample (shifted by 0.02 of the radius per slice), each
    # scanned with its own Poisson noise (dose 20, 40 angles), 2 channels (one per phase's peak) so
    # that the diffraction axis alone carries little redundancy: neighbouring slices carry the
    # signal. The same MS-D network (depth 10, seed 0, 300 steps) with context=1 against context=0.
    # Measured (seeds 0, 1, 2), PSNR over the stack: context 0: 17.64, 17.22, 17.08 dB;
    # context 1: 18.48, 18.78, 18.37 dB (gain +0.84, +1.56, +1.30); FBP 10.25 dB. (Depth 20:
    # gains +1.64, +2.31, +1.08 dB at twice the time.)
    import xarray as xr
    from xrdwidgets.explore import metrics
    from xrdwidgets.recon.noise2inverse import noise2inverse

    torch.manual_seed(0)
    shifts = [0.02 * i for i in range(5)]
    channels = [2, 5]
    stack = xr.concat([n2i_scan(dose=20.0, shift=s, seed=10 + i, n_angles=40) for i, s in enumerate(shifts)], dim="z")
    stack = stack.assign_coords(z=("z", np.arange(5) * 0.01, {"units": "mm"})).isel(tth=channels)
    truth = np.stack([n2i_truth(s) for s in shifts])[..., channels]
    kw = dict(domain="space", net="msd", net_options=dict(depth=10), epochs=30, steps_per_epoch=10, batch_size=8,
              preview_every=0, checkpoint_every=0, seed=0)
    got = {}
    for context in (0, 1):
        vol = noise2inverse(stack, context=context, **kw).transpose("z", "y", "x", "tth")
        got[context] = metrics.psnr(vol.values, truth)
    assert got[1] > got[0] + 0.4, got             # measured gain +0.84 to +1.56 dB
    assert got[0] > 15.0, got                     # both denoise (FBP 10.25 dB)


# ------------------------------------------------------------------------------ DLSR
def test_dlsr_from_a_wrong_start_converges_to_the_truth():
    # test_dlsr's scan (ray-traced, 12 angles for 24 translations, Poisson dose 20000), started
    # from constant maps far from the truth instead of the FBP + pixel-wise fit. Mean absolute
    # error over the sample (truth area > 0.6), measured: start area 0.534, position 0.121°,
    # FWHM 0.0687°; after 300 epochs area 0.149, position 0.0039°, FWHM 0.0036° (the FBP +
    # pixel-wise fit start: 0.075, 0.0011°, 0.0019°; truth means: area 1.03, FWHM 0.081°).
    import xarray as xr
    from test_peakfitcnn import BOUNDS, MODEL, peak_phantom

    from xrdwidgets.analysis.dlsr import dlsr
    from xrdwidgets.ops.projector import circle_mask
    from xrdwidgets.sim.scan import acquire

    torch.manual_seed(0)
    n = 24
    vol, truth, _ = peak_phantom(n, n_channels=57, tth=(4.8, 6.2))
    ds = acquire(vol, n_angles=12, dose=20000, seed=0)
    stack = ds["sinogram"] / float(ds.attrs["scale"])
    stack.attrs.update(ds["sinogram"].attrs)
    wrong = {"area_0": 0.5, "position_0": 5.4, "fwhm_0": 0.15, "eta_0": 0.5, "bg_0": 0.1, "bg_1": 0.0}
    init = xr.Dataset({k: (("y", "x"), np.full((n, n), wrong[k])) for k in truth})
    sel = circle_mask(n) & (truth["area_0"] > 0.6)

    def errors(maps):
        return {k: float(np.mean(np.abs(np.asarray(maps[k]) - truth[k])[sel])) for k in ("area_0", "position_0", "fwhm_0")}

    start = errors({k: init[k].values for k in truth})
    out = dlsr(stack, MODEL, tth_range=(5.0, 6.0), bounds=BOUNDS, epochs=300, init=init, device="cpu",
               preview_every=0)
    end = errors({k: out[k].values for k in truth})
    limits = {"area_0": 0.2, "position_0": 0.008, "fwhm_0": 0.007}   # measured 0.149, 0.0039, 0.0036
    for k, lim in limits.items():
        assert end[k] < lim and end[k] < start[k] / 2.5, (k, start[k], end[k])


# ------------------------------------------------------------------------------ PeakFitCNN
def test_peakfitcnn_beats_pixelwise_fit_under_poisson_noise():
    # peak_phantom(24) (one pseudo-Voigt peak + linear background per pixel, known maps) counted
    # with Poisson noise at 2 counts per unit (at most 43 counts in a channel). RMS error over the
    # sample (truth area > 0.6) of each map, pixel-wise fit (fit_volume) vs PeakFitCNN (600
    # epochs, 2 patches of 16², lr 1e-2). Measured: pixel-wise area 0.150, position 0.0068°,
    # FWHM 0.0197°; PeakFitCNN (seeds 0, 1, 2) area 0.116/0.123/0.119, position
    # 0.0044/0.0054/0.0037°, FWHM 0.0066/0.0084/0.0064°: ratios at worst 0.82, 0.79, 0.43.
    # (At 15x the counts the pixel-wise fit wins on area: 0.051 vs 0.12-0.15; not tested.)
    from test_peakfitcnn import BOUNDS, MODEL

    from xrdwidgets.analysis.fitting import fit_volume
    from xrdwidgets.analysis.peakfitcnn import peakfitcnn
    from xrdwidgets.sim.peak_phantom import peak_phantom

    torch.manual_seed(0)
    vol, truth, _ = peak_phantom(24)
    counts = 2.0
    rng = np.random.default_rng(1)
    noisy = vol.copy(data=(rng.poisson(np.clip(vol.values, 0, None) * counts) / counts).astype(np.float32))
    sel = truth["area_0"] > 0.6

    def rms(maps):
        return {k: float(np.sqrt(np.mean((np.asarray(maps[k]) - truth[k])[sel] ** 2)))
                for k in ("area_0", "position_0", "fwhm_0")}

    pixel = rms(fit_volume(noisy, MODEL, bounds=BOUNDS))
    cnn = rms(peakfitcnn(noisy, MODEL, bounds=BOUNDS, epochs=600, patch=16, n_patches=2, lr=1e-2, seed=0,
                         device="cpu", preview_every=0))
    ratios = {"area_0": 0.95, "position_0": 0.95, "fwhm_0": 0.6}    # measured at worst 0.82, 0.79, 0.43
    for k, r in ratios.items():
        assert cnn[k] < r * pixel[k], (k, cnn[k], pixel[k])
