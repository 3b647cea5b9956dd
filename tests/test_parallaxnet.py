"""Tests of ParallaxNet (xrdwidgets.recon.parallaxnet) on tiny simulated parallax data.

The data come from the independent simulator (xrdwidgets.sim.thick_sample.parallax_scan), not from
the operator ParallaxNet uses. The networks are shrunk (one hidden 3-D convolution of 8 maps)
and the learning rate raised so that a few hundred epochs suffice on a CPU.
"""
import numpy as np
import pytest

from xrdwidgets.geometry import ScanGeometry
from xrdwidgets.jobs import merge_checkpoint
from xrdwidgets.ops import ParallaxProjector
from xrdwidgets.recon.fbp import fbp
from xrdwidgets.recon.parallaxnet import (
    CHECKPOINT_KIND,
    iterate_parallaxnet,
    iterate_parallaxnet_array,
    parallaxnet,
)
from xrdwidgets.sim.chemical import chemical_phantom
from xrdwidgets.sim.thick_sample import parallax_scan

E = 60.0
NI_111 = 5.82202352   # Ni (111) at 60 keV, degrees
SMALL = {"conv_filters": (8,)}


def grains(n):
    c = (n - 1) / 2
    yy, xx = np.mgrid[:n, :n]
    g1 = (((yy - c - n / 5) ** 2 + (xx - c + n / 4) ** 2) <= (n / 7) ** 2).astype(float)
    g2 = (((yy - c + n / 6) ** 2 + (xx - c - n / 5) ** 2) <= (n / 6) ** 2).astype(float)
    return g1 + g2


def scan(n, m, distance_mm, lo=5.66, hi=5.98):
    tth = np.linspace(lo, hi, m)
    ds = chemical_phantom({"Ni": grains(n)}, tth, energy_keV=E, size_nm=200.0,
                          geometry=ScanGeometry(translation_step_mm=0.5))
    return ds, parallax_scan(ds, distance_mm=distance_mm, n_angles=n)  # 0–180°


@pytest.fixture(scope="module")
def tiny():
    return scan(15, 32, 200.0)


def peak_error(vol, tth, region):
    """Mean |centroid − true| of the Ni (111) peak over ``region``, in channels."""
    w = np.abs(tth - NI_111) < 0.1
    v = np.clip(vol, 0, None)
    cen = (v[..., w] * tth[w]).sum(-1) / np.maximum(v[..., w].sum(-1), 1e-12)
    return float(np.abs((cen - NI_111) / (tth[1] - tth[0]))[region].mean())


def test_short_training_lowers_the_loss(tiny):
    _ds, par = tiny
    op = ParallaxProjector.from_stack(par["sinogram"], mask=True, device="cpu")
    sino = par["sinogram"].values
    gen = iterate_parallaxnet_array(sino, op, epochs=40, lr=3e-3, seed=0, preview_every=20, net_options=SMALL,
                                    pretrain=False)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            vol = stop.value
            break
    losses = [e.loss for e in events]
    assert len(losses) == 40
    assert min(losses[-5:]) < 0.7 * losses[0]
    assert "residual" in events[-1].metrics and events[-1].preview.shape == (15, 15)
    assert isinstance(vol, np.ndarray) and vol.shape == (15, 15, 32) and np.isfinite(vol).all()
    assert np.all(vol[~op.mask] == 0)
    with pytest.raises(ValueError, match="range"):
        iterate_parallaxnet_array(sino[:, :3], op)
    with pytest.raises(TypeError, match="ParallaxProjector"):
        iterate_parallaxnet_array(sino, object())


def test_peak_positions_better_than_fbp(tiny):
    """0–180° data, strong parallax: FBP's Ni (111) peaks are off by ~2 channels, ParallaxNet's are not."""
    ds, par = tiny
    tth = ds["tth"].values
    region = grains(15) > 0.5
    err_fbp = peak_error(fbp(par["sinogram"], device="cpu").values, tth, region)
    err_ref = peak_error(fbp(par["reference"], device="cpu").values, tth, region)
    vol = parallaxnet(par["sinogram"], epochs=180, lr=3e-3, pretrain=40, seed=0, device="cpu",
                      net_options=SMALL, preview_every=0)
    err_pnet = peak_error(vol.values, tth, region)
    # measured: FBP 1.98 channels, ParallaxNet 0.75 (0.66 after 250 epochs), parallax-free FBP 0.04
    assert err_ref < 0.2
    assert err_fbp > 1.5
    assert err_pnet < 0.5 * err_fbp
    assert vol.dims == ("y", "x", "tth") and vol.shape == (15, 15, 32)
    assert vol.attrs["provenance_producer"] == "xrdwidgets.recon.parallaxnet"
    g = ScanGeometry.from_attrs(vol.attrs)
    assert g.distance_mm == 200.0 and g.translation_step_mm == 0.5
    np.testing.assert_allclose(vol["x"].values, g.translations(15))


