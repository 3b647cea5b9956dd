"""xrdwidgets: X-ray diffraction computed tomography (XRD-CT) in Jupyter.

The core (``data``, ``geometry``, ``io``, ``sim``, ``ops``, ``recon``) imports without
ipywidgets, plotly or voila.
"""
from __future__ import annotations

import logging

from ._version import __version__
from . import accessor as _accessor  # noqa: F401  (registers .xrd)
from .geometry import ScanGeometry

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "demo", "integrate", "ScanGeometry"]


def demo(*args, **kwargs):
    """Deterministic multi-phase XRD-CT demo dataset; see :func:`xrdwidgets.sim.demo.demo`."""
    from .sim.demo import demo as _demo

    return _demo(*args, **kwargs)


def __getattr__(name):
    # ``xw.integrate`` is the subpackage xrdwidgets.integrate, imported on first use; it is
    # callable: ``xw.integrate(raw, poni, ...)`` runs :func:`xrdwidgets.integrate.integrate`.
    if name == "integrate":
        import importlib

        return importlib.import_module(".integrate", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
