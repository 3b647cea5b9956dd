"""Tests of chemical phantoms (xrdwidgets.sim.chemical)."""

import numpy as np
import pytest
import xarray as xr

from xrdwidgets.data import DataError
from xrdwidgets.geometry import ScanGeometry
from xrdwidgets.sim.chemical import chemical_phantom, pattern_scales, reference_patterns
from xrdwidgets.sim.patterns import powder_pattern, powder_patterns

E = 60.0


@pytest.fixture(scope="module")
def tth():
    return np.linspace(3.0, 9.0, 300)


@pytest.fixture(scope="module")
def maps():
    n = 16
    yy, xx = np.mgrid[:n, :n]
    a = (xx < 8).astype(float)
    b = 0.5 * (yy >= 4)
    return {"Ni": a, "CeO2": b}


def test_volume_is_maps_times_reference_patterns(maps, tth):
    ds = chemical_phantom(maps, tth, energy_keV=E, geometry=ScanGeometry(translation_step_mm=0.02))
    assert isinstance(ds, xr.Dataset)
    assert ds["volume"].dims == ("y", "x", "tth")
    assert ds["phase_maps"].dims == ("phase", "y", "x")
    assert ds["patterns"].dims == ("phase", "tth")
    assert list(ds["phase"].values) == ["Ni", "CeO2"]
    ref = np.stack([powder_pattern(p, tth, energy_keV=E, size_nm=50.0) for p in ("Ni", "CeO2")])
    np.testing.assert_allclose(ds["patterns"].values, ref, rtol=1e-12)
    expect = maps["Ni"][..., None] * ref[0] + maps["CeO2"][..., None] * ref[1]
    np.testing.assert_allclose(ds["volume"].values, expect, rtol=1e-12, atol=1e-15)
    g = ScanGeometry.from_attrs(ds.attrs)
    assert g.energy_keV == E and g.translation_step_mm == 0.02
    assert ScanGeometry.from_attrs(ds["volume"].attrs) == g
    assert ds["y"].attrs["units"] == "mm"
    assert "provenance_parameters" in ds.attrs and "strain" not in ds and "size" not in ds
    np.testing.assert_allclose(reference_patterns(["Ni", "CeO2"], tth, energy_keV=E), ref, rtol=1e-12)


def test_strain_map_moves_peaks_with_a_shared_scale(maps, tth):
    n = maps["Ni"].shape[0]
    strain = np.zeros((n, n))
    strain[:, 2] = 2e-3
    ds = chemical_phantom(maps, tth, energy_keV=E, strain_maps={"Ni": strain})
    assert ds["strain"].dims == ("phase", "y", "x")
    np.testing.assert_array_equal(ds["strain"].sel(phase="CeO2").values, 0.0)
    scale = float(ds["pattern_scale"].sel(phase="Ni"))
    raw = powder_patterns("Ni", tth, energy_keV=E, strain=2e-3, normalise=None)[0]
    pix = ds["volume"].values[0, 2]  # Ni (strained) only: y = 0 has no CeO2
    np.testing.assert_allclose(pix, raw * scale, rtol=1e-10)
    unstrained = ds["volume"].values[0, 3]
    assert tth[np.argmax(pix)] < tth[np.argmax(unstrained)]  # ε > 0 → lower 2θ


def test_size_map_broadens_and_keeps_area(maps, tth):
    ds = chemical_phantom(maps, tth, energy_keV=E, size_maps={"Ni": np.where(maps["Ni"] > 0, 8.0, 50.0)},
                          size_nm=50.0)
    small, ref = ds["volume"].values[0, 0], ds["patterns"].sel(phase="Ni").values
    assert small.max() < 0.5 * ref.max()
    np.testing.assert_allclose(small.sum(), ref.sum(), rtol=5e-2)
    np.testing.assert_array_equal(ds["size"].sel(phase="CeO2").values, 50.0)


def test_background_and_single_map_for_all_phases(maps, tth):
    bg = np.linspace(0.2, 0.1, tth.size)
    ds = chemical_phantom(maps, tth, energy_keV=E, background=bg, strain_maps=0.0)
    plain = chemical_phantom(maps, tth, energy_keV=E)
    total = maps["Ni"] + maps["CeO2"]
    np.testing.assert_allclose(ds["volume"].values - plain["volume"].values, total[..., None] * bg, atol=1e-12)
    np.testing.assert_allclose(ds["background"].values, bg)


def test_absolute_scale(maps, tth):
    ds = chemical_phantom(maps, tth, energy_keV=E, normalise=None)
    np.testing.assert_array_equal(ds["pattern_scale"].values, 1.0)
    raw = powder_pattern("Ni", tth, energy_keV=E, normalise=None)
    np.testing.assert_allclose(ds["patterns"].sel(phase="Ni").values, raw, rtol=1e-12)
    np.testing.assert_allclose(pattern_scales(["Ni"], tth, energy_keV=E), 1 / raw.max())


def test_dataarray_input(maps, tth):
    da = xr.DataArray(np.stack(list(maps.values())), dims=("phase", "y", "x"), coords={"phase": list(maps)})
    a = chemical_phantom(da, tth, energy_keV=E)
    b = chemical_phantom(maps, tth, energy_keV=E)
    np.testing.assert_allclose(a["volume"].values, b["volume"].values)


def test_bad_input(maps, tth):
    with pytest.raises(DataError, match="phase_maps"):
        chemical_phantom({}, tth, energy_keV=E)
    with pytest.raises(DataError, match=r"phase_maps\['CeO2'\].*shape"):
        chemical_phantom({"Ni": maps["Ni"], "CeO2": np.ones((3, 3))}, tth, energy_keV=E)
    with pytest.raises(DataError, match=">= 0"):
        chemical_phantom({"Ni": -maps["Ni"]}, tth, energy_keV=E)
    with pytest.raises(DataError, match="not phases"):
        chemical_phantom(maps, tth, energy_keV=E, strain_maps={"Cu": 0.01})
    with pytest.raises(DataError, match="size_maps"):
        chemical_phantom(maps, tth, energy_keV=E, size_maps=-1.0)
    with pytest.raises(DataError, match="background"):
        chemical_phantom(maps, tth, energy_keV=E, background=np.ones(3))
    with pytest.raises(ValueError, match="unobtainium"):
        chemical_phantom({"unobtainium": maps["Ni"]}, tth, energy_keV=E)
    with pytest.raises(ValueError, match="normalise"):
        chemical_phantom(maps, tth, energy_keV=E, normalise="sum")


def test_100px_300ch_3phases_shape():
    # the speed of this size is measured by benchmarks/bench_sim.py (no wall-clock checks in tests)
    n = 100
    yy, xx = np.mgrid[:n, :n]
    maps = {"Ni": (xx < 40).astype(float), "CeO2": (yy < 50).astype(float), "TiO2": ((xx + yy) % 7 == 0) * 1.0}
    tth = np.linspace(2.0, 12.0, 300)
    ds = chemical_phantom(maps, tth, energy_keV=30.0, strain_maps={"Ni": 1e-4 * (xx // 10)})
    assert ds["volume"].shape == (n, n, 300)