def run(gen, stop_after=None):
    """Events and result of a generator; with ``stop_after`` close it after that many events."""
    events = []
    ck = None
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return events, stop.value, ck
        events.append(ev)
        if "checkpoint" in ev.metrics:
            ck = merge_checkpoint(ck, ev.metrics["checkpoint"])
        if stop_after is not None and len(events) == stop_after:
            gen.close()
            return events, None, ck


def test_default_pretrains_on_fbp_for_a_fifth_of_the_epochs(tiny):
    # without pre-training the network can stay flat (the oracle of bench_parallax_oracle.py:
    # peaks off by 215 channels); the default pre-trains for epochs × PRETRAIN_FRACTION, as the paper
    from xrdwidgets.recon.parallaxnet import EPOCHS, PRETRAIN_FRACTION

    assert (EPOCHS, round(EPOCHS * PRETRAIN_FRACTION)) == (5000, 1000)
    _ds, par = tiny
    op = ParallaxProjector.from_stack(par["sinogram"], mask=True, device="cpu")
    gen = iterate_parallaxnet_array(par["sinogram"].values, op, epochs=10, seed=0, preview_every=0,
                                    net_options=SMALL)
    phases = []
    while True:
        try:
            phases.append(next(gen).metrics["phase"])
        except StopIteration:
            break
    assert phases == ["pretrain"] * 2 + ["train"] * 10


def test_channel_batches_and_resume():
    _ds, par = scan(9, 24, 150.0, 5.72, 5.92)
    kw = {"epochs": 6, "batch": 16, "overlap": 8, "lr": 3e-3, "seed": 0, "device": "cpu", "net_options": SMALL,
              "checkpoint_every": 2, "preview_every": 0, "pretrain": False}
    events, vol, _ = run(iterate_parallaxnet(par["sinogram"], **kw))
    assert [e.metrics["batch"] for e in events] == [1] * 6 + [2] * 6
    assert [e.iteration for e in events] == list(range(1, 13)) and events[0].total == 12
    assert (events[0].metrics["channel_start"], events[0].metrics["channel_stop"]) == (0, 16)
    assert (events[-1].metrics["channel_start"], events[-1].metrics["channel_stop"]) == (8, 24)
    assert events[5].metrics["checkpoint"]["kind"] == CHECKPOINT_KIND
    assert list(events[5].metrics["checkpoint"]["chunks"]) == ["0_0_16"]   # the one naming rule
    assert vol.shape == (9, 9, 24) and np.isfinite(vol.values).all()
    # interrupted in the second batch, after its epoch-2 checkpoint, then resumed
    _, _, ck = run(iterate_parallaxnet(par["sinogram"], **kw), stop_after=9)
    assert ck["running"]["key"] == "0_8_24" and ck["running"]["state"]["epoch"] == 2
    assert list(ck["chunks"]) == ["0_0_16"]
    events2, vol2, _ = run(iterate_parallaxnet(par["sinogram"], checkpoint=ck, **kw))
    assert [e.iteration for e in events2] == [9, 10, 11, 12]
    np.testing.assert_allclose(vol2.values, vol.values, rtol=1e-5, atol=1e-6 * np.abs(vol.values).max())
    # a checkpoint of other settings is refused, naming the difference
    with pytest.raises(ValueError, match="lr"):
        iterate_parallaxnet(par["sinogram"], checkpoint=ck, **{**kw, "lr": 1e-3})


def test_stack_errors(tiny):
    _, par = tiny
    sino = par["sinogram"]
    with pytest.raises(ValueError, match="overlap"):
        iterate_parallaxnet(sino, batch=10, overlap=10)
    with pytest.raises(ValueError, match="merge"):
        iterate_parallaxnet(sino, merge="max")
    with pytest.raises(ValueError, match="tth"):
        iterate_parallaxnet(sino.rename(tth="q"), device="cpu")
    bare = sino.copy()
    bare.attrs = {k: v for k, v in sino.attrs.items() if k != "geometry_distance_mm"}
    with pytest.raises(ValueError, match="distance_mm"):
        iterate_parallaxnet(bare, device="cpu")
    with pytest.raises(ValueError, match="epochs"):
        iterate_parallaxnet(sino, epochs=0)
    with pytest.raises(ValueError, match="ParallaxNet checkpoint"):
        iterate_parallaxnet(sino, checkpoint={"kind": "other"}, device="cpu")
    # the per-method format of earlier versions: a clear "older version" error
    old = {"kind": "xrdwidgets.recon.parallaxnet", "parallaxnet": {"producer": "xrdwidgets.recon.parallaxnet"},
           "batch_index": 1, "chunks": {"batch0": np.zeros((15, 15, 32), np.float32)}}
    with pytest.raises(ValueError, match="older version"):
        iterate_parallaxnet(sino, checkpoint=old, device="cpu")
