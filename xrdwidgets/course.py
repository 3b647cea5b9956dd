"""Exercises of the course (``notebooks/00_course.ipynb``): their data and the checks of answers.

Each exercise has a function that gives its data (the student works on it) and a ``check_*``
function that takes the student's answer, works out whether it is right *by computing* (the
reconstruction is made with the chosen filter, the scan simulated at the chosen dose, ...) and
returns a :class:`CheckResult`: ``correct``, a message that says why, and the numbers behind it.
Nothing is printed; a notebook shows the result (``_repr_html_``) when it is a cell's last value.

Exercises
---------
``check_filter_choice(name)``
    Choose the FBP filter (window of the ramp) that reconstructs the noisy scan of
    :func:`filter_exercise_data` to at least :data:`TARGET_PSNR_DB` (30 dB) PSNR.
``check_centre(offset_steps)``
    Find the rotation-axis offset of the scan of :func:`centre_exercise_scan` (within half a
    translation step).
``check_scan_dose(dose)``
    The lowest dose (expected counts at the brightest point of the sinogram) at which FBP with
    the cosine filter reaches 30 dB on the exercise phantom, within a factor 2.
``check_interlaced_sequence(sequence, n_angles, n_subsets)``
    The order in which an interlaced scan measures its angles.

Conventions: images ``(y, x)``, sinograms ``(translation, angle)``, angles in degrees over
0–180°, translations in pixels (one step = one pixel), rotation centre at ``(n − 1) / 2``
(:mod:`xrdwidgets.sim.scan`). PSNR is ``metrics.psnr`` against the area-averaged phantom raster.
"""
from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field

import numpy as np

from .explore.metrics import psnr
from .ops.filters import FILTERS
from .base.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "CheckResult", "TARGET_PSNR_DB", "EXERCISE_N", "EXERCISE_ANGLES", "EXERCISE_DOSE",
    "exercise_phantom", "filter_exercise_data", "dose_exercise_data", "reconstruction_psnr",
    "check_filter_choice", "centre_exercise_scan", "check_centre", "check_scan_dose",
    "interlaced_sequence", "check_interlaced_sequence",
]

