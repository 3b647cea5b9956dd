"""Unmixing of a volume into component maps and spectra: PCA, NMF and k-means clustering.

Every pixel's pattern is a sample, the channels of the spectral dim are the features. The
results are :class:`xarray.Dataset` objects:

``pca``     ``maps`` (component, y, x): scores; ``spectra`` (component, tth): unit-norm principal
            axes; ``mean`` (tth); ``explained_variance_ratio`` (component).
``nmf``     ``maps`` (component, y, x) ≥ 0 in data units; ``spectra`` (component, tth) ≥ 0
            scaled to a maximum of 1, so that ``maps · spectra`` approximates the data.
``kmeans``  ``labels`` (y, x) (−1 outside the mask); ``spectra`` (component, tth): the mean
            pattern of each cluster, in data units; ``counts`` (component).

Optional leading ``time``/``z`` dims are kept in the maps (all their pixels are samples of one
decomposition). :func:`match_components` pairs component maps with reference maps (e.g. the
phase maps of a phantom) by correlation.

These need scikit-learn (``pip install 'xrdwidgets[analysis]'``); it is imported on first use.
"""
from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from .. import data as _data
from ..base.errors import DataError
from .fitting import fit_channels

log = logging.getLogger(__name__)

__all__ = ["pca", "nmf", "kmeans", "match_components"]

COMPONENT = "component"


def _sklearn(module: str):
    import importlib

    try:
        return importlib.import_module(f"sklearn.{module}")
    except ImportError:
        raise ImportError(
            "xrdwidgets.analysis.unmixing needs scikit-learn, which is not installed; install the "
            "optional extra: pip install 'xrdwidgets[analysis]' (or pip install scikit-learn)"
        ) from None


class _Samples:
    """A volume as a (samples, channels) matrix and the way back to maps."""

    def __init__(self, volume, tth_range, mask, func, n_components):
        if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
            raise DataError(f"{func}: n_components must be an integer >= 1, found {n_components!r}")
        try:
            da = _data.as_dataarray(volume)
            _data.validate_volume(da, check_finite=False)
        except DataError as exc:
            raise DataError(f"{func}: {exc}") from None
        da = _data.canonical(da)
        spec = da.dims[-1]
        coord = da[spec]
        i0, i1 = fit_channels(coord.values, tth_range, func=func, min_channels=1,
                              units=str(coord.attrs.get("units", "")))
        self.da, self.spec = da, spec
        self.coord = coord[i0:i1]
        self.map_dims = tuple(da.dims[:-1])
        self.map_shape = tuple(da.shape[:-1])
        n = int(np.prod(self.map_shape))
        x = np.asarray(da.isel({spec: slice(i0, i1)}).values, dtype=np.float64).reshape(n, -1)
        use = np.all(np.isfinite(x), axis=1)
        if mask is not None:
            m = mask.values if isinstance(mask, xr.DataArray) else np.asarray(mask)
            shape_yx = self.map_shape[-2:]
            if m.shape == shape_yx:
                m = np.broadcast_to(m, self.map_shape)
            elif m.shape != self.map_shape:
                raise DataError(f"{func}: mask must have shape {shape_yx} (y, x) or {self.map_shape}, found {m.shape}")
            if m.dtype != bool:
                if not np.all(np.isin(m, (0, 1))):
                    raise DataError(f"{func}: mask must be boolean (or 0/1), found dtype {m.dtype}")
                m = m.astype(bool)
            use &= m.reshape(-1)
        self.rows = np.flatnonzero(use)
        if self.rows.size < max(2, n_components):
            raise DataError(
                f"{func}: {self.rows.size} usable pixels (finite, inside the mask) for {n_components} "
                "components; need at least as many pixels as components (and 2)"
            )
        if n_components > x.shape[1]:
            raise DataError(f"{func}: n_components={n_components} exceeds the {x.shape[1]} channels")
        self.x = x[self.rows]
        self.units = str(da.attrs.get("units", ""))

    def maps(self, values, name, long_name, units, fill=np.nan):
        """(samples, k) → DataArray (component, *map_dims)."""
        k = values.shape[1]
        full = np.full((int(np.prod(self.map_shape)), k), fill, dtype=np.result_type(values.dtype, type(fill)))
        full[self.rows] = values
        full = np.moveaxis(full.reshape(self.map_shape + (k,)), -1, 0)
        coords = {COMPONENT: np.arange(k), **{d: self.da[d] for d in self.map_dims}}
        return xr.DataArray(full, dims=(COMPONENT,) + self.map_dims, coords=coords, name=name,
                            attrs={"long_name": long_name, "units": units})

    def spectra(self, values, name, long_name, units):
        coords = {COMPONENT: np.arange(values.shape[0]), self.spec: self.coord}
        return xr.DataArray(values, dims=(COMPONENT, self.spec), coords=coords, name=name,
                            attrs={"long_name": long_name, "units": units})

    def attrs(self, producer, params):
        c = np.asarray(self.coord.values)
        out = {"n_pixels": int(self.rows.size), "spectral_range": [float(c.min()), float(c.max())],
               "spectral_units": str(self.coord.attrs.get("units", ""))}
        out.update(_data.provenance(producer, params))
        return out


