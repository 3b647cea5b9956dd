"""The volume driver of the per-pixel fit: every pixel of a volume through the batched LM solver.

:func:`iterate_fit` prepares the volume (:class:`~xrdwidgets.analysis.fitting.prepare.PreparedVolume`),
streams its pixels through :func:`~xrdwidgets.analysis.fitting.solver.iterate_lm` as a generator
of :class:`~xrdwidgets.base.progress.Progress`, retries pixels that did not converge from their
neighbours (:func:`retry_from_neighbours`), marks pixels without a significant peak
(``peak_found``) and returns the maps; :func:`fit_volume` runs it to the end.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import xarray as xr

from ...base.errors import DataError, InputError
from ...base.progress import Progress, run_to_end
from ..peaks import PeakModel
from .bounds import clip_to_bounds
from .prepare import PreparedVolume, result_dataset
from .solver import check_jacobian, check_max_iter, fit_device, fit_dtype, iterate_lm, working_set_size

log = logging.getLogger(__name__)

__all__ = ["iterate_fit", "fit_volume", "fit_arguments", "retry_from_neighbours", "add_peak_found"]


def iterate_fit(volume, model: PeakModel | None = None, *, tth_range=None, bounds=None, positions=None,
                initial: dict | None = None, sigma=None, mask=None, max_iter: int = 100,
                ftol: float = 1e-8, xtol: float = 1e-8, gtol: float = 1e-8, device=None, dtype=None,
                batch_pixels: int | None = None, jacobian: str = "analytic", preview: str | None = None,
                retries: int = 1, significance: float = 3.0):
    """Fit a peak model to every pixel of a volume; generator of progress events.

    Parameters
    ----------
    volume : xarray.DataArray or Dataset
        Volume ``(y, x, spectral)`` in any dim order, optionally with leading ``time``/``z``
        (every map pixel of every slice is fitted).
    model : PeakModel, default ``PeakModel()`` (one pseudo-Voigt + linear background)
    tth_range : (float, float), optional
        Fit range in the units of the spectral coordinate (deg for ``tth``; the name is kept for
        every spectral dim). Channels with coordinate in [min, max] are fitted; default all.
        Must lie within the axis.
    bounds : None, dict or (lower, upper)
        See :func:`resolve_bounds`; e.g. ``{"eta": (0, 0)}`` fixes a Gaussian shape and
        ``{"position_0": (3.2, 3.4)}`` narrows a position.
    positions : sequence of float, optional
        Starting peak positions (length ``n_peaks``), e.g. from
        :func:`~xrdwidgets.explore.roi.suggest_peaks`; default: the data maxima.
    initial : dict, optional
        ``{name: value}`` starting values that replace the data-driven guesses.
    sigma : None, "poisson", float or array
        Standard deviation of the data (broadcast against the volume): weights 1/σ². ``None``:
        unit weights; ``"poisson"``: σ = √max(y, 1).
    mask : boolean array or DataArray ``(y, x)`` (or the full map shape), optional
        Pixels to fit; others are NaN in the result.
    max_iter : int
        LM iterations per pixel at most.
    ftol, xtol, gtol : float
        Convergence tolerances (see module notes).
    device : str or torch.device, optional
        Default CUDA when available, else CPU.
    dtype : torch.float64 (default) or torch.float32
    batch_pixels : int, optional
        Size of the working set of pixels iterated together (default: ~0.8 MB of data per
        temporary on CPU, so that they stay in cache — 1024 pixels at 100 channels; ~0.5 GB of
        temporaries on a GPU). Pixels that finish leave the set and the next ones take their place.
    jacobian : {"analytic", "autograd"}
    preview : str, optional
        Parameter shown in each event's ``preview`` (default the first area).
    retries : int
        Rounds of neighbour-seeded retries (:func:`retry_from_neighbours`): a pixel that did not
        converge is fitted again from the median parameters of its converged neighbours (3 × 3;
        else of all converged pixels); the retry is kept when it converged or lowered the cost.
        0: none.
    significance : float
        A pixel "has a peak" (map ``peak_found``) when every peak's area is positive and at least
        ``significance`` standard errors; elsewhere the fitted position and width mean little.

    The arguments are checked when ``iterate_fit`` is called, before the first event (a
    dashboard can refuse a bad form before it starts a job); the volume is read on the first
    ``next()``.

    Yields
    ------
    Progress
        After each solver sweep (one LM iteration of the working set) in which pixels finished:
        ``iteration`` = pixels finished so far, ``total`` = pixels to fit; ``loss`` = mean cost
        ½Σ w r² of the working set in that sweep; ``metrics``: ``sweep``, ``pixels_done``,
        ``pixels_total``, ``active`` (pixels in the working set), ``elapsed_s``; ``preview``: the
        ``(y, x)`` map of the preview parameter (of the ``time``/``z`` slice being fitted) filled
        so far, NaN where not yet started.

    Returns
    -------
    xarray.Dataset
        Maps over the volume's non-spectral dims: every parameter, ``<name>_stderr``, ``rwp``,
        ``chi2``, ``converged``, ``n_iter``, ``peak_found``; attrs record the model, fit range,
        bounds, provenance, ``n_converged``, ``n_not_converged``, ``n_retried``, ``n_peak_found``.
    """
    if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)) or not 0 <= retries <= 10:
        raise DataError(f"iterate_fit: retries must be an integer 0 to 10, found {retries!r}")
    if not (isinstance(significance, (int, float)) and math.isfinite(significance) and significance >= 0):
        raise DataError(f"iterate_fit: significance must be a number >= 0, found {significance!r}")
    model = model or PeakModel()
    if not isinstance(model, PeakModel):     # the same check and message as PreparedVolume's
        raise DataError(f"iterate_fit: model must be a PeakModel, found {type(model).__name__}")
    max_iter = check_max_iter(max_iter)
    jacobian = check_jacobian(jacobian)
    dev = fit_device(device)
    dt = fit_dtype(dtype)
    jprev = model.index(preview or model.param_names[0])
    return _fit_events(volume, model, tth_range=tth_range, bounds=bounds, positions=positions, initial=initial,
                       sigma=sigma, mask=mask, max_iter=max_iter, ftol=ftol, xtol=xtol, gtol=gtol, dev=dev, dt=dt,
                       batch_pixels=batch_pixels, jacobian=jacobian, jprev=jprev, retries=retries,
                       significance=significance)


def _fit_events(volume, model, *, tth_range, bounds, positions, initial, sigma, mask, max_iter, ftol, xtol, gtol,
                dev, dt, batch_pixels, jacobian, jprev, retries, significance):
    """:func:`iterate_fit`'s events, its arguments checked."""
    import torch

    prep = PreparedVolume(volume, model, tth_range, bounds, mask, sigma, "iterate_fit")
    n_fit, n_ch = prep.y.shape
    batch = working_set_size(batch_pixels, dev, n_ch, model)
    ny, nx = prep.map_shape[-2:]
    prev_map = np.full(int(np.prod(prep.map_shape)), np.nan)
    xt = torch.as_tensor(np.array(prep.x), dtype=dt, device=dev)
    t0 = time.perf_counter()
    log.info("iterate_fit: %d pixels × %d channels, %s, working set %d on %s", n_fit, n_ch, model, batch, dev)

    def load(i0, i1):
        y = torch.as_tensor(prep.y[i0:i1], dtype=dt, device=dev)
        sw = None if prep.sw is None else torch.as_tensor(prep.sw[i0:i1], dtype=dt, device=dev)
        return y, sw, prep.initial(y, positions, initial)

    gen = iterate_lm(model, xt, load, n_fit, prep.lo, prep.hi, batch=batch, max_iter=max_iter, ftol=ftol,
                     xtol=xtol, gtol=gtol, jacobian=jacobian)
    with torch.no_grad():
        res = yield from _sweep_events(gen, prep, jprev, prev_map, t0)
    n_retried = _retry_rounds(res, prep, retries, lambda y_rows, p0: iterate_lm(
        model, xt, _subset_loader(prep, y_rows, p0, dt, dev), len(y_rows), prep.lo, prep.hi, batch=batch,
        max_iter=max_iter, ftol=ftol, xtol=xtol, gtol=gtol, jacobian=jacobian))
    if n_retried:   # the preview of the final maps (retried pixels changed)
        prev_map[prep.pixels] = res["params"][:, jprev]
        plane = int(prep.pixels[-1]) // (ny * nx)
        yield Progress(iteration=n_fit, total=n_fit, loss=None,
                       metrics={"pixels_done": n_fit, "pixels_total": n_fit, "retried": n_retried,
                                "elapsed_s": time.perf_counter() - t0},
                       preview=prev_map.reshape(-1, ny, nx)[plane].copy())
    elapsed = time.perf_counter() - t0
    n_conv = int(res["converged"].sum())
    log.info("iterate_fit: %d/%d pixels converged in %.3g s (%.0f pixels/s)", n_conv, n_fit, elapsed,
             n_fit / max(elapsed, 1e-9))
    if n_conv < n_fit:
        log.warning("iterate_fit: %d of %d pixels did not converge within max_iter=%d",
                    n_fit - n_conv, n_fit, max_iter)
    attrs = {"producer": "xrdwidgets.analysis.fitting.iterate_fit", "solver": "batched Levenberg-Marquardt (torch)",
             "device": str(dev), "dtype": str(dt), "max_iter": max_iter, "ftol": ftol, "xtol": xtol,
             "gtol": gtol, "jacobian": jacobian, "batch_pixels": batch,
             "sigma": None if sigma is None else str(sigma)[:40],
             "positions": None if positions is None else [float(v) for v in np.atleast_1d(positions)],
             "elapsed_s": elapsed}
    ds = result_dataset(prep, res["params"], res["stderr"], res["rwp"], res["chi2"], res["converged"],
                         res["n_iter"], attrs)
    ds.attrs.update({"solver": attrs["solver"], "device": str(dev), "dtype": str(dt).replace("torch.", ""),
                     "batch_pixels": batch, "elapsed_s": elapsed, "n_retried": int(n_retried)})
    add_peak_found(ds, model, significance)
    return ds