#: The image quality the reconstruction exercises ask for (dB).
TARGET_PSNR_DB = 30.0
#: Image size (pixels) and number of angles (over 0–180°) of the exercise scans.
EXERCISE_N = 64
EXERCISE_ANGLES = 100
#: Dose of the filter exercise: expected counts at the brightest point of the sinogram.
EXERCISE_DOSE = 600.0
#: Seeds of the exercise phantom and of its Poisson noise (fixed: every student gets the same data).
PHANTOM_SEED = 1
NOISE_SEED = 0
#: Rotation-axis offset (steps) of the centre exercise, and the tolerance of its check.
_CENTRE_OFFSET = 2.75
CENTRE_TOLERANCE = 0.5


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one answer.

    Attributes
    ----------
    exercise : str
        Which exercise.
    correct : bool
        Whether the answer is right (``bool(result)`` is the same).
    message : str
        Why, in a sentence or two (with a hint when the answer is not right).
    details : dict
        The numbers behind the verdict (e.g. ``{"psnr_db": 30.6}``).
    """

    exercise: str
    correct: bool
    message: str
    details: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.correct)

    def __str__(self) -> str:
        return f"{'right' if self.correct else 'not yet'} ({self.exercise}): {self.message}"

    def _repr_html_(self) -> str:
        colour, mark, word = (("#1a7f37", "✔", "Right") if self.correct else ("#b35900", "✘", "Not yet"))
        return (f'<div style="border-left:4px solid {colour};padding:4px 10px;margin:4px 0">'
                f'<b style="color:{colour}">{mark} {word}</b> <i>({html.escape(self.exercise)})</i>: '
                f"{html.escape(self.message)}</div>")


# ----------------------------------------------------------------------------- shared data
def exercise_phantom(n: int = EXERCISE_N):
    """The exercise sample: random ellipses and polygons in a disk (values 0.2–1), ``n × n`` pixels.

    Returns
    -------
    xrdwidgets.sim.shapes.PixelPhantom
        Exact raster (``.raster()``, ``(y, x)``) and exact line integrals in pixel units.
    """
    from .sim.phantoms import random_blobs_phantom
    return random_blobs_phantom(n, 8, seed=PHANTOM_SEED).in_pixels(n)


def _exercise_sinogram(dose, *, n: int = EXERCISE_N, n_angles: int = EXERCISE_ANGLES, seed: int = NOISE_SEED,
                       centre_offset: float = 0.0):
    phantom = exercise_phantom(n)
    angles = np.arange(n_angles) * 180.0 / n_angles
    t = np.arange(n) - (n - 1) / 2.0
    sino = phantom.line_integrals(t, angles, translation_offset=centre_offset)
    if dose is not None:
        scale = float(sino.max()) / float(dose)
        sino = np.random.default_rng(seed).poisson(sino / scale).astype(np.float64) * scale
    return sino, angles, phantom.raster()


def filter_exercise_data():
    """Data of the filter exercise: a noisy scan of :func:`exercise_phantom` and its truth.

    Returns
    -------
    sinogram : numpy.ndarray, shape (64, 100)
        ``(translation, angle)``, line integrals in pixel units with Poisson noise at
        :data:`EXERCISE_DOSE` counts at the brightest point (then rescaled to line integrals).
    angles_deg : numpy.ndarray, shape (100,)
        Evenly over 0–180° (stop excluded).
    truth : numpy.ndarray, shape (64, 64)
        The phantom's area-averaged raster ``(y, x)``.
    """
    return _exercise_sinogram(EXERCISE_DOSE)


def dose_exercise_data(dose: float):
    """Data of the dose exercise: the scan of :func:`filter_exercise_data` at another ``dose``.

    Parameters
    ----------
    dose : float
        Expected counts at the brightest point of the sinogram (> 0).

    Returns
    -------
    sinogram, angles_deg, truth : as :func:`filter_exercise_data`.
    """
    return _exercise_sinogram(_positive("dose", dose))


def reconstruction_psnr(sinogram, angles_deg, truth, *, filter: str = "ramp") -> float:
    """PSNR (dB) of the FBP of ``sinogram`` (translation, angle) with ``filter`` against ``truth``."""
    from .recon.fbp import fbp_array
    return psnr(fbp_array(np.asarray(sinogram), angles_deg, filter=filter), truth)


def _positive(name, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a positive number, found {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"{name}: expected a positive number, found {value!r}")
    return v


# ----------------------------------------------------------------------------- exercise 1
def check_filter_choice(name: str) -> CheckResult:
    """Exercise 1: does FBP with filter ``name`` reach 30 dB on :func:`filter_exercise_data`?

    Parameters
    ----------
    name : str
        An FBP filter of :data:`xrdwidgets.ops.FILTERS` (``"ramp"``, ``"cosine"``, ...).

    Returns
    -------
    CheckResult
        ``details``: ``psnr_db`` of the chosen filter, ``best`` (filter → PSNR of every filter).

    Raises
    ------
    ValueError
        ``name`` is not a known filter.
    """
    if name not in FILTERS:
        raise InputError(f"check_filter_choice: name must be one of {FILTERS}, found {name!r}")
    sino, angles, truth = filter_exercise_data()
    value = reconstruction_psnr(sino, angles, truth, filter=name)
    ok = value >= TARGET_PSNR_DB
    if ok:
        msg = (f"FBP with the {name!r} filter gives {value:.2f} dB (≥ {TARGET_PSNR_DB:g} dB): it damps the "
               f"noise at high spatial frequencies and keeps the edges.")
    elif name in ("ramp", "ram-lak"):
        msg = (f"{name!r} gives {value:.2f} dB: the bare ramp amplifies the Poisson noise at high frequencies. "
               f"Try a window that rolls the ramp off, but not too strongly.")
    elif name == "none":
        msg = f"{name!r} gives {value:.2f} dB: plain back-projection (no ramp) is blurred beyond use."
    else:
        msg = (f"{name!r} gives {value:.2f} dB (< {TARGET_PSNR_DB:g} dB): this window smooths too much and "
               f"blurs the edges. Try a milder one.")
    return CheckResult("filter choice", ok, msg, {"filter": name, "psnr_db": value})


# ----------------------------------------------------------------------------- exercise 2
def centre_exercise_scan(n_channels: int = 8):
    """Data of the centre exercise: a scan whose rotation axis is off the middle of the translations.

    The exercise phantom with a flat spectrum of ``n_channels`` channels, 100 angles over
    0–180°, 64 translations of one pixel, Poisson noise at 2000 counts, the axis at an
    undisclosed offset from the middle (what :func:`check_centre` compares with). The geometry
    stored with it says ``centre_offset = 0`` (nobody has found the centre yet).

    Returns
    -------
    xarray.DataArray
        Sinogram stack ``(translation, angle, tth)``, ready for
        :func:`xrdwidgets.corrections.find_centre` and :func:`xrdwidgets.recon.reconstruct`.
    """
    from .data import sinogram_stack
    from .geometry import ScanGeometry
    sino, angles, _ = _exercise_sinogram(2000.0, centre_offset=_CENTRE_OFFSET, seed=NOISE_SEED + 1)
    n_channels = int(n_channels)
    if n_channels < 1:
        raise InputError(f"centre_exercise_scan: n_channels must be ≥ 1, found {n_channels}")
    tth = np.linspace(5.0, 6.0, n_channels)
    values = sino[:, :, None] * np.ones(n_channels)
    return sinogram_stack(values, angle=angles, spectral=tth, geometry=ScanGeometry(),
                          attrs={"exercise": "centre of rotation (xrdwidgets.course.check_centre)"})


def check_centre(offset_steps: float) -> CheckResult:
    """Exercise 2: is ``offset_steps`` the rotation-axis offset of :func:`centre_exercise_scan`?

    Parameters
    ----------
    offset_steps : float
        Axis position relative to the middle of the translations, in translation steps (the
        ``centre_offset`` convention of :class:`~xrdwidgets.geometry.ScanGeometry`).

    Returns
    -------
    CheckResult
        Right within :data:`CENTRE_TOLERANCE` (half a step); ``details``: ``error_steps``.
    """
    try:
        value = float(offset_steps)
    except (TypeError, ValueError):
        raise InputError(f"check_centre: offset_steps must be a number of steps, found {offset_steps!r}") from None
    if not np.isfinite(value):
        raise InputError(f"check_centre: offset_steps must be finite, found {offset_steps!r}")
    err = value - _CENTRE_OFFSET
    ok = abs(err) <= CENTRE_TOLERANCE
    if ok:
        msg = (f"{value:+.2f} steps is within {CENTRE_TOLERANCE:g} step of the axis: the reconstruction "
               f"has sharp edges and no arcs.")
    else:
        side = "too low" if err < 0 else "too high"
        msg = (f"{value:+.2f} steps is {side} by more than {CENTRE_TOLERANCE:g} step. A wrong centre turns "
               f"points into arcs; reconstruct at a few offsets (corrections.centre_gallery) or use "
               f"corrections.find_centre.")
    return CheckResult("centre of rotation", ok, msg, {"offset_steps": value, "error_steps": err})


# ----------------------------------------------------------------------------- exercise 3
def check_scan_dose(dose: float) -> CheckResult:
    """Exercise 3: is ``dose`` the lowest dose (within a factor 2) for 30 dB with the cosine filter?

    Right when FBP (``"cosine"``) of :func:`dose_exercise_data` reaches :data:`TARGET_PSNR_DB`
    at ``dose`` but not at ``dose / 2``: enough, and not twice more than needed (dose damages
    samples and costs beam time).

    Parameters
    ----------
    dose : float
        Expected counts at the brightest point of the sinogram (> 0).

    Returns
    -------
    CheckResult
        ``details``: ``psnr_db`` at ``dose`` and ``psnr_half_db`` at ``dose / 2``.
    """
    dose = _positive("dose", dose)
    at = reconstruction_psnr(*dose_exercise_data(dose), filter="cosine")
    half = reconstruction_psnr(*dose_exercise_data(dose / 2), filter="cosine")
    details = {"dose": dose, "psnr_db": at, "psnr_half_db": half}
    if at < TARGET_PSNR_DB:
        return CheckResult("dose", False, f"at {dose:g} counts FBP gives {at:.2f} dB (< {TARGET_PSNR_DB:g} dB): "
                           f"not enough photons; raise the dose.", details)
    if half >= TARGET_PSNR_DB:
        return CheckResult("dose", False, f"{dose:g} counts give {at:.2f} dB, but half of it still gives "
                           f"{half:.2f} dB: you could measure with less than half the dose.", details)
    return CheckResult("dose", True, f"{dose:g} counts give {at:.2f} dB and half of it {half:.2f} dB: the "
                       f"dose is enough and less than twice the lowest that works. Near the target the PSNR grows "
                       f"slowly with the dose: the angular sampling limits it too.", details)


# ----------------------------------------------------------------------------- exercise 4
def interlaced_sequence(n_angles: int, n_subsets: int) -> np.ndarray:
    """Angle indices in the order an interlaced scan measures them.

    Subset ``m`` (``m = 0 … k−1``) holds the angle indices ``m, m + k, m + 2k, …``; the subsets
    are measured one after the other, each covering the whole 0–180° range coarsely. Same order
    as :func:`xrdwidgets.sim.scan.acquisition_order` (``scan_order="interlaced"``).

    Returns
    -------
    numpy.ndarray of int64, shape (n_angles,)
    """
    from .sim.scan import acquisition_order
    _, line = acquisition_order(1, n_angles, "interlaced", n_subsets=n_subsets)
    return np.argsort(line).astype(np.int64)


def check_interlaced_sequence(sequence, n_angles: int = 12, n_subsets: int = 3) -> CheckResult:
    """Exercise 4: is ``sequence`` the measuring order of an interlaced scan?

    Parameters
    ----------
    sequence : sequence of int
        Angle indices (0 … ``n_angles`` − 1) in the order they are measured.
    n_angles, n_subsets : int
        The scan (default 12 angles in 3 interlaced subsets).

    Returns
    -------
    CheckResult
        ``details``: ``first_wrong`` (position of the first difference, or ``None``).
    """
    want = interlaced_sequence(n_angles, n_subsets)
    try:
        got = np.asarray(list(sequence), dtype=np.int64).ravel()
    except (TypeError, ValueError):
        raise InputError(f"check_interlaced_sequence: sequence must be integers, found {sequence!r}") from None
    if got.size != want.size:
        return CheckResult("interlaced order", False, f"{n_angles} angles are measured, your sequence has "
                           f"{got.size} entries.", {"first_wrong": None})
    wrong = np.flatnonzero(got != want)
    if wrong.size == 0:
        return CheckResult("interlaced order", True, f"right: {n_subsets} subsets of every {n_subsets}-th angle, "
                           f"each spanning 0–180°, so any early part of the scan can already be "
                           f"reconstructed (coarsely).", {"first_wrong": None})
    i = int(wrong[0])
    return CheckResult("interlaced order", False, f"position {i} should be angle index {want[i]}, found "
                       f"{got[i]}. Subset m holds the indices m, m + {n_subsets}, m + {2 * n_subsets}, …",
                       {"first_wrong": i})