def pca(volume, n_components: int = 3, *, tth_range=None, mask=None, whiten: bool = False) -> xr.Dataset:
    """Principal component analysis of the pixel patterns.

    Parameters
    ----------
    volume : xarray.DataArray or Dataset
        Volume ``(y, x, spectral)`` (any order; leading ``time``/``z`` allowed).
    n_components : int
    tth_range : (float, float), optional
        Channels used, in the units of the spectral coordinate (default all).
    mask : boolean array ``(y, x)``, optional
        Pixels used; others are NaN in the maps.
    whiten : bool
        Scale the scores to unit variance (see :class:`sklearn.decomposition.PCA`).

    Returns
    -------
    xarray.Dataset
        ``maps`` (component, …, y, x) scores; ``spectra`` (component, spectral) unit-norm axes;
        ``mean`` (spectral) the mean pattern; ``explained_variance_ratio`` (component).
    """
    dec = _sklearn("decomposition")
    s = _Samples(volume, tth_range, mask, "pca", n_components)
    model = dec.PCA(n_components=n_components, whiten=whiten, svd_solver="full")
    scores = model.fit_transform(s.x)
    ds = xr.Dataset({
        "maps": s.maps(scores, "maps", "principal component score", "1" if whiten else s.units),
        "spectra": s.spectra(model.components_, "spectra", "principal axis", "1"),
        "explained_variance_ratio": xr.DataArray(model.explained_variance_ratio_, dims=(COMPONENT,),
                                                 attrs={"long_name": "explained variance ratio", "units": "1"}),
    })
    ds["mean"] = xr.DataArray(model.mean_, dims=(s.spec,), coords={s.spec: s.coord},
                              attrs={"long_name": "mean pattern", "units": s.units})
    ds.attrs.update(s.attrs("xrdwidgets.analysis.unmixing.pca",
                            {"n_components": n_components, "tth_range": tth_range, "whiten": whiten}))
    ds.attrs["method"] = "pca"
    return ds


def nmf(volume, n_components: int = 3, *, tth_range=None, mask=None, max_iter: int = 500,
        random_state: int | None = 0, init: str | None = "nndsvda", alpha: float = 0.0,
        l1_ratio: float = 0.0) -> xr.Dataset:
    """Non-negative matrix factorisation: data ≈ maps · spectra with both ≥ 0.

    Negative intensities (reconstruction artefacts) are set to 0 first (the fraction is logged).

    Parameters
    ----------
    volume, n_components, tth_range, mask :
        As in :func:`pca`.
    max_iter, random_state, init :
        Passed to :class:`sklearn.decomposition.NMF`.
    alpha, l1_ratio :
        Regularisation strength and L1 fraction, applied to both factors (``alpha_W`` and
        ``alpha_H`` of scikit-learn); 0 (default) for none.

    Returns
    -------
    xarray.Dataset
        ``maps`` (component, …, y, x) ≥ 0 in data units; ``spectra`` (component, spectral) ≥ 0,
        each scaled to a maximum of 1; attrs ``reconstruction_error`` (Frobenius norm of the
        residual, data units), ``n_iter``.
    """
    dec = _sklearn("decomposition")
    s = _Samples(volume, tth_range, mask, "nmf", n_components)
    neg = s.x < 0
    if neg.any():
        log.info("nmf: %.2g %% of the values are negative and set to 0", 100.0 * neg.mean())
        s.x = np.where(neg, 0.0, s.x)
    if not np.any(s.x > 0):
        raise DataError("nmf: the data have no positive values")
    model = dec.NMF(n_components=n_components, init=init, max_iter=int(max_iter), random_state=random_state,
                    alpha_W=float(alpha), alpha_H="same", l1_ratio=float(l1_ratio))
    w = model.fit_transform(s.x)
    h = model.components_
    scale = h.max(axis=1)
    scale = np.where(scale > 0, scale, 1.0)
    h = h / scale[:, None]
    w = w * scale[None, :]
    order = np.argsort(-w.sum(axis=0))  # strongest component first
    w, h = w[:, order], h[order]
    ds = xr.Dataset({
        "maps": s.maps(w, "maps", "NMF component abundance", s.units),
        "spectra": s.spectra(h, "spectra", "NMF component pattern (max 1)", "1"),
    })
    ds.attrs.update(s.attrs("xrdwidgets.analysis.unmixing.nmf",
                            {"n_components": n_components, "tth_range": tth_range, "max_iter": max_iter,
                             "random_state": random_state, "init": init, "alpha": alpha, "l1_ratio": l1_ratio}))
    ds.attrs.update({"method": "nmf", "reconstruction_error": float(model.reconstruction_err_),
                     "n_iter": int(model.n_iter_)})
    if model.n_iter_ >= max_iter:
        log.warning("nmf: stopped at max_iter=%d before converging; raise max_iter", max_iter)
    return ds


