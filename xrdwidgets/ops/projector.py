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

Implementation, chosen per size and use:

* **sparse** — CSR matrices (``2·n_support·n_angles`` entries, float32 values, int32 indices,
  stored with their transpose: 16 bytes per entry), built in O(nnz) without sorting, split into
  blocks of angles. Blocks are kept while they fit in ``memory_budget`` bytes; the others are
  rebuilt on each application, so memory stays bounded for any size. One sparse product
  serves a whole channel batch: this is the fast path for stacks.
* **matrix-free adjoint** — for a few channels (``C < matrix_free_below``) with no matrix built
  yet, the back-projection samples the sinogram with ``torch.nn.functional.grid_sample``
  (the same hat-function weights; equal to the sparse adjoint to float32 rounding), so a single
  FBP image needs no matrix at all.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.sparse as sp
import torch

from ..base.errors import InputError
from . import _cpu_kernels as _kern

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


def _hat_weights(u, n_t):
    """Bins ``(i0, i0 + 1)`` and their hat-function weights for continuous positions ``u``."""
    i0 = np.clip(np.floor(u), 0, max(n_t - 2, 0)).astype(np.int64)
    wa = np.maximum(0.0, 1.0 - np.abs(u - i0)).astype(np.float32)
    wb = np.maximum(0.0, 1.0 - np.abs(u - (i0 + 1))).astype(np.float32)
    if n_t == 1:
        wb[:] = 0.0
    return i0, wa, wb


def _block_matrices(n, angles_deg, n_t, centre_offset, support):
    """Sparse matrices of one block of angles, built in O(nnz) without sorting.

    Returns ``(A, AT)`` as scipy CSR: ``A`` is ``(n_angles·n_t, n·n)`` with rows ordered
    angle-major (row ``a·n_t + i``), ``AT`` its transpose (rows = pixels).
    """
    c = (n - 1) / 2.0
    rr, cc = support
    P = rr.size
    th = np.deg2rad(np.asarray(angles_deg, np.float64))
    n_a = th.size
    u = (cc - c)[:, None] * np.cos(th)[None, :] - (rr - c)[:, None] * np.sin(th)[None, :]
    u += (n_t - 1) / 2.0 + centre_offset                                   # (P, n_a)
    i0, wa, wb = _hat_weights(u, n_t)
    base = np.arange(n_a, dtype=np.int64)[None, :] * n_t
    cols = np.empty((P, n_a, 2), np.int32)
    cols[..., 0] = base + i0
    cols[..., 1] = base + np.minimum(i0 + 1, n_t - 1) if n_t == 1 else base + i0 + 1
    vals = np.empty((P, n_a, 2), np.float32)
    vals[..., 0] = wa
    vals[..., 1] = wb
    counts = np.zeros(n * n, np.int64)
    counts[rr * n + cc] = 2 * n_a
    indptr = np.concatenate(([0], np.cumsum(counts)))
    # rows of AT must be in pixel order: support pixels are sorted by (r, c) already
    AT = sp.csr_matrix((vals.ravel(), cols.ravel(), indptr), shape=(n * n, n_a * n_t))
    A = AT.tocsc().T  # CSC of AT is CSR of A: O(nnz) counting sort
    return A.tocsr(), AT