def _sweep_events(gen, prep: PreparedVolume, jprev: int, prev_map, t0: float):
    """Progress after each solver sweep in which pixels finished; returns the solver's result.

    ``prev_map`` (flat over the map) is filled with parameter ``jprev`` of the finished pixels and
    the current estimates of the working set; the preview is its ``(y, x)`` plane being fitted.
    """
    n_fit = prep.y.shape[0]
    ny, nx = prep.map_shape[-2:]
    last_done = 0
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if ev["done"] == last_done:
            continue
        last_done = ev["done"]
        # preview: finished pixels, then the current estimates of the working set
        for rows, p_done in ev["finished"]:
            prev_map[prep.pixels[rows]] = p_done[:, jprev]
        if ev["active"]:
            prev_map[prep.pixels[ev["idx"].cpu().numpy()]] = ev["params"][:, jprev].cpu().numpy()
            first = int(prep.pixels[int(ev["idx"][0])])
        else:
            first = int(prep.pixels[-1])
        plane = first // (ny * nx)
        yield Progress(
            iteration=ev["done"], total=n_fit, loss=ev["loss"],
            metrics={"sweep": ev["sweep"], "pixels_done": ev["done"], "pixels_total": n_fit,
                     "active": ev["active"], "elapsed_s": time.perf_counter() - t0},
            preview=prev_map.reshape(-1, ny, nx)[plane].copy(),
        )


