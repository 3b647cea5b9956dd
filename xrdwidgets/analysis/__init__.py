"""Analysis of reconstructed volumes: ROI tools, peak models, batch peak fitting, unmixing.

Submodules are imported on first use, so that ``import xrdwidgets.analysis`` stays light (no
torch, no scikit-learn until needed); their public names are available here too:

- :mod:`~xrdwidgets.analysis.peaks` — profiles, backgrounds, :class:`PeakModel`
- :mod:`~xrdwidgets.explore.roi` — ROI images (with background), masks, ROI patterns, peak suggestions;
  :mod:`~xrdwidgets.analysis.roi_peaks` chains them (window → mask → mean pattern → peaks)
- :mod:`~xrdwidgets.analysis.fitting` — per-pixel peak fitting of whole volumes (batched torch LM) and a
  scipy reference (a package: solver, volume driver, bounds, reference, result maps)
- :mod:`~xrdwidgets.analysis.unmixing` — PCA, NMF, k-means (scikit-learn, extra ``analysis``)
- :mod:`~xrdwidgets.analysis.peakfitcnn`, :mod:`~xrdwidgets.analysis.dlsr` — self-supervised fitting
  of volumes and of sinograms (import the submodules); their network is in
  :mod:`~xrdwidgets.analysis.cnn`, their shared parts in :mod:`~xrdwidgets.analysis.selfsupervised`
"""
from __future__ import annotations

import importlib

_WHERE = {
    "PeakModel": "peaks", "gaussian": "peaks", "lorentzian": "peaks", "pseudo_voigt": "peaks",
    "background": "peaks",
    "roi_image": ".explore.roi", "roi_mask": ".explore.roi", "roi_pattern": ".explore.roi",
    "suggest_peaks": ".explore.roi",
    "iterate_fit": "fitting", "fit_volume": "fitting", "fit_volume_scipy": "fitting",
    "fit_patterns": "fitting",
    "pca": "unmixing", "nmf": "unmixing", "kmeans": "unmixing", "match_components": "unmixing",
}

__all__ = list(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        mod = importlib.import_module(f".{_WHERE[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
