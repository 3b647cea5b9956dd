"""Sinogram-stack corrections: air scatter, beam decay, motor jitter and centre of rotation.

Every correction works on a whole sinogram stack ``(translation, angle, spectral)`` at once: the
estimate is made from the channel sum (one summary sinogram ``(translation, angle)``) or from a
few edge translations, and the correction is applied to every channel in one vectorised pass.

API
---
Each public correction returns a pair ``(corrected, report)``:

``corrected``
    an :class:`xarray.DataArray` in canonical order ``(translation, angle, spectral)``, same
    coords, attrs updated: provenance (``provenance_*``), the list of corrections applied so far
    (``attrs["corrections"]``, a comma-separated string) and, for the centre, the geometry.
    A :class:`xarray.Dataset` input (e.g. from :func:`xrdwidgets.sim.scan.acquire`) gives its
    ``sinogram`` variable.
``report``
    a small frozen dataclass saying what was found (:class:`AirResult`, :class:`DecayResult`,
    :class:`JitterResult`, :class:`CentreResult`); ``report.summary()`` is a one-line text.

:func:`correct` runs the four in a sensible order (decay → air → jitter → centre) and returns
``(corrected, [report, ...])``. :func:`find_centre` estimates the centre without changing the
data. :func:`iterate_correct` and :func:`iterate_centre_gallery` are the generators a job runs
(yielding :class:`~xrdwidgets.base.progress.Progress`). :func:`detect_edges` and
:func:`shift_projections` are the bare-array kernels.

Conventions
-----------
* Translation index ``i`` of ``n_t``; positions and shifts are in translation *steps*.
* Rotation axis: at index ``(n_t - 1) / 2 + centre_offset`` (as :class:`~xrdwidgets.geometry.ScanGeometry`
  and the projector of :mod:`xrdwidgets.ops.projector`).
* A positive shift moves a projection's content towards higher translation indices.
* Centre of mass of a projection in a parallel-beam scan, in steps from the middle of the
  translations: ``COM(θ) = c + a·cos θ + b·sin θ``, the constant ``c`` being the axis offset.
* Stacks with leading ``z`` / ``time`` dims are refused: correct one slice at a time
  (``stack.isel(z=k)``).

The estimates assume background-free data for jitter and centre (remove air first, as
:func:`correct` does) and, for decay from the data, a sample that stays inside the translation
range at every angle (then the total intensity of a projection is the same for every angle).

Modules
-------
:mod:`.air` (air-scatter removal), :mod:`.decay` (beam-decay normalisation), :mod:`.jitter`
(centre-of-mass jitter), :mod:`.centre` (centre of rotation: search, gallery, correction),
:mod:`.shift` (sub-step projection shifts), :mod:`.report` (the reports), :mod:`.pipeline`
(:func:`correct` and its generator :func:`iterate_correct`). Every public name is importable from
``xrdwidgets.corrections``.
"""
from __future__ import annotations

from .air import AIR_MODES, STATISTICS, detect_edges, remove_air
from .centre import (APPLY_MODES, CENTRE_METHODS, CENTRE_METRICS, centre_candidates, centre_gallery,
                     correct_centre, find_centre, iterate_centre_gallery)
from .decay import DECAY_REFERENCES, normalise_decay
from .jitter import centre_of_mass, correct_jitter, fit_sinusoid
from .pipeline import correct, iterate_correct
from .report import (AirResult, CentreResult, DecayResult, JitterResult, applied_corrections,
                     summary_sinogram)
from .shift import INTERPOLATIONS, shift_projections

__all__ = [
    "centre_candidates", "centre_gallery", "iterate_centre_gallery",
    "AIR_MODES", "STATISTICS", "INTERPOLATIONS", "CENTRE_METHODS", "CENTRE_METRICS", "APPLY_MODES",
    "DECAY_REFERENCES",
    "AirResult", "DecayResult", "JitterResult", "CentreResult",
    "remove_air", "normalise_decay", "correct_jitter", "find_centre", "correct_centre", "correct",
    "iterate_correct", "detect_edges", "shift_projections", "centre_of_mass", "fit_sinusoid",
    "applied_corrections", "summary_sinogram",
]
