"""Detector calibration with pyFAI: PONI files, geometry, and the correction images.

A PONI file (pyFAI's calibration format) gives the detector, its position and orientation, and
the wavelength. :func:`load_poni` turns it into a pyFAI ``AzimuthalIntegrator``;
:func:`scan_geometry` turns that into our :class:`~xrdwidgets.geometry.ScanGeometry`
(energy, sample–detector distance, pixel size). Masks, darks and flats are read with fabio (EDF,
TIFF, CBF, …), NumPy (``.npy``) or h5py (``file.h5::/path/to/dataset``) by
:func:`load_image`; every image is checked against the detector shape before any frame is read.

Units: pyFAI works in metres and radians; this module hands out mm, degrees, keV and Å.
"""
from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np

from ..conversions import HC_KEV_ANGSTROM
from ..data import DataError
from ..geometry import ScanGeometry

log = logging.getLogger(__name__)

__all__ = ["CalibrationError", "load_poni", "make_integrator", "write_poni", "scan_geometry",
           "load_image", "check_shape", "file_sha256"]


class CalibrationError(DataError):
    """A PONI, mask, dark or flat does not fit the frames; the message names file and values."""


def file_sha256(path, block: int = 4 * 2**20) -> str:
    """SHA-256 hex digest of a file, read in blocks (read-only)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def make_integrator(*, distance_mm: float, pixel_size_mm: float, shape, wavelength_A: float,
                    poni_px=None, rot=(0.0, 0.0, 0.0)):
    """A pyFAI ``AzimuthalIntegrator`` for a flat detector of square pixels.

    Parameters
    ----------
    distance_mm : float
        Sample (rotation axis) to detector distance along the detector normal, mm.
    pixel_size_mm : float
        Pixel size, mm (square pixels).
    shape : (ny, nx)
        Detector shape in pixels (rows, columns).
    wavelength_A : float
        Wavelength in Å.
    poni_px : (row, column), optional
        Point of normal incidence in pixel coordinates (pixel corners at integers, pyFAI's
        convention); default: the detector centre ``(ny / 2, nx / 2)``.
    rot : (rot1, rot2, rot3)
        Detector rotations in radians (pyFAI's).
    """
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    ny, nx = (int(v) for v in shape)
    p = float(pixel_size_mm) * 1e-3
    det = Detector(pixel1=p, pixel2=p, max_shape=(ny, nx))
    r, c = poni_px if poni_px is not None else (ny / 2.0, nx / 2.0)
    return AzimuthalIntegrator(dist=float(distance_mm) * 1e-3, poni1=float(r) * p, poni2=float(c) * p,
                               rot1=rot[0], rot2=rot[1], rot3=rot[2], detector=det,
                               wavelength=float(wavelength_A) * 1e-10)


def write_poni(ai, path) -> Path:
    """Write the integrator's geometry as a PONI file (pyFAI's own writer); returns the path."""
    path = Path(path)
    if path.exists():
        path.unlink()   # pyFAI appends to an existing PONI file
    ai.write(str(path))
    return path


def load_poni(poni, *, shape=None):
    """The pyFAI integrator of a PONI file (or a pyFAI integrator, passed through).

    Parameters
    ----------
    poni : str, path-like or pyFAI integrator
    shape : (ny, nx), optional
        Frame shape; checked against the detector (:func:`check_shape`).

    Raises
    ------
    FileNotFoundError
        The PONI file does not exist.
    CalibrationError
        The file is not a PONI file, has no wavelength, or its detector does not fit ``shape``.
    """
    if hasattr(poni, "integrate1d_ng"):
        ai = poni
        name = "integrator"
    else:
        import pyFAI

        path = Path(poni)
        name = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"PONI file {path}: not found")
        try:
            ai = pyFAI.load(str(path))
        except Exception as exc:  # pyFAI raises many kinds on a bad file
            raise CalibrationError(f"PONI file {path}: cannot be read by pyFAI ({type(exc).__name__}: "
                                   f"{exc})") from exc
    if not ai.wavelength:
        raise CalibrationError(f"PONI {name}: no wavelength; expected a 'Wavelength:' line (m)")
    if shape is not None:
        check_shape(ai, shape, where=name)
    return ai


def check_shape(ai, shape, *, where="PONI"):
    """Check that the frames' ``(ny, nx)`` fit the integrator's detector; set it if unknown."""
    shape = tuple(int(v) for v in shape)
    det = ai.detector
    if det.shape is None or det.max_shape is None:
        det.max_shape = shape
        det.shape = shape
        return
    if tuple(det.shape) != shape:
        raise CalibrationError(f"{where}: detector {det.name!r} has shape {tuple(det.shape)} "
                               f"(rows, columns); the frames have shape {shape}")


def scan_geometry(ai, **fields) -> ScanGeometry:
    """Our :class:`ScanGeometry` from a pyFAI integrator: energy, distance and pixel size.

    ``distance_mm`` is pyFAI's ``dist`` (sample to detector along its normal) in mm; extra
    keyword arguments (``translation_step_mm``, ``angle_range_deg``, …) are passed on.
    """
    lam_A = ai.wavelength * 1e10
    return ScanGeometry(energy_keV=HC_KEV_ANGSTROM / lam_A, distance_mm=ai.dist * 1e3,
                        pixel_size_mm=ai.detector.pixel1 * 1e3, **fields)


def _split_h5(spec: str):
    if "::" in spec:
        f, d = spec.split("::", 1)
        return Path(f), d
    return Path(spec), None


def load_image(spec, what: str, shape) -> np.ndarray:
    """Read a mask, dark or flat image and check its shape.

    Parameters
    ----------
    spec : str, path-like or array
        An array; a ``.npy`` file; ``file.h5::/dataset``; or any image fabio reads (EDF, TIFF,
        CBF, …). Files are opened read-only.
    what : str
        ``"mask"``, ``"dark"`` or ``"flat"`` (named in errors).
    shape : (ny, nx)
        Expected shape (the frames').

    Returns
    -------
    numpy.ndarray
        ``bool`` for a mask (True = pixel excluded, pyFAI's convention), ``float32`` otherwise.
    """
    shape = tuple(int(v) for v in shape)
    if isinstance(spec, np.ndarray):
        arr, where = spec, f"{what} array"
    else:
        path, dset = _split_h5(str(spec))
        where = f"{what} file {path}" + (f"::{dset}" if dset else "")
        if not path.is_file():
            raise FileNotFoundError(f"{where}: not found")
        try:
            if dset is not None:
                import h5py

                with h5py.File(path, "r") as f:
                    if dset not in f:
                        raise CalibrationError(f"{where}: no dataset {dset!r} in {path}")
                    arr = f[dset][()]
            elif path.suffix.lower() == ".npy":
                arr = np.load(path, allow_pickle=False)
            else:
                import fabio

                with fabio.open(str(path)) as img:
                    arr = np.asarray(img.data)
        except CalibrationError:
            raise
        except Exception as exc:
            raise CalibrationError(f"{where}: cannot be read ({type(exc).__name__}: {exc})") from exc
    arr = np.asarray(arr)
    if arr.shape != shape:
        raise CalibrationError(f"{where}: expected shape {shape} (the frames'), found {arr.shape}")
    if what == "mask":
        return arr.astype(bool)
    out = arr.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise CalibrationError(f"{where}: holds non-finite values")
    if what == "flat" and np.any(out <= 0):
        log.warning("%s: %d pixels <= 0", where, int(np.sum(out <= 0)))
    return out


def ring_radius_px(ai, tth_deg) -> float:
    """Approximate ring radius in pixels of 2θ for an untilted detector (for overlays)."""
    return ai.dist * math.tan(math.radians(tth_deg)) / ai.detector.pixel1
