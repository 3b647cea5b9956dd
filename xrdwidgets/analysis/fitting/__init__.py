"""Batch peak fitting: every pixel of a volume fitted at once with a vectorised, bounded LM solver.

``iterate_fit(volume, model, ...)`` is a generator (see :mod:`xrdwidgets.base.progress`): it yields
:class:`~xrdwidgets.base.progress.Progress` as pixels finish and returns an :class:`xarray.Dataset`
of parameter maps; :func:`fit_volume` runs it to the end. :func:`fit_volume_scipy` fits the same
model with the same bounds and initial guesses pixel by pixel with
:func:`scipy.optimize.least_squares` (the reference for tests and benchmarks), and
:func:`fit_patterns` is the core for callers that hold ``(n, n_channels)`` arrays.

Solver
------
Levenberg–Marquardt on a working set of pixels in parallel (torch, CPU or GPU), each pixel with
its own damping λ (Nielsen's update: λ ← λ · max(1/3, 1 − (2ρ − 1)³) after a successful step,
λ ← λ·ν, ν ← 2ν after a failed one, ρ = actual / predicted reduction) and Marquardt's scaling
(the damping term is λ·diag(JᵀJ), so steps do not depend on the units of the parameters). The
Jacobian is analytic (``jacobian="analytic"``, the default: one fused pass computes the model,
JᵀJ, Jᵀr and rᵀr); ``"autograd"`` uses ``torch.func.vmap(jacfwd)`` — about 5× slower on CPU,
kept to check new profiles.

The working set (``batch_pixels``) streams through the volume: pixels that finish leave it and
the next pixels take their places, so every sweep works on a full set until the end (no tail
of a few slow pixels holding up a batch). On CPU the default set is small (~1000 pixels at 100
channels) so that its temporaries stay in cache.

Bounds are handled by projection: a trial point is clipped into the box ``[lower, upper]``; a
parameter that sits on a bound while the gradient pushes it outwards is held fixed for that step
(its row and column are removed from the normal equations), so the other parameters still take
full LM steps. ``lower == upper`` fixes a parameter. The gain ratio uses the predicted reduction
of the clipped step.

A pixel stops when (as in MINPACK) the relative reduction of the cost on an accepted step is
below ``ftol``, the accepted step is below ``xtol · (|p| + xtol)`` for every parameter, the
largest cosine between the residual and a free Jacobian column is below ``gtol``, or the next,
lightly damped (λ ≤ 1) step predicts a reduction below ``ftol × cost`` (this saves the last,
confirming evaluation; the parameters then differ from the exact minimum by ~√(ftol·n) standard
errors, 10⁻³ σ at the defaults); also when λ grows beyond 1e16 (no reduction possible within the
floating-point precision, e.g. on noise-free data at the exact solution). All these count as
converged; a pixel that reaches ``max_iter`` or ends with non-finite values is flagged
``converged = False``. For float32 the tolerances are raised to 10 × machine epsilon.

Speed: measured by ``benchmarks/bench_peakfit.py`` (figures in the docs' notes); the batched
solver is much faster than scipy's pixel loop with the same analytic Jacobian and agrees with it
to ~1e-10 on noise-free data.

Outputs
-------
Maps ``(…, y, x)`` of every parameter (``area_0``, ``position_0``, ``fwhm_0``, ``eta_0``,
``bg_0``, ``bg_1``, …; position and FWHM in the units of the spectral axis, area in
data units × axis units, background coefficients in data units, see
:mod:`xrdwidgets.analysis.peaks` for the scaled background abscissa), their standard errors
``<name>_stderr`` (from (JᵀJ)⁻¹ of the free parameters scaled by the reduced χ², 0 for fixed
ones), ``rwp`` = √(Σ w (y − f)² / Σ w y²)
(a fraction, not %), ``chi2`` = Σ w (y − f)² / (n_channels − n_free_params) with w = 1/σ²
(with the default σ = 1 this is the residual variance, in data units²), ``converged`` and
``n_iter``. Pixels outside ``mask`` or with non-finite data are NaN / not converged.

Modules
-------
:mod:`~xrdwidgets.analysis.fitting.jacobian` (model, Jacobian, normal equations),
:mod:`~xrdwidgets.analysis.fitting.bounds` (fit range, bounds),
:mod:`~xrdwidgets.analysis.fitting.solver` (the batched LM solver, :func:`fit_patterns`),
:mod:`~xrdwidgets.analysis.fitting.prepare` (volume → pixels → maps),
:mod:`~xrdwidgets.analysis.fitting.volume` (:func:`iterate_fit`, :func:`fit_volume`,
:func:`fit_arguments`),
:mod:`~xrdwidgets.analysis.fitting.reference` (:func:`fit_volume_scipy`),
:mod:`~xrdwidgets.analysis.fitting.maps` (reading a result: maps, one pixel's fit).
"""
from __future__ import annotations

from .bounds import finite_bounds, fit_channels, resolve_bounds
from .jacobian import model_jacobian
from .maps import fit_map, map_names, pixel_fit
from .reference import fit_volume_scipy
from .solver import fit_patterns
from .volume import fit_arguments, fit_volume, iterate_fit, retry_from_neighbours

__all__ = ["iterate_fit", "fit_volume", "fit_volume_scipy", "fit_patterns", "model_jacobian",
           "resolve_bounds", "finite_bounds", "fit_channels", "retry_from_neighbours", "fit_arguments",
           "map_names", "fit_map", "pixel_fit"]
