"""Reconstruction algorithms: generators of :class:`Progress` events over the shared operators.

Each method registers a :class:`MethodSpec` (:mod:`~xrdwidgets.recon.registry`): name, label,
parameters (defaults from the signature), presets; :func:`methods` lists them.
``reconstruct(stack, method=...)`` runs any of them to the end; ``iterate(stack, method=...)``
gives the generator (for progress bars, widgets, jobs and dask workers).
"""
from ..base.progress import Progress, run_to_end
from .cgls import cgls, iterate_cgls
from .fbp import fbp, fbp_array, iterate_fbp
from .iterative import METHODS, iterate, reconstruct
from .registry import MethodSpec, ParamSpec, get_method, methods
from .noise2inverse import iterate_noise2inverse, noise2inverse
from .parallaxnet import iterate_parallaxnet, parallaxnet
from .sd2i import iterate_sd2i, sd2i
from .sirt import iterate_sirt, sirt
from .tv import iterate_tv, tv

__all__ = ["Progress", "run_to_end", "METHODS", "MethodSpec", "ParamSpec", "get_method", "methods", "iterate", "reconstruct", "fbp", "fbp_array",
           "iterate_fbp", "sirt", "iterate_sirt", "cgls", "iterate_cgls", "tv", "iterate_tv",
           "sd2i", "iterate_sd2i", "parallaxnet", "iterate_parallaxnet",
           "noise2inverse", "iterate_noise2inverse"]
