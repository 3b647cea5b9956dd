"""ipywidgets dashboards: thin views over datasets, jobs and the public functions.

Nothing in the core imports this package. Every view keeps references to xarray objects and
calls the same public functions a notebook user calls; long work runs in :mod:`xrdwidgets.jobs`.
"""
from .explorer import Explorer
from .sinogram_view import SinogramView
from .state import AppState

__all__ = ["AppState", "Explorer", "SinogramView"]
