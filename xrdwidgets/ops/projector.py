"""Parallel-beam (pencil-beam) projector in torch, batched over diffraction channels.

Geometry
--------
* Image: ``n × n`` pixels, array axes ``(y, x)``; pixel size = one translation step. The
  rotation axis sits at the image centre, index ``(n - 1) / 2`` on both axes.
* Projection position of pixel ``(r, c)`` at angle θ (degrees):
  ``t = (c - (n-1)/2)·cos θ - (r - (n-1)/2)·sin θ`` in steps. This is scikit-image's ``radon``
  orientation (its centre is ``n // 2``, the same for odd ``n``, half a pixel off for even ``n``).
* Translation ``i`` of ``n_t`` sits at ``i - (n_t - 1)/2 - centre_offset`` steps from the axis.
* Sinograms are ``(translation, angle)``; a channel batch is ``(translation, angle, C)`` and an
  image batch ``(y, x, C)`` — the channel axis last, so one sparse product serves all channels.

The operator is *pixel-driven*: each pixel's value is split linearly between the two nearest
translation bins (forward), and the adjoint interpolates linearly (the back-projection of FBP).
It is stored as a sparse CSR matrix with ``2·n²·n_angles`` entries and its transpose.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

log = logging.getLogger(__name__)

__all__ = ["ParallelProjector", "default_device", "circle_mask"]


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def circle_mask(n: int, *, radius: float | None = None) -> np.ndarray:
    """Boolean ``(n, n)`` mask of the pixels whose centres lie within ``radius`` of the centre.

    ``radius`` defaults to ``n / 2`` (the inscribed circle), in pixels.
    """
    c = (n - 1) / 2.0
    r = n / 2.0 if radius is None else float(radius)
    yy, xx = np.mgrid[:n, :n]
    return (yy - c) ** 2 + (xx - c) ** 2 <= r**2


def _system_matrix(n, angles_deg, n_t, centre_offset, mask):
    """CSR matrix ``(n_t·n_angles, n·n)`` of the pixel-driven linear projector, float32."""
    c = (n - 1) / 2.0
    rr, cc = np.nonzero(mask) if mask is not None else np.nonzero(np.ones((n, n), bool))
    pix = (rr * n + cc).astype(np.int64)
    xo = (cc - c).astype(np.float64)
    yo = (rr - c).astype(np.float64)
    th = np.deg2rad(np.asarray(angles_deg, np.float64))
    n_a = th.size
    # continuous translation index for every (angle, pixel)
    u = xo[None, :] * np.cos(th)[:, None] - yo[None, :] * np.sin(th)[:, None]
    u += (n_t - 1) / 2.0 + centre_offset
    i0 = np.floor(u).astype(np.int64)
    w1 = (u - i0).astype(np.float32)
    w0 = (1.0 - w1).astype(np.float32)
    a_idx = np.broadcast_to(np.arange(n_a)[:, None], u.shape)
    cols = np.broadcast_to(pix[None, :], u.shape)
    rows_l, cols_l, vals_l = [], [], []
    for shift, w in ((0, w0), (1, w1)):
        i = i0 + shift
        ok = (i >= 0) & (i < n_t) & (w > 0)
        rows_l.append((i[ok] * n_a + a_idx[ok]))
        cols_l.append(cols[ok])
        vals_l.append(w[ok])
    rows = np.concatenate(rows_l)
    cols = np.concatenate(cols_l)
    vals = np.concatenate(vals_l)
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_t * n_a, n * n), dtype=np.float32)


def _to_torch_csr(m: sp.csr_matrix, device) -> torch.Tensor:
    m = m.tocsr()
    m.sum_duplicates()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data.astype(np.float32)),
            size=m.shape,
            device=device,
            check_invariants=False,
        )


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, op):
        ctx.op = op
        return op._apply(op._A, x, op.domain_shape, op.range_shape)

    @staticmethod
    def backward(ctx, g):
        op = ctx.op
        return op._apply(op._AT, g, op.range_shape, op.domain_shape), None


@dataclass(frozen=True)
class _Shapes:
    domain: tuple
    range: tuple


class ParallelProjector:
    """Pencil-beam projector for one scan geometry, batched over channels.

    Parameters
    ----------
    n : int
        Image size (``n × n`` pixels of one translation step).
    angles_deg : array
        Rotation angles in degrees (any set: 0–180, 0–360, undersampled, interlaced).
    n_translations : int, optional
        Number of translations (default ``n``).
    centre_offset : float
        Rotation axis position relative to the middle of the translations, in steps.
    mask : bool or array, optional
        ``True`` restricts the image to the inscribed circle; an ``(n, n)`` boolean array gives
        the support explicitly. Pixels outside are zero in the adjoint.
    device : str or torch.device, optional
        Default: CUDA when present, else CPU.

    Notes
    -----
    ``op(x)`` projects ``x`` of shape ``(n, n)`` or ``(n, n, C)`` to ``(n_t, n_angles[, C])``;
    ``op.T(y)`` back-projects. Both accept numpy arrays (returning numpy) or torch tensors
    (returning tensors, differentiable through autograd).
    """

    def __init__(self, n: int, angles_deg, *, n_translations: int | None = None,
                 centre_offset: float = 0.0, mask=False, device=None):
        n = int(n)
        if n < 1:
            raise ValueError(f"ParallelProjector: n must be >= 1, found {n}")
        angles = np.asarray(angles_deg, dtype=np.float64).ravel()
        if angles.size == 0 or not np.all(np.isfinite(angles)):
            raise ValueError(
                f"ParallelProjector: angles_deg must be a non-empty finite array, found {angles_deg!r}"
            )
        n_t = n if n_translations is None else int(n_translations)
        if n_t < 1:
            raise ValueError(f"ParallelProjector: n_translations must be >= 1, found {n_t}")
        if mask is True:
            mask_arr = circle_mask(n)
        elif mask is False or mask is None:
            mask_arr = None
        else:
            mask_arr = np.asarray(mask, bool)
            if mask_arr.shape != (n, n):
                raise ValueError(f"ParallelProjector: mask must have shape {(n, n)}, found {mask_arr.shape}")
        self.n = n
        self.n_translations = n_t
        self.angles_deg = angles
        self.centre_offset = float(centre_offset)
        self.mask = mask_arr
        self.device = torch.device(device) if device is not None else default_device()
        A = _system_matrix(n, angles, n_t, self.centre_offset, mask_arr)
        self.nnz = A.nnz
        self._A = _to_torch_csr(A, self.device)
        self._AT = _to_torch_csr(A.T.tocsr(), self.device)
        log.debug("ParallelProjector n=%d angles=%d translations=%d nnz=%d", n, angles.size, n_t, self.nnz)

    # shapes ------------------------------------------------------------------
    @property
    def domain_shape(self) -> tuple:
        """Image shape ``(n, n)`` (a trailing channel axis may be added)."""
        return (self.n, self.n)

    @property
    def range_shape(self) -> tuple:
        """Sinogram shape ``(n_translations, n_angles)`` (a trailing channel axis may be added)."""
        return (self.n_translations, self.angles_deg.size)

    @property
    def T(self) -> "_Adjoint":
        """The adjoint (back-projection) operator."""
        return _Adjoint(self)

    # application ------------------------------------------------------------
    def _apply(self, M, x, in_shape, out_shape):
        squeeze = x.dim() == len(in_shape)
        if tuple(x.shape[:2]) != tuple(in_shape):
            raise ValueError(f"expected an array of shape {in_shape} (+ channels), found {tuple(x.shape)}")
        C = 1 if squeeze else x.shape[2]
        flat = x.reshape(in_shape[0] * in_shape[1], C)
        dtype = flat.dtype
        out = torch.sparse.mm(M, flat.to(torch.float32).contiguous())
        out = out.to(dtype).reshape(*out_shape, C)
        return out[..., 0] if squeeze else out

    def _call(self, fn_tensor, x):
        if isinstance(x, torch.Tensor):
            return fn_tensor(x.to(self.device))
        arr = np.asarray(x, dtype=np.float32)
        return fn_tensor(torch.from_numpy(arr).to(self.device)).cpu().numpy()

    def __call__(self, x):
        """Forward projection of ``x`` (``(n, n)`` or ``(n, n, C)``)."""
        return self._call(lambda t: _Project.apply(t, self), x)

    def adjoint(self, y):
        """Back-projection of ``y`` (``(n_t, n_angles)`` or ``(n_t, n_angles, C)``)."""
        return self._call(lambda t: _Project.apply(t, _Transposed(self)), y)

    def __repr__(self):
        return (f"ParallelProjector(n={self.n}, angles={self.angles_deg.size}, "
                f"n_translations={self.n_translations}, centre_offset={self.centre_offset}, "
                f"device='{self.device}')")


class _Transposed:
    """View of a projector with the roles of forward and adjoint swapped (for autograd)."""

    def __init__(self, op):
        self._A, self._AT = op._AT, op._A
        self.domain_shape, self.range_shape = op.range_shape, op.domain_shape
        self._apply = op._apply


class _Adjoint:
    def __init__(self, op):
        self._op = op

    def __call__(self, y):
        return self._op.adjoint(y)

    @property
    def T(self):
        return self._op

    @property
    def domain_shape(self):
        return self._op.range_shape

    @property
    def range_shape(self):
        return self._op.domain_shape
