"""What every batch solver of the stack runner shares: its input and output arrays, per-channel
norms, and when to preview or checkpoint within a batch.

A method's ``solve(sino, op, channels)`` (see :mod:`xrdwidgets.recon.driver`) checks its sinogram
batch with :func:`as_sino_batch` (float32 ``(translation, angle, C)`` on ``op.device``), starts
from :func:`as_image_batch`, gives the image ``(y, x, C)`` back in the caller's type with
:func:`to_output`, and saves or restores its own state within a batch with
:func:`want_checkpoint` / :func:`restore_state`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..base.errors import InputError, InputTypeError, StateError
from ..ops.projector import ParallelProjector

__all__ = ["as_sino_batch", "as_image_batch", "to_output", "want_checkpoint", "restore_state",
           "want_preview", "preview_of", "support_of", "channel_norm", "channel_dot", "relative_residual"]


@dataclass(frozen=True)
class _Wrap:
    """How to give the result back: numpy or torch, with or without the channel axis."""

    numpy: bool
    squeeze: bool


def as_sino_batch(caller: str, sino, op: ParallelProjector):
    """Check a sinogram (batch) against ``op`` and return it as a float32 tensor ``(n_t, n_a, C)``.

    Parameters
    ----------
    sino : numpy.ndarray or torch.Tensor
        ``(translation, angle)`` or ``(translation, angle, C)``.
    op : ParallelProjector
        The projector it must fit (``op.range_shape``).

    Returns
    -------
    tensor : torch.Tensor
        float32 ``(n_t, n_a, C)`` on ``op.device`` (a view when already so).
    wrap : _Wrap
        Pass to :func:`to_output` to return an image of the caller's type and rank.
    """
    if not isinstance(op, ParallelProjector):
        raise InputError(f"{caller}: op must be a ParallelProjector, found {type(op).__name__}")
    is_np = not isinstance(sino, torch.Tensor)
    if is_np:
        arr = np.asarray(sino)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise InputError(f"{caller}: sino must be a real numeric array, found dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    else:
        t = sino.detach()
    if t.dim() not in (2, 3):
        raise InputError(f"{caller}: sino must be (translation, angle) or (translation, angle, C), "
                         f"found shape {tuple(t.shape)}")
    if tuple(t.shape[:2]) != tuple(op.range_shape):
        raise InputError(
            f"{caller}: sino has (translation, angle) = {tuple(t.shape[:2])} but the projector "
            f"expects {tuple(op.range_shape)} (n_translations={op.n_translations}, "
            f"{op.angles_deg.size} angles)")
    squeeze = t.dim() == 2
    if squeeze:
        t = t[..., None]
    if t.shape[2] < 1:
        raise InputError(f"{caller}: sino has no channels (shape {tuple(t.shape)})")
    t = t.to(device=op.device, dtype=torch.float32)
    if not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise InputError(f"{caller}: sino must be finite, found {n_bad} NaN/inf values of {t.numel()}")
    return t, _Wrap(numpy=is_np, squeeze=squeeze)


def as_image_batch(caller: str, x0, op: ParallelProjector, n_channels: int) -> torch.Tensor:
    """Initial image batch ``(n, n, C)`` float32 on ``op.device``: ``x0`` checked, or zeros."""
    shape = (op.n, op.n, n_channels)
    if x0 is None:
        return torch.zeros(shape, dtype=torch.float32, device=op.device)
    t = x0.detach() if isinstance(x0, torch.Tensor) else torch.from_numpy(np.asarray(x0, np.float32))
    if t.dim() == 2:
        t = t[..., None]
    if tuple(t.shape) != shape:
        raise InputError(f"{caller}: x0 must have shape {shape[:2]} or {shape}, found {tuple(t.shape)}")
    t = t.to(device=op.device, dtype=torch.float32).clone()
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{caller}: x0 must be finite")
    return t


def to_output(x: torch.Tensor, wrap: _Wrap):
    """The image batch ``x`` in the caller's type (numpy/torch) and rank."""
    if wrap.squeeze:
        x = x[..., 0]
    return x.cpu().numpy() if wrap.numpy else x


def want_checkpoint(k: int, n_iter: int, every) -> bool:
    """A within-batch checkpoint at every ``every``-th iteration but the last (0/None: never)."""
    return bool(every) and k % int(every) == 0 and k < n_iter


def restore_state(caller: str, checkpoint, kind: str, n_iter: int, shapes: dict, device):
    """Check a solver's own checkpoint (``{"kind", "iteration", name: tensor, ...}``) and load it.

    Parameters
    ----------
    caller : str
        Named in error messages.
    checkpoint : dict
        What the solver yielded in ``metrics["checkpoint"]``.
    kind : str
        The solver's checkpoint kind.
    n_iter : int
        Iterations of the run; the checkpoint's ``iteration`` must be below.
    shapes : dict
        ``{name: (shape, dtype)}`` of the tensors it must hold.
    device :
        Where to put them.

    Returns
    -------
    (int, dict)
        The iteration reached and ``{name: tensor}`` on ``device``.
    """
    if not isinstance(checkpoint, dict):
        raise InputTypeError(f"{caller}: checkpoint must be a dict or None, found {type(checkpoint).__name__}")
    if checkpoint.get("kind") != kind:
        raise StateError(f"{caller}: checkpoint is of kind {checkpoint.get('kind')!r}, expected {kind!r}")
    k = checkpoint.get("iteration")
    if not isinstance(k, (int, np.integer)) or not 0 <= k < n_iter:
        raise StateError(f"{caller}: checkpoint iteration must be an integer in [0, {n_iter}), found {k!r}")
    out = {}
    for name, (shape, dtype) in shapes.items():
        v = checkpoint.get(name)
        if v is None:
            raise StateError(f"{caller}: checkpoint has no {name!r}")
        t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
        if tuple(t.shape) != tuple(shape):
            raise StateError(f"{caller}: checkpoint {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        out[name] = t.to(device=device, dtype=dtype).clone()
    return int(k), out


def want_preview(k: int, n_iter: int, every) -> bool:
    """Preview at every ``every``-th iteration and at the last one (``every`` 0/None: last only)."""
    return k == n_iter or (bool(every) and k % int(every) == 0)


def preview_of(x: torch.Tensor) -> np.ndarray:
    """A ``(y, x)`` numpy preview of an image batch: the sum over channels (as FBP's)."""
    return x.sum(-1).detach().cpu().numpy()


def support_of(op: ParallelProjector) -> torch.Tensor:
    """Float ``(n, n, 1)`` tensor: 1 inside the projector's mask (everywhere without one)."""
    if op.mask is None:
        return torch.ones((op.n, op.n, 1), dtype=torch.float32, device=op.device)
    return torch.as_tensor(op.mask, dtype=torch.float32, device=op.device)[..., None]


def channel_norm(t: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each channel of a batch ``(..., C)`` → ``(C,)`` (float64 accumulation)."""
    return torch.linalg.vector_norm(t.reshape(-1, t.shape[-1]).double(), dim=0)


def channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inner product of each channel of two batches ``(..., C)`` → ``(C,)`` (float64)."""
    return (a.reshape(-1, a.shape[-1]).double() * b.reshape(-1, b.shape[-1]).double()).sum(0)


def relative_residual(r: torch.Tensor, b_norm: torch.Tensor) -> float:
    """``‖r‖ / ‖b‖`` over the whole batch (all channels together), a float."""
    num = float(torch.sqrt((channel_norm(r) ** 2).sum()))
    den = float(torch.sqrt((b_norm ** 2).sum()))
    return num / den if den > 0 else num
