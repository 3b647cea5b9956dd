"""io.probe_stack / io.load_stack (the reader chosen by file type and layout) and sim.grain_scan."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import xrdwidgets
from xrdwidgets import io
from xrdwidgets.base.errors import DataError, InputError
from xrdwidgets.sim.grain_scan import grain_scan, iterate_grain_scan


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stacks")
    ds = xrdwidgets.demo(size="tiny")
    io.save(ds, root / "demo.h5")
    io.save(ds["volume"], root / "volume.h5")
    with h5py.File(root / "sd2i.h5", "w") as f:
        f["A"] = np.random.default_rng(0).random((30, 24))
        f["B"] = np.random.default_rng(1).random((20, 24))
    np.save(root / "arr.npy", np.random.default_rng(2).random((20, 24, 5)))
    return root


def test_probe_says_what_to_choose(files):
    assert io.probe_stack(files / "arr.npy") == ("npy", None)
    assert io.probe_stack(files / "sd2i.h5") == ("sd2i", ["A", "B"])
    assert io.probe_stack(files / "demo.h5") == (None, None)
    assert io.probe_stack(files) == (None, None)


def test_load_stack_by_kind(files):
    stack, truth, stored = io.load_stack(files / "demo.h5")
    assert stack.dims == ("translation", "angle", "tth") and truth is not None and "phase_maps" in truth
    got = io.load_stack(files / "sd2i.h5", variable="B")
    assert got.stack.sizes["angle"] == 20 and got.truth is None and got.stored == {}
    arr = io.load_stack(files / "arr.npy", npy_dims=("angle", "translation", "channel")).stack
    assert arr.dims == ("translation", "angle", "channel") and arr.shape == (24, 20, 5)


def test_load_stack_errors(files):
    with pytest.raises(InputError, match="npy_dims"):
        io.load_stack(files / "arr.npy")
    with pytest.raises(DataError, match="sinogram stacks"):
        io.load_stack(files / "volume.h5")
    with pytest.raises(io.XRDFileError):
        io.load_stack(files / "missing.h5")


def test_grain_scan_runs_the_generator_to_the_end():
    kw = dict(size=16, n_channels=30, dose=None, seed=2)
    ds = grain_scan(["Ni"], **kw)
    gen = iterate_grain_scan(["Ni"], **kw)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            ref = stop.value
            break
    assert [e.iteration for e in events] == [1, 2]
    np.testing.assert_array_equal(ds["sinogram"].values, ref["sinogram"].values)
    assert ds["sinogram"].dims == ("translation", "angle", "tth")