def _retry_rounds(res: dict, prep: PreparedVolume, retries: int, refit) -> int:
    """Up to ``retries`` rounds of :func:`retry_from_neighbours`; pixels whose retry was kept."""
    n_retried = 0
    for _ in range(int(retries)):
        if res["converged"].all():
            break
        kept = retry_from_neighbours(res, prep.pixels, prep.map_shape, refit)
        n_retried += kept
        if not kept:
            break
    return n_retried


def _subset_loader(prep, rows, p0, dt, dev):
    """``load(i0, i1)`` for :func:`~.solver.iterate_lm` over the fitted pixels ``rows`` started at ``p0``."""
    import torch

    def load(i0, i1):
        r = rows[i0:i1]
        y = torch.as_tensor(prep.y[r], dtype=dt, device=dev)
        sw = None if prep.sw is None else torch.as_tensor(prep.sw[r], dtype=dt, device=dev)
        p = torch.as_tensor(p0[i0:i1], dtype=dt, device=dev)
        return y, sw, clip_to_bounds(p, prep.lo, prep.hi)

    return load


def retry_from_neighbours(res: dict, pixels, map_shape, refit) -> int:
    """Fit the non-converged pixels again from their converged neighbours' parameters.

    Parameters
    ----------
    res : dict
        Per fitted pixel ``params`` (n, n_params), ``stderr``, ``rwp``, ``chi2``, ``converged``,
        ``n_iter`` (updated in place where a retry is kept).
    pixels : numpy.ndarray
        Flat index into the map (``map_shape``, last two axes ``(y, x)``) of each fitted pixel.
    refit : callable
        ``refit(rows, p0)`` → an :func:`~.solver.iterate_lm`-style generator over the fitted
        pixels ``rows`` started at ``p0`` (n, n_params); its return value has the arrays of ``res``.

    Returns
    -------
    int
        Pixels whose retry was kept (converged, or a lower χ² than before).
    """
    bad = np.nonzero(~res["converged"])[0]
    good = res["converged"] & np.all(np.isfinite(res["params"]), axis=1)
    if bad.size == 0 or not good.any():
        return 0
    ny, nx = map_shape[-2:]
    n_all = int(np.prod(map_shape))
    npar = res["params"].shape[1]
    full = np.full((n_all, npar), np.nan)
    full[pixels[good]] = res["params"][good]
    full = full.reshape(-1, ny, nx, npar)
    fallback = np.nanmedian(res["params"][good], axis=0)
    seeds = np.empty((bad.size, npar))
    for k, i in enumerate(bad):
        plane, rem = divmod(int(pixels[i]), ny * nx)
        r, c = divmod(rem, nx)
        block = full[plane, max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].reshape(-1, npar)
        block = block[np.all(np.isfinite(block), axis=1)]
        seeds[k] = np.median(block, axis=0) if len(block) else fallback
    gen = refit(bad, seeds)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            new = stop.value
            break
    old_chi2 = np.where(np.isfinite(res["chi2"][bad]), res["chi2"][bad], np.inf)
    new_chi2 = np.where(np.isfinite(new["chi2"]), new["chi2"], np.inf)
    keep = new["converged"] | (new_chi2 < old_chi2)
    for key in ("params", "stderr", "rwp", "chi2", "converged"):
        res[key][bad[keep]] = new[key][keep]
    res["n_iter"][bad[keep]] = res["n_iter"][bad[keep]] + new["n_iter"][keep]
    log.info("iterate_fit: retried %d non-converged pixels from their neighbours; kept %d, %d now converged",
             bad.size, int(keep.sum()), int(new["converged"][keep].sum()))
    return int(keep.sum())


