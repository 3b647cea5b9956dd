"""From a channel window to suggested peaks: the ROI steps the App's ROI tabs run, as functions.

:func:`strongest_window` picks a channel window around the strongest peak of the mean pattern;
:func:`masked_pattern_peaks` chains :func:`~xrdwidgets.explore.roi.roi_image` →
:func:`~xrdwidgets.explore.roi.roi_mask` → :func:`~xrdwidgets.explore.roi.roi_pattern` →
:func:`~xrdwidgets.explore.roi.suggest_peaks` (window image, threshold mask, mean pattern of
the mask, its peaks).
"""
from __future__ import annotations

import numpy as np

from ..explore.roi import roi_image, roi_mask, roi_pattern, suggest_peaks

__all__ = ["strongest_window", "masked_pattern_peaks"]


def strongest_window(volume) -> tuple:
    """Half-open channel window ``(lo, hi)`` around the maximum of the mean pattern.

    Parameters
    ----------
    volume : xarray.DataArray
        ``(…, spectral)`` with the spectral axis last (e.g. ``(y, x, tth)``).

    Returns
    -------
    (int, int)
        Channel indices: the strongest channel ± ``max(2, n_channels // 25)`` (about ± 4 % of the
        axis), clipped to the axis.
    """
    n = volume.sizes[volume.dims[-1]]
    k = int(np.nanargmax(np.asarray(volume.mean(volume.dims[:-1]).values)))
    half = max(2, n // 25)
    return max(0, k - half), min(n, k + half + 1)


def masked_pattern_peaks(volume, channels, *, background: str = "none", edge_channels: int = 1,
                         fraction: float = 0.5, above: bool = True, relative_prominence: float = 0.05,
                         max_peaks: int = 8) -> dict:
    """ROI image of a channel window, a threshold mask on it, the mask's mean pattern and its peaks.

    Parameters
    ----------
    volume : xarray.DataArray
        ``(y, x, spectral)`` (spectral axis last).
    channels : (int, int)
        Half-open channel index window of the ROI image.
    background, edge_channels :
        Background subtraction of :func:`~xrdwidgets.explore.roi.roi_image`.
    fraction, above :
        Threshold of :func:`~xrdwidgets.explore.roi.roi_mask` (fraction of the image's robust
        range; keep the pixels above or below).
    relative_prominence, max_peaks :
        Of :func:`~xrdwidgets.explore.roi.suggest_peaks`.

    Returns
    -------
    dict
        ``image`` ``(y, x)``, ``mask`` ``(y, x)`` bool, ``pattern`` ``(spectral,)``, ``peaks``
        (positions in spectral units, a DataArray), ``heights`` (the pattern at the peaks, numpy).
    """
    lo, hi = channels
    img = roi_image(volume, lo, hi, by="index", background=background, edge_channels=edge_channels)
    mask = roi_mask(img, fraction=float(fraction), above=bool(above))
    pattern = roi_pattern(volume, mask)
    peaks = suggest_peaks(pattern, relative_prominence=float(relative_prominence), max_peaks=max_peaks)
    spec = volume.dims[-1]
    pos = np.asarray(peaks.values, dtype=float)
    heights = np.interp(pos, volume[spec].values, pattern.values) if pos.size else pos
    return {"image": img, "mask": mask, "pattern": pattern, "peaks": peaks, "heights": heights}
