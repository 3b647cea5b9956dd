"""CGLS (conjugate gradients on the normal equations ``AᵀA x = Aᵀb``), batched over channels.

Each channel runs its own CGLS (step lengths ``α``, ``β`` are per channel), all channels sharing
one sparse product per operator application. Without constraint this is textbook CGLS
(Hestenes–Stiefel; Björck 1996, alg. 7.4.1): the residual ``‖A x − b‖`` decreases monotonically
and, on noisy data, early stopping (``n_iter``) is the regulariser.

Non-negativity (``nonneg=True``) — what is done
    Clipping every CG iterate breaks the conjugacy that makes CGLS CGLS ("projected CGLS" is not
    CGLS, and restarting at every clip degrades it to projected steepest descent). We run
    *CGLS with periodic restarts on a free set*: plain CGLS iterations run on the pixels of a free
    set ``F``; every ``restart_every`` iterations, and at the last one, the image is clipped at
    zero, the residual recomputed exactly (one extra forward projection), ``F`` rebuilt as the
    pixels with ``x > 0`` or a negative gradient pointing inwards (``Aᵀr > 0``), and CG restarted
    from the projected steepest-descent direction. Between restarts it is exact CGLS on ``F``
    (iterates may dip below zero there; the returned image is always ``>= 0``). Measured on
    Shepp–Logan 256² (``radon`` data, 64 and 400 angles, 12/20/40 iterations): +1 to +6 dB over
    restarting at every clip; against plain "CGLS then clip" −2 dB at 12–20 iterations on 400
    angles, +1 to +2 dB at 40 iterations and on 64 angles (it semi-converges later), with a much
    better SSIM. ``restart_every`` = 5 was the best of 3, 5 and 10. The reported residual is that
    of the current iterate, so it can jump at a restart.

Memory: one batch of ``C`` channels holds about ``4·C·(3·n_t·n_a + 4·n²)`` bytes besides the
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

__all__ = ["iterate_cgls_array", "cgls_array", "iterate_cgls", "cgls"]


#: ``kind`` of CGLS's within-batch checkpoints.
CHECKPOINT_KIND = "xrdwidgets.recon.cgls.batch"


def iterate_cgls_array(sino, op: ParallelProjector, n_iter: int = 20, *, nonneg: bool = False,
                       restart_every: int = 5, x0=None, preview_every: int = 5,
                       checkpoint_every: int = 0, checkpoint: dict | None = None):
    """CGLS of one sinogram or a channel batch, as a generator of :class:`Progress`.

    Parameters
    ----------
    sino : numpy.ndarray or torch.Tensor
        ``(translation, angle)`` or ``(translation, angle, C)``, matching ``op.range_shape``.
    op : ParallelProjector
        The projector of the scan geometry (its mask is the image support).
    n_iter : int
        Number of iterations (>= 1); the regularisation parameter of CGLS.
    nonneg : bool
        Keep the image ``>= 0`` with CGLS restarts (see the module docstring).
    restart_every : int
        Iterations between the clip-and-restart steps of ``nonneg`` (>= 1).
    x0 : array, optional
        Start image ``(y, x[, C])`` (default zeros).
    preview_every : int
        A preview (sum over channels, ``(y, x)``) every this many iterations and at the last.
    checkpoint_every : int
        Put the state (``{"kind", "iteration", "x", "r", "p", "gamma"[, "free"]}``) in
        ``metrics["checkpoint"]`` every this many iterations (0: never).
    checkpoint : dict, optional
        Such a state: continue from it (``x0`` is then ignored); the result is the same as
        without interruption.

    Yields
    ------
    Progress
        One per iteration: ``loss`` = ``‖A x − b‖ / ‖b‖`` over the batch; ``metrics``:
        ``restart`` (``nonneg`` only: whether this iteration clipped and restarted).

    Returns
    -------
    Image batch ``(y, x[, C])``, same type and rank as ``sino``.
    """
    caller = "iterate_cgls_array"
    n_iter = _drv.check_int(caller, "n_iter", n_iter)
    b, wrap = _drv.as_sino_batch(caller, sino, op)
    x = _drv.as_image_batch(caller, x0, op, b.shape[2])
    restart_every = _drv.check_int(caller, "restart_every", restart_every)
    preview_every = _drv.check_int(caller, "preview_every", preview_every, minimum=0)
    checkpoint_every = _drv.check_int(caller, "checkpoint_every", checkpoint_every, minimum=0)
    state = None
    if checkpoint is not None:
        C = b.shape[2]
        shapes = {"x": (x.shape, torch.float32), "r": (b.shape, torch.float32),
                  "p": (x.shape, torch.float32), "gamma": ((C,), torch.float64)}
        if nonneg:
            shapes["free"] = (x.shape, torch.bool)
        state = _drv.restore_state(caller, checkpoint, CHECKPOINT_KIND, n_iter, shapes, op.device)
    return _cgls(b, op, x, n_iter, bool(nonneg), restart_every, preview_every, wrap, checkpoint_every, state)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` per channel, 0 where ``den`` is 0 (float64 ``(C,)``)."""
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def _cgls(b, op, x, n_iter, nonneg, restart_every, preview_every, wrap, checkpoint_every=0, state=None):
    f32 = torch.float32
    b_norm = _drv.channel_norm(b)
    if state is not None:
        k0, t = state
        x, r, p, gamma, free = t["x"], t["r"], t["p"], t["gamma"], t.get("free")
    else:
        k0 = 0
        if nonneg:
            x = x.clamp_min(0.0)
        r = b - op(x)
        s = op.T(r)
        free = ((x > 0) | (s > 0)) if nonneg else None
        if nonneg:
            s = s * free
        p = s.clone()
        gamma = _drv.channel_dot(s, s)
    for k in range(k0 + 1, n_iter + 1):
        q = op(p)
        alpha = _ratio(gamma, _drv.channel_dot(q, q)).to(f32)
        x = x + alpha * p
        r = r - alpha * q
        restart = nonneg and (k % restart_every == 0 or k == n_iter)
        if restart:
            x = x.clamp_min(0.0)
            r = b - op(x)
        s = op.T(r)
        if restart:
            free = (x > 0) | (s > 0)
        if nonneg:
            s = s * free
        gamma_new = _drv.channel_dot(s, s)
        beta = torch.zeros_like(gamma_new) if restart else _ratio(gamma_new, gamma)
        p = s + beta.to(f32) * p
        gamma = gamma_new
        metrics = {"restart": restart} if nonneg else {}
        if _drv.want_checkpoint(k, n_iter, checkpoint_every):
            ck = {"kind": CHECKPOINT_KIND, "iteration": k, "x": x.detach().cpu(), "r": r.detach().cpu(),
                  "p": p.detach().cpu(), "gamma": gamma.detach().cpu()}
            if nonneg:
                ck["free"] = free.detach().cpu()
            metrics["checkpoint"] = ck
        yield Progress(iteration=k, total=n_iter, loss=_drv.relative_residual(r, b_norm), metrics=metrics,
                       preview=_drv.preview_of(x) if _drv.want_preview(k, n_iter, preview_every) else None)
    return _drv.to_output(x, wrap)