def kmeans(volume, n_clusters: int = 3, *, tth_range=None, mask=None, normalize: bool = True,
           random_state: int | None = 0, n_init: int = 10) -> xr.Dataset:
    """k-means clustering of the pixel patterns.

    Parameters
    ----------
    volume, tth_range, mask :
        As in :func:`pca`.
    n_clusters : int
    normalize : bool
        Cluster the patterns divided by their Euclidean norm (so that clusters follow the shape
        of the pattern, not the amount of material); the cluster means are always of the
        original data.
    random_state, n_init :
        Passed to :class:`sklearn.cluster.KMeans`.

    Returns
    -------
    xarray.Dataset
        ``labels`` (…, y, x) int, −1 outside the mask; ``spectra`` (component, spectral) the mean
        pattern of each cluster in data units; ``counts`` (component) pixels per cluster; attr
        ``inertia``.
    """
    cl = _sklearn("cluster")
    s = _Samples(volume, tth_range, mask, "kmeans", n_clusters)
    x = s.x
    if normalize:
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norm > 0, norm, 1.0)
    model = cl.KMeans(n_clusters=n_clusters, random_state=random_state, n_init=n_init)
    labels = model.fit_predict(x)
    # order clusters by decreasing mean intensity (label 0 = brightest), deterministic
    means = np.stack([s.x[labels == k].mean(axis=0) if np.any(labels == k) else np.full(s.x.shape[1], np.nan)
                      for k in range(n_clusters)])
    order = np.argsort(-np.nan_to_num(means.sum(axis=1), nan=-np.inf))
    rank = np.empty(n_clusters, dtype=int)
    rank[order] = np.arange(n_clusters)
    labels = rank[labels]
    means = means[order]
    lab = s.maps(labels[:, None].astype(np.int64), "labels", "k-means cluster label", "1", fill=-1)
    lab = lab[0].drop_vars(COMPONENT)
    ds = xr.Dataset({
        "labels": lab,
        "spectra": s.spectra(means, "spectra", "cluster mean pattern", s.units),
        "counts": xr.DataArray(np.bincount(labels, minlength=n_clusters), dims=(COMPONENT,),
                               attrs={"long_name": "pixels per cluster", "units": "1"}),
    })
    ds.attrs.update(s.attrs("xrdwidgets.analysis.unmixing.kmeans",
                            {"n_clusters": n_clusters, "tth_range": tth_range, "normalize": normalize,
                             "random_state": random_state, "n_init": n_init}))
    ds.attrs.update({"method": "kmeans", "inertia": float(model.inertia_)})
    return ds


def match_components(maps, references) -> xr.Dataset:
    """Pair component maps with reference maps by correlation (Hungarian assignment).

    Parameters
    ----------
    maps : xarray.DataArray
        ``(component, y, x)`` (e.g. ``nmf(...)["maps"]``).
    references : xarray.DataArray or dict
        ``(name, y, x)`` reference maps (e.g. a phantom's ``phase_maps`` with dim ``phase``), or
        ``{name: (y, x) array}``.

    Returns
    -------
    xarray.Dataset
        Over the references' dim: ``match`` (the matched component index) and
        ``correlation`` (Pearson correlation of the matched maps); ``matrix`` holds all
        correlations (reference, component). Pixels where either map is NaN are ignored.
    """
    from scipy.optimize import linear_sum_assignment

    if isinstance(references, dict):
        names = list(references)
        ref = xr.DataArray(np.stack([np.asarray(references[k], dtype=float) for k in names]),
                           dims=("reference",) + tuple(maps.dims[1:]), coords={"reference": names})
    else:
        ref = references
    if not isinstance(maps, xr.DataArray) or maps.ndim < 2:
        raise DataError(f"match_components: maps must be a (component, y, x) DataArray, found {type(maps).__name__}")
    rdim = ref.dims[0]
    m = np.asarray(maps.values, dtype=float).reshape(maps.shape[0], -1)
    r = np.asarray(ref.values, dtype=float).reshape(ref.shape[0], -1)
    if m.shape[1] != r.shape[1]:
        raise DataError(f"match_components: maps {maps.shape[1:]} and references {ref.shape[1:]} differ in size")
    ok = np.all(np.isfinite(m), axis=0) & np.all(np.isfinite(r), axis=0)
    m, r = m[:, ok], r[:, ok]

    def z(a):
        a = a - a.mean(axis=1, keepdims=True)
        n = np.linalg.norm(a, axis=1, keepdims=True)
        return a / np.where(n > 0, n, 1.0)

    corr = z(r) @ z(m).T  # (reference, component)
    ri, ci = linear_sum_assignment(-corr)
    comp = np.full(r.shape[0], -1)
    best = np.full(r.shape[0], np.nan)
    comp[ri] = ci
    best[ri] = corr[ri, ci]
    coords = {rdim: ref[rdim].values} if rdim in ref.coords else {}
    return xr.Dataset(
        {"match": ((rdim,), comp), "correlation": ((rdim,), best),
         "matrix": ((rdim, COMPONENT), corr)},
        coords={**coords, COMPONENT: np.arange(m.shape[0])},
    )
