"""Noise2Inverse on tiny data: splits, schedule, denoising, domains, checkpoint/resume, bad input.

Test data are exact line integrals of analytic phantoms (``acquire_analytic``): no inverse crime.
"""
import functools

import numpy as np
import pytest
import xarray as xr

from xrdwidgets.explore import metrics
from xrdwidgets.jobs import merge_checkpoint
from xrdwidgets.base.progress import run_to_end
from xrdwidgets.recon.fbp import fbp
from xrdwidgets.recon.noise2inverse import (
    CHECKPOINT_KIND,
    iterate_noise2inverse,
    noise2inverse,
    split_angles,
)
from xrdwidgets.recon.noise2inverse_group import _apply, _dihedral, _image_indices
from xrdwidgets.sim.scan import acquire_analytic
from xrdwidgets.sim.shapes import Circle, Ellipse, Phantom

N, C = 32, 8
TTH = np.linspace(2.0, 6.0, C)
PATTERNS = np.stack([np.exp(-((TTH - 3) / 0.8) ** 2), np.exp(-((TTH - 5) / 0.8) ** 2)]) + 0.1
FAST = dict(net="unet", net_options=dict(filters=4, levels=2), epochs=2, steps_per_epoch=2, batch_size=4,
            preview_every=0, checkpoint_every=0)


def _phantoms(shift=0.0):
    return {"a": Phantom([Circle(1.0, (0.0, 0.0), 0.8), Circle(-1.0, (0.25 + shift, 0.1), 0.3)]),
            "b": Phantom([Circle(1.0, (0.25 + shift, 0.1), 0.3), Ellipse(1.0, (-0.4, -0.3), (0.25, 0.12), 30.0)])}


def _truth(shift=0.0):
    return sum(np.clip(p.raster(N), 0, None)[..., None] * pat for p, pat in zip(_phantoms(shift).values(), PATTERNS))


def _scan(dose=100.0, seed=0, n_angles=40, shift=0.0, angles=None):
    kw = dict(angles=angles) if angles is not None else dict(n_angles=n_angles)
    ds = acquire_analytic(_phantoms(shift), TTH, n=N, patterns=PATTERNS, dose=dose, seed=seed, **kw)
    return ds["sinogram"] / float(ds.attrs.get("scale", 1.0))


@pytest.fixture(scope="module")
def noisy():
    return _scan()


# ---------------------------------------------------------------------------- splits and schedule
def test_split_angles_disjoint_and_complete():
    for n_a, k in [(40, 4), (41, 4), (12, 2), (30, 7)]:
        parts = split_angles(n_a, k)
        assert len(parts) == k
        allidx = np.concatenate(parts)
        assert np.array_equal(np.sort(allidx), np.arange(n_a))           # cover every angle once
        assert len(set(allidx.tolist())) == n_a                          # disjoint
        for j, p in enumerate(parts):
            assert np.array_equal(p, np.arange(j, n_a, k))               # interleaved j::k
    with pytest.raises(ValueError, match="at least 10 angles"):
        split_angles(9, 5)
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        split_angles(10, 1)


def test_every_section_is_a_target_equally_often():
    K, n_slices = 4, 3
    n_images = K * n_slices
    drawn = _image_indices(0, 0, 10 * n_images, n_images)
    counts = np.bincount(drawn, minlength=n_images)
    assert np.all(counts == 10)                                          # each (section, slice) image
    sections = np.bincount(np.asarray(drawn) // n_slices, minlength=K)
    assert np.all(sections == 10 * n_slices)                             # each section as target
    # any window of the schedule is reproduced from its start (what resume relies on)
    assert _image_indices(0, 17, 9, n_images) == drawn[17:26]
    assert _image_indices(1, 0, n_images, n_images) != drawn[:n_images]


# ---------------------------------------------------------------------------- denoising
def test_short_training_lowers_loss_and_beats_fbp(noisy):
    truth = _truth()
    base = metrics.psnr(fbp(noisy).values, truth)
    events = []
    vol = run_to_end(iterate_noise2inverse(noisy, net="msd", net_options=dict(depth=30), epochs=10,
                                           steps_per_epoch=10, batch_size=8, preview_every=4, checkpoint_every=0,
                                           seed=0), events.append)
    losses = [e.loss for e in events]
    assert len(events) == 10 and events[-1].iteration == events[-1].total == 10
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:2])
    got = metrics.psnr(vol.values, truth)
    assert got > base + 2.0, (base, got)                                 # measured: +4 to +5 dB over seeds
    # events: previews of the denoised slice, group bookkeeping
    assert events[3].preview.shape == (N, N) and events[0].preview is None
    assert events[-1].metrics["group"] == 1 and events[-1].metrics["n_groups"] == 1
    assert events[-1].metrics["channel_stop"] == C and events[-1].metrics["steps"] == 10
    assert events[-1].preview.shape == (N, N)
    # an xarray volume like the other methods
    assert vol.dims == ("y", "x", "tth") and vol.dtype == np.float32
    assert vol.attrs["provenance_producer"] == "xrdwidgets.recon.noise2inverse"
    assert "geometry_angle_range_deg" in vol.attrs or any(k.startswith("geometry_") for k in vol.attrs)
    np.testing.assert_allclose(vol["x"].values, fbp(noisy)["x"].values)
    assert vol.values[0, 0].max() == 0.0                                 # outside the circle