def add_peak_found(ds: xr.Dataset, model: PeakModel, significance: float) -> None:
    """Add the map ``peak_found`` ``(…, y, x)`` to a fit result ``ds``, in place.

    A pixel has a peak when every peak's area is > 0 and >= ``significance`` standard errors
    (``area_<i>_stderr``); attrs ``n_peak_found``, ``significance``, ``n_not_converged`` are set.
    """
    areas = [n for n in model.param_names if n.startswith("area_")]
    found = None
    for n in areas:
        a, e = ds[n].values, ds[f"{n}_stderr"].values
        ok = np.isfinite(a) & (a > 0) & (np.isfinite(e) & (a >= significance * e))
        found = ok if found is None else (found & ok)
    if found is None:
        return
    ds["peak_found"] = xr.DataArray(found, dims=ds[areas[0]].dims,
                                    attrs={"long_name": f"significant peak (area ≥ {significance:g} σ)"})
    ds.attrs["n_peak_found"] = int(found.sum())
    ds.attrs["significance"] = float(significance)
    ds.attrs["n_not_converged"] = int(ds.attrs.get("n_fitted", 0)) - int(ds.attrs.get("n_converged", 0))


def fit_volume(volume, model: PeakModel | None = None, callback=None, **kwargs) -> xr.Dataset:
    """Run :func:`iterate_fit` to the end and return its Dataset of maps.

    ``callback(progress)`` is called on every :class:`~xrdwidgets.base.progress.Progress` event.
    Keyword arguments are those of :func:`iterate_fit`.
    """
    return run_to_end(iterate_fit(volume, model, **kwargs), callback)


def fit_arguments(*, n_peaks: int = 1, profile: str = "pseudo_voigt", background: str = "linear",
                  fit_range=None, positions=None, fwhm_max: float = 0.0, max_iter: int = 100) -> dict:
    """Arguments of :func:`iterate_fit` from the plain choices of a form.

    Parameters
    ----------
    n_peaks, profile, background :
        The :class:`~xrdwidgets.analysis.peaks.PeakModel`.
    fit_range : (float, float), optional
        ``tth_range``: the fitted part of the spectral axis (its units).
    positions : sequence of float, optional
        Starting positions (spectral units), one per peak; empty or None: the data maxima.
    fwhm_max : float
        Upper bound of every FWHM (spectral units); 0: the model's default bounds.
    max_iter : int

    Returns
    -------
    dict
        ``model``, ``tth_range``, ``positions``, ``bounds``, ``max_iter``: ``model`` is the first
        argument of :func:`iterate_fit`, the rest its keyword arguments.
    """
    model = PeakModel(n_peaks=int(n_peaks), profile=profile, background=background)
    positions = list(positions or [])
    if positions and len(positions) != model.n_peaks:
        raise InputError(f"give {model.n_peaks} peak position(s) for {model.n_peaks} peak(s), "
                         f"found {len(positions)}")
    bounds = None
    if fwhm_max > 0:
        bounds = {f"fwhm_{i}": (0.0, float(fwhm_max)) for i in range(model.n_peaks)}
    return {"model": model, "tth_range": None if fit_range is None else tuple(float(v) for v in fit_range),
            "positions": positions or None, "bounds": bounds, "max_iter": int(max_iter)}
