"""A single-peak phantom with known parameter maps: the test oracle of peak fitting.

Every pixel of the demo sample's shapes (:func:`xrdwidgets.sim.demo.demo_phase_maps`) holds one
pseudo-Voigt peak on a linear background, drawn with the simulator's own profile
(:func:`xrdwidgets.sim.patterns.pseudo_voigt`, independent code from the fitting model in
:mod:`xrdwidgets.analysis.peaks`):

* area 1.0 / 2.0 / 0.6 in the CeO2 / Ni / TiO2 regions (× the area fraction of each pixel);
* position 5.55° − 0.08°·r² (r = 1 at the image edge: a lattice expanding towards the rim);
* FWHM 0.05° → 0.11° from left to right (crystallites shrinking); η = 0.5;
* background ``0.3 + 0.1·t`` (t from −1 to 1 over the axis) inside the sample.
"""
from __future__ import annotations

import numpy as np

from .. import data as _data
from .demo import demo_phase_maps
from .patterns import pseudo_voigt

__all__ = ["peak_phantom"]


def peak_phantom(n: int, n_channels: int = 40, tth=(5.0, 6.0)):
    """Volume ``(y, x, tth)`` of one pseudo-Voigt peak + linear background per pixel, with its truth.

    Parameters
    ----------
    n : int
        Image size (pixels per side).
    n_channels : int
        Channels of the 2θ axis.
    tth : (float, float)
        First and last 2θ (deg).

    Returns
    -------
    volume : xarray.DataArray
        float32 ``(y, x, tth)``.
    truth : dict
        ``(y, x)`` maps named like :class:`~xrdwidgets.analysis.peaks.PeakModel`'s parameters:
        ``area_0`` (intensity·deg), ``position_0`` and ``fwhm_0`` (deg), ``eta_0``, ``bg_0``, ``bg_1``.
    body : numpy.ndarray
        ``(y, x)`` area fraction of the sample in each pixel.
    """
    maps = demo_phase_maps(n)
    body = maps["CeO2"] + maps["Ni"] + maps["TiO2"]
    area = 1.0 * maps["CeO2"] + 2.0 * maps["Ni"] + 0.6 * maps["TiO2"]
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) / (n / 2)
    pos = 5.55 - 0.08 * (xx ** 2 + yy ** 2)
    fwhm = 0.05 + 0.06 * (xx + 1) / 2
    t = np.linspace(*tth, n_channels)
    vol = area[..., None] * pseudo_voigt(t, pos[..., None], fwhm[..., None], 0.5)
    vol = vol + body[..., None] * (0.3 + 0.1 * np.linspace(-1, 1, n_channels))
    truth = {"area_0": area, "position_0": pos, "fwhm_0": fwhm, "eta_0": np.full((n, n), 0.5),
             "bg_0": 0.3 * body, "bg_1": 0.1 * body}
    return _data.volume(vol.astype(np.float32), spectral=t), truth, body