def test_flip_averaging_undoes_its_transforms():
    torch = pytest.importorskip("torch")
    x = torch.randn(3, 5, 7)
    torch.testing.assert_close(_apply(lambda b: b, x, True), x)          # identity stays identity
    for code in range(8):
        y = _dihedral(x, code)
        assert y.shape[-2:] == ((7, 5) if code & 4 else (5, 7))
    def net(b):  # equivariant (a 180° rotation commutes with every flip/transpose): same output
        return b * 2.0 + b.flip(-1).flip(-2)

    torch.testing.assert_close(_apply(net, x, True), _apply(net, x, False))


@pytest.mark.parametrize("opts", [dict(net="msd", net_options=dict(depth=4)), dict(strategy="1:X"),
                                  dict(tta=False, lr_schedule="cosine"),
                                  dict(method="sirt", method_options=dict(n_iter=3)), dict(batch=3)])
def test_variants_run(noisy, opts):
    vol = noise2inverse(noisy, **{**FAST, **opts})
    assert vol.shape == (N, N, C) and np.isfinite(vol.values).all()


def test_space_domain_uses_neighbouring_slices():
    z = [_scan(shift=s, seed=i, n_angles=24) for i, s in enumerate((0.0, 0.05, 0.1))]
    stack = xr.concat(z, dim="z").assign_coords(z=("z", [0.0, 0.01, 0.02], {"units": "mm"}))
    stack = stack.transpose("translation", "angle", "tth", "z")          # any dim order
    vol = noise2inverse(stack, domain="space", context=1, **FAST)
    assert vol.dims == ("z", "y", "x", "tth") and vol.shape == (3, N, N, C)
    with pytest.raises(ValueError, match="needs a 'z' dim"):
        noise2inverse(z[0], domain="space", **FAST)


def test_time_domain_interlaced_angles():
    base = np.arange(0.0, 180.0, 180.0 / 12)
    offsets = np.arange(5) * 180.0 / 12 / 4                               # interlaced over 4 steps
    steps = [_scan(seed=t, angles=base + off, shift=0.02 * max(0, t - 3)) for t, off in enumerate(offsets)]
    stack = xr.concat([s.assign_coords(angle=base) for s in steps], dim="time")
    stack = stack.assign_coords(time=("time", np.arange(5.0), {"units": "s"}), angle_offset=("time", offsets))
    events = []
    vol = run_to_end(iterate_noise2inverse(stack, domain="time", k=4, **FAST), events.append)
    assert vol.dims == ("time", "y", "x", "tth") and vol.shape == (5, N, N, C)
    assert np.isfinite(vol.values).all() and float(np.abs(vol.values).max()) > 0
    assert '"angle_offsets"' in vol.attrs["provenance_parameters"]
    with pytest.raises(ValueError, match="first k=6 time steps"):
        noise2inverse(stack, domain="time", k=6, **FAST)
    with pytest.raises(ValueError, match="strategy '1:X'"):
        noise2inverse(stack, domain="time", strategy="X:1", **FAST)
    with pytest.raises(ValueError, match="5 finite angles"):
        noise2inverse(stack, domain="time", angle_offsets=[0.0, 1.0], **FAST)


# ---------------------------------------------------------------------------- checkpoints
def _collect(gen):
    events = []
    result = run_to_end(gen, events.append)
    return events, result


