"""SIRT (simultaneous iterative reconstruction technique), batched over channels.

The update (Gregor & Benson 2008; ASTRA's ``SIRT``) is::

    x ← x + ω · C Aᵀ R (b − A x),   R = 1 / (A 1)  (row sums),  C = 1 / (Aᵀ 1)  (column sums)

a gradient step on ``½‖A x − b‖²_R`` in the metric ``C⁻¹``; it converges for ``0 < ω < 2`` and
the ``R``-weighted residual decreases monotonically. With ``nonneg=True`` the iterate is clipped
at zero after every step (projected SIRT). Rays that miss the image support (zero row sum) and
pixels outside it (zero column sum) get zero weight.

Memory: one batch of ``C`` channels holds about ``4·C·(3·n_t·n_a + 3·n²)`` bytes besides the
projector's sparse matrix.
"""
from __future__ import annotations

import logging

import torch

from ..ops.projector import ParallelProjector
from . import driver as _drv
from ..base.progress import Progress, run_to_end
from .registry import common_params, param, register

log = logging.getLogger(__name__)

__all__ = ["iterate_sirt_array", "sirt_array", "iterate_sirt", "sirt"]


def _inverse(t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return torch.where(t > eps, 1.0 / t.clamp_min(eps), torch.zeros_like(t))


def sirt_weights(op: ParallelProjector):
    """``(R, C)``: inverse row sums ``(n_t, n_a, 1)`` and inverse column sums ``(n, n, 1)`` of ``op``."""
    ones_img = torch.ones((op.n, op.n, 1), dtype=torch.float32, device=op.device)
    ones_sino = torch.ones((*op.range_shape, 1), dtype=torch.float32, device=op.device)
    return _inverse(op(ones_img)), _inverse(op.T(ones_sino))


#: ``kind`` of SIRT's within-batch checkpoints.
CHECKPOINT_KIND = "xrdwidgets.recon.sirt.batch"


def iterate_sirt_array(sino, op: ParallelProjector, n_iter: int = 100, *, relaxation: float = 1.0,
                       nonneg: bool = False, x0=None, preview_every: int = 10,
                       checkpoint_every: int = 0, checkpoint: dict | None = None):
    """SIRT of one sinogram or a channel batch, as a generator of :class:`Progress`.

    Parameters
    ----------
    sino : numpy.ndarray or torch.Tensor
        ``(translation, angle)`` or ``(translation, angle, C)``, matching ``op.range_shape``;
        values are line integrals in units of the pixel (translation step).
    op : ParallelProjector
        The projector of the scan geometry (its mask is the image support).
    n_iter : int
        Number of iterations (>= 1).
    relaxation : float
        Step ``ω`` in ``(0, 2)``.
    nonneg : bool
        Clip the image at zero after every step.
    x0 : array, optional
        Start image ``(y, x[, C])`` (default zeros).
    preview_every : int
        A preview (sum over channels, ``(y, x)``) every this many iterations and at the last.
    checkpoint_every : int
        Put the state (``{"kind", "iteration", "x"}``) in ``metrics["checkpoint"]`` every this
        many iterations (0: never).
    checkpoint : dict, optional
        Such a state: continue from it (``x0`` is then ignored); the result is the same as
        without interruption.

    Yields
    ------
    Progress
        One per iteration: ``loss`` = ``‖A x − b‖ / ‖b‖`` over the batch, ``metrics``:
        ``weighted_residual`` (``‖A x − b‖_R / ‖b‖_R``, the quantity SIRT decreases).

    Returns
    -------
    Image batch ``(y, x[, C])``, same type (numpy/torch) and rank as ``sino``.

    Notes
    -----
    The checks run when this function is called; iterations run as the generator is consumed.
    """
    caller = "iterate_sirt_array"
    n_iter = _drv.check_int(caller, "n_iter", n_iter)
    relaxation = _drv.check_float(caller, "relaxation", relaxation, minimum=0.0, strict=True, maximum=2.0)
    b, wrap = _drv.as_sino_batch(caller, sino, op)
    x = _drv.as_image_batch(caller, x0, op, b.shape[2])
    preview_every = _drv.check_int(caller, "preview_every", preview_every, minimum=0)
    checkpoint_every = _drv.check_int(caller, "checkpoint_every", checkpoint_every, minimum=0)
    k0 = 0
    if checkpoint is not None:
        k0, st = _drv.restore_state(caller, checkpoint, CHECKPOINT_KIND, n_iter,
                                    {"x": (x.shape, torch.float32)}, op.device)
        x = st["x"]
    return _sirt(b, op, x, n_iter, relaxation, bool(nonneg), preview_every, wrap, checkpoint_every, k0)


def _sirt(b, op, x, n_iter, omega, nonneg, preview_every, wrap, checkpoint_every=0, k0=0):
    R, Cw = sirt_weights(op)
    sqrtR = R.sqrt()
    b_norm = _drv.channel_norm(b)
    bw_norm = _drv.channel_norm(b * sqrtR)
    r = b - op(x)
    for k in range(k0 + 1, n_iter + 1):
        x = x + omega * Cw * op.T(R * r)
        if nonneg:
            x = x.clamp_min(0.0)
        r = b - op(x)
        metrics = {"weighted_residual": _drv.relative_residual(r * sqrtR, bw_norm)}
        if _drv.want_checkpoint(k, n_iter, checkpoint_every):
            metrics["checkpoint"] = {"kind": CHECKPOINT_KIND, "iteration": k, "x": x.detach().cpu()}
        yield Progress(
            iteration=k, total=n_iter, loss=_drv.relative_residual(r, b_norm), metrics=metrics,
            preview=_drv.preview_of(x) if _drv.want_preview(k, n_iter, preview_every) else None)
    return _drv.to_output(x, wrap)


def sirt_array(sino, op: ParallelProjector, n_iter: int = 100, **kwargs):
    """SIRT run to the end; see :func:`iterate_sirt_array`."""
    return run_to_end(iterate_sirt_array(sino, op, n_iter, **kwargs))


def iterate_sirt(stack, *, n_iter: int = 100, relaxation: float = 1.0, nonneg: bool = False,
                 preview_every: int = 10, batch: int = 64, n: int | None = None, circle: bool = True,
                 centre_offset: float | None = None, device=None, checkpoint: dict | None = None,
                 checkpoint_every: int = 0):
    """SIRT of a sinogram stack, streamed in channel batches, as a generator of :class:`Progress`.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (any dim order; angles in degrees, any set).
    n_iter, relaxation, nonneg, preview_every :
        See :func:`iterate_sirt_array`.
    batch : int
        Channels per batch (bounds the working memory).
    n : int, optional
        Image size (default: number of translations).
    circle : bool
        Restrict the image to the inscribed circle.
    centre_offset : float, optional
        Rotation-axis offset in steps (default: the stored geometry's, else 0).
    device : optional
        torch device (default CUDA when present).
    checkpoint : dict, optional
        Resume from a stack checkpoint (``metrics["checkpoint"]`` of the events, chunks
        accumulated; e.g. ``xrdwidgets.jobs.load_checkpoint(workdir)``): finished channel
        batches are taken from it. It must come from the same stack, method and parameters
        (``batch``, ``device`` and ``checkpoint_every`` may differ); see
        :mod:`xrdwidgets.recon.driver`.
    checkpoint_every : int
        Also checkpoint the running batch every this many iterations (0: only at the end of
        each batch); a resumed job continues that batch from there.

    Returns
    -------
    generator
        Yields one :class:`Progress` per iteration and batch (the last of each batch carries a
        checkpoint); returns the volume DataArray
        ``(y, x, spectral)`` with coords, geometry and provenance (see
        :func:`xrdwidgets.recon.driver.stream_stack`).
    """
    caller = "iterate_sirt"
    n_iter = _drv.check_int(caller, "n_iter", n_iter)
    relaxation = _drv.check_float(caller, "relaxation", relaxation, minimum=0.0, strict=True, maximum=2.0)
    preview_every = _drv.check_int(caller, "preview_every", preview_every, minimum=0)
    checkpoint_every = _drv.check_int(caller, "checkpoint_every", checkpoint_every, minimum=0)

    def solve(sino, op, channels, checkpoint=None):
        return iterate_sirt_array(sino, op, n_iter, relaxation=relaxation, nonneg=nonneg,
                                  preview_every=preview_every, checkpoint_every=checkpoint_every,
                                  checkpoint=checkpoint)

    return _drv.stream_stack(
        stack, solve, caller=caller, producer="xrdwidgets.recon.sirt",
        parameters={"n_iter": n_iter, "relaxation": relaxation, "nonneg": bool(nonneg)},
        batch=batch, n=n, circle=circle, centre_offset=centre_offset, device=device,
        checkpoint=checkpoint)


def sirt(stack, **kwargs):
    """SIRT of a sinogram stack, run to the end; see :func:`iterate_sirt`."""
    return run_to_end(iterate_sirt(stack, **kwargs))


register("sirt", iterate_sirt, label="SIRT", help="simultaneous iterative reconstruction (least squares)",
         params=[param("n_iter", label="iterations", help="number of iterations", minimum=1),
                 param("nonneg", label="non-negative", help="keep the image non-negative"),
                 param("relaxation", label="relaxation ω",
                       help="relaxation factor ω (0 < ω < 2)", minimum=0.01, maximum=1.99),
                 param("checkpoint_every", label="checkpoint every",
                       help="also checkpoint the running batch every this many iterations "
                            "(0: only finished batches)", minimum=0, advanced=True),
                 *common_params()],
         presets={"quick": {"n_iter": 50, "nonneg": True}})