def to_torch_csr(m: sp.csr_matrix, device) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor (float32 values, int32 indices when they fit)."""
    idx = np.int32 if m.nnz < 2**31 and max(m.shape) < 2**31 else np.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(idx)), torch.from_numpy(m.indices.astype(idx)),
            torch.from_numpy(m.data.astype(np.float32, copy=False)), size=m.shape, device=device,
            check_invariants=False)


class _Project(torch.autograd.Function):
    """Autograd bridge: forward of ``op``, backward by its adjoint (and vice versa)."""

    @staticmethod
    def forward(ctx, x, op, adjoint):
        ctx.op, ctx.adjoint = op, adjoint
        return op._adjoint(x) if adjoint else op._forward(x)

    @staticmethod
    def backward(ctx, g):
        op = ctx.op
        return (op._forward(g) if ctx.adjoint else op._adjoint(g)), None, None


class LinearOperator:
    """What every operator of :mod:`xrdwidgets.ops` shares: numpy or torch in and out, ``.T``.

    Subclasses set ``device`` and define ``_apply(t, adjoint)`` on a float32 tensor on that
    device (an autograd function, so gradients flow through both directions). A numpy argument
    gives a numpy result; a tensor gives a tensor (moved to the operator's device).
    """

    device: torch.device

    def _apply(self, t: torch.Tensor, adjoint: bool) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _call(self, x, adjoint: bool):
        if isinstance(x, torch.Tensor):
            return self._apply(x.to(self.device), adjoint)
        arr = np.asarray(x, dtype=np.float32)
        return self._apply(torch.from_numpy(arr).to(self.device), adjoint).detach().cpu().numpy()

    @property
    def T(self) -> "_Adjoint":
        """The adjoint operator (``op.T(y)`` is ``op.adjoint(y)``)."""
        return _Adjoint(self)


class ParallelProjector(LinearOperator):
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
        the support explicitly. Pixels outside are zero in the adjoint and ignored by the forward.
    device : str or torch.device, optional
        Default: CUDA when present, else CPU.
    memory_budget : int
        Bytes the cached sparse matrices may take (default 2 GiB); beyond it, angle blocks are
        rebuilt on the fly.
    block_bytes : int
        Target size of one angle block's matrices (default 256 MiB).
    matrix_free_below : int
        Back-projections of fewer channels than this use the matrix-free path while no matrix
        has been built (default 8).

    Notes
    -----
    ``op(x)`` projects ``x`` of shape ``(n, n)`` or ``(n, n, C)`` to ``(n_t, n_angles[, C])``;
    ``op.T(y)`` back-projects. Both accept numpy arrays (returning numpy) or torch tensors
    (returning tensors, differentiable through autograd). The adjoint is the exact transpose.
    """

    def __init__(self, n: int, angles_deg, *, n_translations: int | None = None,
                 centre_offset: float = 0.0, mask=False, device=None,
                 memory_budget: int = 2 * 2**30, block_bytes: int = 256 * 2**20,
                 matrix_free_below: int = 8):
        n = int(n)
        if n < 1:
            raise InputError(f"ParallelProjector: n must be >= 1, found {n}")
        angles = np.asarray(angles_deg, dtype=np.float64).ravel()
        if angles.size == 0 or not np.all(np.isfinite(angles)):
            raise InputError(
                f"ParallelProjector: angles_deg must be a non-empty finite array, found {angles_deg!r}"
            )
        n_t = n if n_translations is None else int(n_translations)
        if n_t < 1:
            raise InputError(f"ParallelProjector: n_translations must be >= 1, found {n_t}")
        if mask is True:
            mask_arr = circle_mask(n)
        elif mask is False or mask is None:
            mask_arr = None
        else:
            mask_arr = np.asarray(mask, bool)
            if mask_arr.shape != (n, n):
                raise InputError(f"ParallelProjector: mask must have shape {(n, n)}, found {mask_arr.shape}")
        self.n = n
        self.n_translations = n_t
        self.angles_deg = angles
        self.centre_offset = float(centre_offset)
        self.mask = mask_arr
        self.device = torch.device(device) if device is not None else default_device()
        self.memory_budget = int(memory_budget)
        self.matrix_free_below = int(matrix_free_below)
        sup = np.nonzero(mask_arr) if mask_arr is not None else np.nonzero(np.ones((n, n), bool))
        self._support = (sup[0].astype(np.int64), sup[1].astype(np.int64))
        self.nnz = 2 * self._support[0].size * angles.size
        per_angle = max(1, 16 * 2 * self._support[0].size)
        nb = max(1, min(angles.size, int(block_bytes) // per_angle))
        self._blocks = [(a, min(angles.size, a + nb)) for a in range(0, angles.size, nb)]
        self._cache: dict[int, tuple] = {}
        self._grid_cache = None
        self._warned = False
        self._ranges = self._row_ranges()
        log.debug("ParallelProjector n=%d angles=%d translations=%d nnz=%d blocks=%d",
                  n, angles.size, n_t, self.nnz, len(self._blocks))

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
    def matrix_bytes(self) -> int:
        """Bytes of all sparse matrices (forward + transpose) if every block were kept."""
        return 16 * self.nnz

    # matrices ---------------------------------------------------------------
    def _block(self, k):
        if k in self._cache:
            return self._cache[k]
        a0, a1 = self._blocks[k]
        A, AT = _block_matrices(self.n, self.angles_deg[a0:a1], self.n_translations,
                                self.centre_offset, self._support)
        pair = (to_torch_csr(A, self.device), to_torch_csr(AT, self.device))
        used = sum(16 * m[0].values().numel() for m in self._cache.values())
        if used + 16 * A.nnz <= self.memory_budget:
            self._cache[k] = pair
        elif not self._warned:
            self._warned = True
            log.warning("ParallelProjector: the matrices need %.2f GiB, over memory_budget %.2f GiB; "
                        "angle blocks are rebuilt on every application (slow in iterative loops: "
                        "raise memory_budget if memory allows)", self.matrix_bytes / 2**30,
                        self.memory_budget / 2**30)
        return pair

    # application ------------------------------------------------------------
    def _check(self, x, shape, what):
        if tuple(x.shape[:2]) != tuple(shape) or x.dim() not in (2, 3):
            raise InputError(f"ParallelProjector {what}: expected shape {shape} or {shape} + (C,), "
                             f"found {tuple(x.shape)}")

    def _forward(self, x):
        self._check(x, self.domain_shape, "forward")
        squeeze = x.dim() == 2
        dtype = x.dtype
        if not self._fits() and self._use_numba():
            x3 = x.reshape(self.n, self.n, -1).detach().to(torch.float32).numpy()
            out = torch.from_numpy(_kern.project(x3, self.angles_deg, self.n_translations,
                                                 self.centre_offset, *self._ranges)).to(dtype)
            return out[..., 0] if squeeze else out
        flat = x.reshape(self.n * self.n, -1).to(torch.float32).contiguous()
        parts = []
        for k, (a0, a1) in enumerate(self._blocks):
            A, _ = self._block(k)
            parts.append(torch.sparse.mm(A, flat).reshape(a1 - a0, self.n_translations, -1))
        out = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
        out = out.permute(1, 0, 2).to(dtype)                                  # (n_t, n_a, C)
        return out[..., 0] if squeeze else out

    def _adjoint(self, y):
        self._check(y, self.range_shape, "adjoint")
        squeeze = y.dim() == 2
        dtype = y.dtype
        y3 = y.reshape(*self.range_shape, -1).to(torch.float32)
        C = y3.shape[-1]
        if (not self._cache and C < self.matrix_free_below) or (not self._fits() and self._use_numba()):
            out = self._adjoint_matrix_free(y3)
        else:
            out = torch.zeros(self.n * self.n, C, device=self.device)
            for k, (a0, a1) in enumerate(self._blocks):
                _, AT = self._block(k)
                yb = y3[:, a0:a1].permute(1, 0, 2).reshape((a1 - a0) * self.n_translations, C)
                out += torch.sparse.mm(AT, yb.contiguous())
            out = out.reshape(self.n, self.n, C)
        out = out.to(dtype)
        return out[..., 0] if squeeze else out

    def _grids(self, block=32):
        """Cached sampling grids of the matrix-free adjoint (normalised coordinates, float32)."""
        if self._grid_cache is None:
            c = (self.n - 1) / 2.0
            n_t, n_a = self.n_translations, self.angles_deg.size
            rr, cc = self._support
            # [x, y, 1] @ coefficients gives grid_sample's normalised x = (2u + 1)/n_t - 1 directly
            xy1 = torch.as_tensor(np.stack([cc - c, rr - c, np.ones(rr.size)], 1), dtype=torch.float32,
                                  device=self.device)
            th = np.deg2rad(self.angles_deg)
            coef = np.stack([2 * np.cos(th) / n_t, -2 * np.sin(th) / n_t,
                             np.full(n_a, (2 * ((n_t - 1) / 2.0 + self.centre_offset) + 1) / n_t - 1)])
            coef = torch.as_tensor(coef, dtype=torch.float32, device=self.device)
            gy_all = torch.as_tensor((2 * np.arange(n_a) + 1.0) / n_a - 1.0, dtype=torch.float32,
                                     device=self.device)
            grids = []
            for a0 in range(0, n_a, block):
                a1 = min(n_a, a0 + block)
                gx = xy1 @ coef[:, a0:a1]                                      # (P, nb)
                grids.append(torch.stack([gx, gy_all[a0:a1].expand_as(gx)], -1)[None])
            self._grid_cache = grids
        return self._grid_cache

    def _row_ranges(self):
        """Per image row, ``[start, stop)`` of the support's columns; ``None`` if a row has gaps."""
        rr, cc = self._support
        first = np.full(self.n, self.n, np.int64)
        last = np.full(self.n, -1, np.int64)
        np.minimum.at(first, rr, cc)
        np.maximum.at(last, rr, cc)
        counts = np.bincount(rr, minlength=self.n)
        if not np.all((counts == 0) | (counts == last - first + 1)):
            return None
        return np.where(counts > 0, first, 0), np.where(counts > 0, last + 1, 0)

    def _use_numba(self) -> bool:
        return self.device.type == "cpu" and _kern.HAVE_NUMBA and self._ranges is not None

    def _fits(self) -> bool:
        return self.matrix_bytes <= self.memory_budget

    def _adjoint_matrix_free(self, y3):
        if self._use_numba():
            return torch.from_numpy(_kern.backproject(np.ascontiguousarray(y3.detach().numpy()), self.angles_deg,
                                                      self.n, self.centre_offset, *self._ranges))
        return self._adjoint_grid_sample(y3)

    def _adjoint_grid_sample(self, y3):
        inp = y3.permute(2, 1, 0)[None].contiguous()                          # (1, C, n_a, n_t)
        acc = None
        for g in self._grids():
            o = torch.nn.functional.grid_sample(inp, g, mode="bilinear", padding_mode="zeros",
                                                align_corners=False)[0].sum(-1)  # (C, P)
            acc = o if acc is None else acc + o
        C = y3.shape[-1]
        out = torch.zeros(C, self.n * self.n, device=self.device)
        idx = torch.as_tensor(self._support[0] * self.n + self._support[1], device=self.device)
        out[:, idx] = acc
        return out.T.reshape(self.n, self.n, C)

    def _apply(self, t: torch.Tensor, adjoint: bool) -> torch.Tensor:
        return _Project.apply(t, self, adjoint)

    def __call__(self, x):
        """Forward projection of ``x`` (``(n, n)`` or ``(n, n, C)``)."""
        return self._call(x, False)

    def adjoint(self, y):
        """Back-projection of ``y`` (``(n_t, n_angles)`` or ``(n_t, n_angles, C)``)."""
        return self._call(y, True)

    def __repr__(self):
        return (f"ParallelProjector(n={self.n}, angles={self.angles_deg.size}, "
                f"n_translations={self.n_translations}, centre_offset={self.centre_offset}, "
                f"device='{self.device}')")


class _Adjoint:
    """The adjoint of an operator as an operator (``op.T``): its call is ``op.adjoint``."""

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