def test_resume_equals_uninterrupted_run(noisy):
    kw = dict(net="msd", net_options=dict(depth=5), epochs=3, steps_per_epoch=2, batch_size=4, batch=4,
              checkpoint_every=1, preview_every=0, seed=3)
    events, full = _collect(iterate_noise2inverse(noisy, **kw))
    assert len(events) == 6                                              # 2 groups × 3 epochs
    cks = [e.metrics.get("checkpoint") for e in events]
    assert all(c is not None and c["kind"] == CHECKPOINT_KIND for c in cks)
    assert cks[2]["chunks"] and not cks[1]["chunks"]                      # group 1 finished at event 3
    # interrupted in group 1 after epoch 2 (the job wrote the checkpoints so far)
    acc = None
    for c in cks[:2]:
        acc = merge_checkpoint(acc, c)
    _, resumed = _collect(iterate_noise2inverse(noisy, checkpoint=acc, **kw))
    np.testing.assert_array_equal(resumed.values, full.values)
    # interrupted in group 2 after its first epoch: group 1 comes from the chunks
    acc = None
    for c in cks[:4]:
        acc = merge_checkpoint(acc, c)
    ev2, resumed = _collect(iterate_noise2inverse(noisy, checkpoint=acc, **kw))
    assert [e.iteration for e in ev2] == [5, 6]
    np.testing.assert_array_equal(resumed.values, full.values)
    # another parameter: refused, naming it
    with pytest.raises(ValueError, match="lr="):
        iterate_noise2inverse(noisy, checkpoint=acc, **{**kw, "lr": 5e-4})
    with pytest.raises(ValueError, match="not a Noise2Inverse checkpoint"):
        iterate_noise2inverse(noisy, checkpoint={"kind": "xrdwidgets.recon.stack"}, **kw)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(k=30), "k=30 sections need at least 60 angles"),
    (dict(k=1), "k must be an integer >= 2"),
    (dict(net="dncnn"), "net must be one of"),
    (dict(domain="energy"), "domain must be one of"),
    (dict(strategy="2:2"), "strategy must be one of"),
    (dict(method="tv"), "linear reconstruction method"),
    (dict(method="sirt", method_options=dict(nonneg=True)), "non-linear"),
    (dict(method_options=dict(n_iter=3)), "does not take"),
    (dict(epochs=0), "epochs must be an integer >= 1"),
    (dict(patch=2), "patch must be an integer >= 4"),
    (dict(lr=-1.0), "lr must be a finite number > 0"),
    (dict(lr_schedule="step"), "lr_schedule must be one of"),
    (dict(net_options=dict(depth=-1)), "depth"),
    (dict(angle_offsets=[0.0]), "angle_offsets is for domain='time'"),
])
def test_bad_arguments_rejected_at_call(noisy, kwargs, match):
    with pytest.raises(ValueError, match=match):
        iterate_noise2inverse(noisy, **{**FAST, **kwargs})


def test_bad_stack_rejected(noisy):
    with pytest.raises(ValueError, match="time"):
        noise2inverse(noisy, domain="time", **FAST)
    with pytest.raises(Exception, match="translation"):
        noise2inverse(noisy.rename(translation="t"), **FAST)
    with pytest.raises(TypeError, match="checkpoint must be a dict"):
        iterate_noise2inverse(noisy, checkpoint="ck.pt", **FAST)


def test_job_on_disk_crash_then_resume(noisy, tmp_path):
    from xrdwidgets import jobs

    kw = dict(net="msd", net_options=dict(depth=5), epochs=3, steps_per_epoch=2, batch_size=4, batch=4,
              checkpoint_every=1, preview_every=0, seed=1)
    full = noise2inverse(noisy, **kw)

    def crashing(checkpoint=None):
        for i, ev in enumerate(iterate_noise2inverse(noisy, checkpoint=checkpoint, **kw)):
            if i == 4:
                raise RuntimeError("simulated crash")
            yield ev

    wd = tmp_path / "n2i"
    job = jobs.Job(crashing, workdir=wd)
    job.start()
    with pytest.raises(RuntimeError, match="simulated crash"):
        job.wait(timeout=60)
    ck = jobs.load_checkpoint(wd)                     # written by the job: safe types only
    assert ck["kind"] == CHECKPOINT_KIND and sorted(ck["chunks"]) == ["0_0_4"]
    assert ck["running"]["key"] == "0_4_8" and ck["running"]["state"]["group"] == 1   # the one schema
    vol = jobs.resume(wd, functools.partial(iterate_noise2inverse, noisy, **kw)).wait(timeout=60)
    np.testing.assert_array_equal(vol.values, full.values)
