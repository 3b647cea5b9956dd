"""Iterative reconstruction (SIRT, CGLS, TV) and one entry point for every method.

The algorithms live in :mod:`~xrdwidgets.recon.sirt`, :mod:`~xrdwidgets.recon.cgls` and
:mod:`~xrdwidgets.recon.tv`, each written once as a bare-array generator over a channel batch
(``iterate_<method>_array(sino, op, n_iter, ...)``) and wrapped for sinogram stacks by the shared
driver :mod:`~xrdwidgets.recon.driver` (``iterate_<method>(stack, ...)`` / ``<method>(stack, ...)``).

:func:`reconstruct` / :func:`iterate` dispatch by name to these and to FBP::

    vol = reconstruct(stack, method="tv", n_iter=300, nonneg=True)
    for ev in iterate(stack, method="sirt", n_iter=50):   # a progress bar, a widget, a dask task
        ...

Every method takes the common keywords ``batch``, ``n``, ``circle``, ``centre_offset`` and
``device``; the others are the method's own (see its ``iterate_*`` function).
"""
from __future__ import annotations

import inspect
import logging

from ..base.errors import InputError
from ..base.progress import run_to_end
from .registry import get_method, methods
from .cgls import cgls, cgls_array, iterate_cgls, iterate_cgls_array
from .fbp import fbp, fbp_array, iterate_fbp
from .noise2inverse import iterate_noise2inverse, noise2inverse
from .parallaxnet import iterate_parallaxnet, parallaxnet
from .sd2i import iterate_sd2i, iterate_sd2i_array, sd2i, sd2i_array
from .sirt import iterate_sirt, iterate_sirt_array, sirt, sirt_array
from .tv import LAM_REL, iterate_tv, iterate_tv_array, tv, tv_array

log = logging.getLogger(__name__)

__all__ = [
    "METHODS", "iterate", "reconstruct",
    "iterate_sirt_array", "sirt_array", "iterate_sirt", "sirt",
    "iterate_cgls_array", "cgls_array", "iterate_cgls", "cgls",
    "iterate_tv_array", "tv_array", "iterate_tv", "tv", "LAM_REL",
    "fbp", "fbp_array", "iterate_fbp",
    "iterate_sd2i_array", "sd2i_array", "iterate_sd2i", "sd2i", "iterate_parallaxnet", "parallaxnet",
    "iterate_noise2inverse", "noise2inverse",
]

#: Stack-level generators by method name (from the registry, :mod:`xrdwidgets.recon.registry`).
METHODS = {name: spec.iterate for name, spec in methods().items()}


def iterate(stack, method: str | None = None, /, *, client=None, store=None, **kwargs):
    """The :class:`~xrdwidgets.base.progress.Progress` generator of ``method`` on ``stack``.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack ``(translation, angle, spectral)`` (any dim order).
    method : str
        A registered method (case-insensitive): ``fbp`` (default), ``sirt``, ``cgls``, ``tv``,
        ``sd2i``, ``parallaxnet``, ``noise2inverse`` (:func:`~xrdwidgets.recon.registry.methods`).
        Given by position, a keyword ``method=`` goes to the method itself (Noise2Inverse's
        section reconstruction); given by keyword, it names the method.
    **kwargs
        Passed to ``iterate_<method>``; an unknown keyword raises a ``ValueError`` that lists the
        accepted ones. ``checkpoint=`` (a dict from a job's ``checkpoint.pt``) resumes a method
        that accepts it (the stack methods do, see :mod:`xrdwidgets.recon.driver`);
        ``checkpoint=None`` is accepted by every method.
    client : distributed.Client, optional
        Run the method's channel batches on this dask cluster instead of here
        (:func:`xrdwidgets.distributed.iterate_distributed`); needs ``store``.
    store : path, optional
        With ``client``: the zarr store the batches are written to (calling again with the same
        store resumes the run).

    Returns
    -------
    generator
        Yields ``Progress``; returns the volume DataArray ``(y, x, spectral)``.

    Notes
    -----
    ``functools.partial(iterate, stack, "sirt", n_iter=50)`` is a *resumable* job source: a
    :class:`~xrdwidgets.jobs.Job` with ``resume=True`` calls it with ``checkpoint=``.
    """
    if method is None:  # iterate(stack, method="tv", ...) as well as iterate(stack, "tv", ...)
        method = kwargs.pop("method", "fbp")
    spec = get_method(method)
    if client is not None or store is not None:
        if client is None or store is None:
            raise InputError("reconstruct: a cluster run needs both client= (a distributed.Client) and store= "
                             "(the zarr store of its results)")
        if kwargs.get("checkpoint") is not None:
            raise InputError("reconstruct: a cluster run resumes from its store, not from checkpoint=")
        kwargs.pop("checkpoint", None)
        from .. import distributed  # the execution layer; imported only for a cluster run

        return distributed.iterate_distributed(stack, spec.name, client=client, store=store, **kwargs)
    key, fn = spec.name, spec.iterate
    accepted = [p for p, v in inspect.signature(fn).parameters.items() if v.kind == v.KEYWORD_ONLY]
    if "checkpoint" in kwargs and "checkpoint" not in accepted:
        if kwargs["checkpoint"] is not None:
            raise InputError(f"reconstruct: method {key!r} cannot resume from a checkpoint")
        kwargs = {k: v for k, v in kwargs.items() if k != "checkpoint"}
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InputError(f"reconstruct: method {key!r} does not take {unknown}; it accepts {accepted}")
    return fn(stack, **kwargs)


def reconstruct(stack, method: str | None = None, /, *, callback=None, **kwargs):
    """Reconstruct a sinogram stack with ``method``, run to the end.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (any dim order).
    method : str
        A registered method (see :func:`iterate`).
    callback : callable, optional
        Called with every :class:`~xrdwidgets.base.progress.Progress` event.
    **kwargs
        The method's keywords, and ``client=``/``store=`` for a run on a dask cluster (see
        :func:`iterate`).

    Returns
    -------
    xarray.DataArray
        Volume ``(y, x, spectral)`` (leading ``time``/``z`` kept) with coords, geometry and
        provenance.
    """
    if method is None:
        method = kwargs.pop("method", "fbp")
    return run_to_end(iterate(stack, method, **kwargs), callback)