def cgls_array(sino, op: ParallelProjector, n_iter: int = 20, **kwargs):
    """CGLS run to the end; see :func:`iterate_cgls_array`."""
    return run_to_end(iterate_cgls_array(sino, op, n_iter, **kwargs))


def iterate_cgls(stack, *, n_iter: int = 20, nonneg: bool = False, restart_every: int = 5,
                 preview_every: int = 5,
                 batch: int = 64, n: int | None = None, circle: bool = True,
                 centre_offset: float | None = None, device=None, checkpoint: dict | None = None,
                 checkpoint_every: int = 0):
    """CGLS of a sinogram stack, streamed in channel batches, as a generator of :class:`Progress`.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (any dim order; angles in degrees, any set).
    n_iter, nonneg, restart_every, preview_every :
        See :func:`iterate_cgls_array`.
    batch, n, circle, centre_offset, device, checkpoint, checkpoint_every :
        As in :func:`xrdwidgets.recon.sirt.iterate_sirt`.

    Returns
    -------
    generator
        Yields one :class:`Progress` per iteration and batch (the last of each batch carries a
        checkpoint); returns the volume DataArray ``(y, x, spectral)``.
    """
    caller = "iterate_cgls"
    n_iter = _drv.check_int(caller, "n_iter", n_iter)
    restart_every = _drv.check_int(caller, "restart_every", restart_every)
    preview_every = _drv.check_int(caller, "preview_every", preview_every, minimum=0)
    checkpoint_every = _drv.check_int(caller, "checkpoint_every", checkpoint_every, minimum=0)

    def solve(sino, op, channels, checkpoint=None):
        return iterate_cgls_array(sino, op, n_iter, nonneg=nonneg, restart_every=restart_every,
                                  preview_every=preview_every, checkpoint_every=checkpoint_every,
                                  checkpoint=checkpoint)

    return _drv.stream_stack(
        stack, solve, caller=caller, producer="xrdwidgets.recon.cgls",
        parameters={"n_iter": n_iter, "nonneg": bool(nonneg), "restart_every": restart_every},
        batch=batch, n=n, circle=circle, centre_offset=centre_offset, device=device,
        checkpoint=checkpoint)


def cgls(stack, **kwargs):
    """CGLS of a sinogram stack, run to the end; see :func:`iterate_cgls`."""
    return run_to_end(iterate_cgls(stack, **kwargs))


register("cgls", iterate_cgls, label="CGLS",
         help="conjugate-gradient least squares (converges fast; stop early on noisy data)",
         params=[param("n_iter", label="iterations", help="number of iterations", minimum=1),
                 param("nonneg", label="non-negative",
                       help="keep the image non-negative (projected, restarted CGLS)"),
                 param("restart_every", label="restart every",
                       help="restart period of the projected CGLS (nonneg)", minimum=1,
                       advanced=True),
                 param("checkpoint_every", label="checkpoint every",
                       help="also checkpoint the running batch every this many iterations "
                            "(0: only finished batches)", minimum=0, advanced=True),
                 *common_params()],
         presets={"quick": {"nonneg": True}})
