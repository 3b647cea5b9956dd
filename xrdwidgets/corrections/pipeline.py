"""The corrections in sequence: decay → air → jitter → centre, as a generator for jobs and as a
plain call.
"""
from __future__ import annotations

import xarray as xr

from ..base.errors import InputTypeError
from ..base.progress import Progress, run_to_end
from ._common import as_stack
from .air import remove_air
from .centre import correct_centre
from .decay import normalise_decay
from .jitter import correct_jitter

__all__ = ["iterate_correct", "correct"]


def _options(name, value) -> dict | None:
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if isinstance(value, dict):
        return dict(value)
    raise InputTypeError(f"{name}: expected True, False or a dict of keyword arguments, found {value!r}")


def iterate_correct(stack, *, air=True, decay=True, jitter=True, centre=True):
    """Generator: run the corrections in order (decay → air → jitter → centre), one step at a time.

    Yields a :class:`~xrdwidgets.base.progress.Progress` before each step run
    (``metrics["step"]`` names it: ``"decay"``, ``"air"``, ``"jitter"``, ``"centre"``) and a last
    one with ``metrics["step"] == "done"``; returns ``(corrected, reports)``. The same work as
    :func:`correct`, for a job (:func:`xrdwidgets.jobs.run`) or a progress bar.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (translation, angle, spectral).
    air, decay, jitter, centre : bool or dict
        As :func:`correct`.

    Returns
    -------
    (xarray.DataArray, list)
        The corrected stack (translation, angle, spectral) and the reports of the steps run, in
        order.
    """
    steps = [("decay", decay, normalise_decay), ("air", air, remove_air),
             ("jitter", jitter, correct_jitter), ("centre", centre, correct_centre)]
    plan = [(name, fn, _options(name, value)) for name, value, fn in steps]
    plan = [(name, fn, kwargs) for name, fn, kwargs in plan if kwargs is not None]
    da = as_stack(stack)
    reports = []
    for k, (name, fn, kwargs) in enumerate(plan):
        yield Progress(iteration=k, total=len(plan), metrics={"step": name})
        da, report = fn(da, **kwargs)
        reports.append(report)
    yield Progress(iteration=len(plan), total=len(plan), metrics={"step": "done"})
    return da, reports


def correct(stack, *, air=True, decay=True, jitter=True, centre=True) -> tuple[xr.DataArray, list]:
    """Run the corrections in order: decay → air → jitter → centre.

    * Beam decay first: air scatter follows the incident beam as the sample signal does, so the
      projection totals (sample + air) measure the beam whether or not air was removed; after
      it the air pattern is the same at every angle and is estimated from all angles at once
      (``mode="global"``, the least noisy).
    * Air next: the centres of mass of the jitter fit and the centre search need
      background-free projections.
    * Jitter before the centre: the opposing-projection and FBP searches need consistent
      projections.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (translation, angle, spectral).
    air, decay, jitter, centre : bool or dict
        ``False`` skips a step; ``True`` runs it with defaults; a dict gives its keyword arguments,
        e.g. ``air={"edge": 3}``, ``decay={"monitor": i0}``, ``centre={"apply": "shift"}``
        (see :func:`~xrdwidgets.corrections.air.remove_air`,
        :func:`~xrdwidgets.corrections.decay.normalise_decay`,
        :func:`~xrdwidgets.corrections.jitter.correct_jitter`,
        :func:`~xrdwidgets.corrections.centre.correct_centre`).

    Returns
    -------
    (xarray.DataArray, list)
        The corrected stack and the reports of the steps run, in order.
    """
    return run_to_end(iterate_correct(stack, air=air, decay=decay, jitter=jitter, centre=centre))
