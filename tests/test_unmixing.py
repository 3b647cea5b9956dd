"""PCA, NMF and k-means on the demo phantom (tiny), and their inputs and outputs."""
import sys

import numpy as np
import pytest
import xarray as xr

import xrdwidgets
from xrdwidgets.analysis import unmixing
from xrdwidgets.data import DataError

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def demo():
    return xrdwidgets.demo(size="tiny")


def test_nmf_finds_the_three_phases(demo):
    res = unmixing.nmf(demo["volume"], 3)
    assert res["maps"].dims == ("component", "y", "x")
    assert res["spectra"].dims == ("component", "tth")
    assert float(res["maps"].min()) >= 0 and float(res["spectra"].min()) >= 0
    np.testing.assert_allclose(res["spectra"].max("tth").values, 1.0)
    match = unmixing.match_components(res["maps"], demo["phase_maps"])
    assert list(match["phase"].values) == ["CeO2", "Ni", "TiO2"]
    assert float(match["correlation"].min()) >= 0.8
    assert sorted(match["match"].values.tolist()) == [0, 1, 2]
    # the spectrum matched to each phase looks like that phase's pattern
    for ph in match["phase"].values:
        k = int(match["match"].sel(phase=ph))
        r = np.corrcoef(res["spectra"].values[k], demo["patterns"].sel(phase=ph).values)[0, 1]
        assert r > 0.8, ph
    # maps · spectra reconstructs the data
    recon = np.einsum("kyx,kt->yxt", res["maps"].values, res["spectra"].values)
    err = np.linalg.norm(recon - np.clip(demo["volume"].values, 0, None)) / np.linalg.norm(demo["volume"].values)
    assert err < 0.05
    assert res.attrs["method"] == "nmf" and res.attrs["reconstruction_error"] >= 0


def test_pca_layout(demo):
    res = unmixing.pca(demo["volume"], 4)
    evr = res["explained_variance_ratio"].values
    assert np.all(np.diff(evr) <= 0) and evr.sum() <= 1 + 1e-9
    np.testing.assert_allclose(np.linalg.norm(res["spectra"].values, axis=1), 1.0)
    assert res["mean"].dims == ("tth",)
    assert res["maps"].shape == (4, 24, 24)
    match = unmixing.match_components(res["maps"].isel(component=slice(0, 3)), demo["phase_maps"])
    assert float(match["correlation"].max()) > 0.8


def test_kmeans_labels_and_means(demo):
    vol = demo["volume"]
    mask = (demo["phase_maps"].sum("phase") > 0.5).values
    res = unmixing.kmeans(vol, 3, mask=mask)
    labels = res["labels"].values
    assert res["labels"].dims == ("y", "x")
    assert np.all(labels[~mask] == -1) and set(np.unique(labels[mask])) == {0, 1, 2}
    for k in range(3):
        expect = vol.values[labels == k].mean(axis=0, dtype=np.float64)
        np.testing.assert_allclose(res["spectra"].values[k], expect, rtol=1e-9)
    assert int(res["counts"].sum()) == int(mask.sum())
    # brightest cluster first
    assert np.all(np.diff(res["spectra"].sum("tth").values) <= 0)


def test_channel_range_and_mask(demo):
    res = unmixing.nmf(demo["volume"], 2, tth_range=(3.0, 5.0), mask=np.ones((24, 24), bool))
    t = res["spectra"]["tth"].values
    assert t.min() >= 3.0 and t.max() <= 5.0
    assert res.attrs["n_pixels"] == 576


def test_match_components_with_dict():
    a = np.zeros((4, 4))
    a[:2] = 1
    b = 1 - a
    maps = xr.DataArray(np.stack([b, a]), dims=("component", "y", "x"))
    m = unmixing.match_components(maps, {"top": a, "bottom": b})
    assert m["match"].values.tolist() == [1, 0]
    np.testing.assert_allclose(m["correlation"].values, 1.0)


@pytest.mark.parametrize("func", [unmixing.pca, unmixing.nmf, unmixing.kmeans])
def test_rejects_bad_input(func, demo):
    with pytest.raises(DataError, match="n_components|integer"):
        func(demo["volume"], 0)
    with pytest.raises(DataError, match="dims"):
        func(xr.DataArray(np.zeros((3, 4, 5)), dims=("a", "b", "c")), 2)
    with pytest.raises(DataError, match="mask"):
        func(demo["volume"], 2, mask=np.ones((3, 3), bool))
    with pytest.raises(DataError, match="outside"):
        func(demo["volume"], 2, tth_range=(20.0, 30.0))


def test_clear_error_without_scikit_learn(monkeypatch, demo):
    monkeypatch.setitem(sys.modules, "sklearn.decomposition", None)
    with pytest.raises(ImportError, match=r"xrdwidgets\[analysis\]"):
        unmixing.nmf(demo["volume"], 3)
