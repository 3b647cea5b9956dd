"""Differentiable forward operator of pencil-beam XRD-CT with thick-sample parallax, in torch.

A voxel at depth ``s`` along the beam is seen by a flat detector at ``L = distance_mm`` at an
apparent 2θ' that differs from its true 2θ (``Δ2θ ≈ −(s / L) sin 2θ cos 2θ``); the pattern it
contributes is its own resampled at the true angle, with the Jacobian. The physics, the
resampling kernels (``interp``) and the tables built from them are in
:mod:`xrdwidgets.ops.parallax_tables`.

Geometry (that of :class:`~xrdwidgets.ops.projector.ParallelProjector` and of the simulator)
------------------------------------------------------------------------------------------------
* Image ``n × n``, axes ``(y, x)``, one pixel = one translation step = ``pixel_mm``; rotation axis
  at index ``(n − 1) / 2`` on both axes (``cx = cy = (n − 1) / 2``).
* At angle θ (deg, counter-clockwise) the beam runs along ``(x, y) = (sin θ, cos θ)``; translation
  ``i`` of ``n_t`` is the ray at ``p = i − (n_t − 1)/2 − centre_offset`` steps from the axis:
  ``x = cx + p cos θ + s sin θ``, ``y = cy − p sin θ + s cos θ``, with ``s`` the depth (pixels,
  positive towards the detector). A pixel ``(r, c)`` projects to ``p = (c − cx) cos θ − (r − cy) sin θ``
  (scikit-image ``radon`` orientation) and lies at depth ``s = (c − cx) sin θ + (r − cy) cos θ``.

Discretisation ("rotate, shift, integrate")
-------------------------------------------
1. *Shift*: the depth axis is cut into ``K`` bins of ``depth_step`` pixels; for each bin the
   volume's patterns are resampled onto the shifted 2θ grid of that depth (a sparse
   ``(m, K·m)`` matrix of ≤ ``T·K·m`` entries, ``T`` = 2 taps linear, 4 cubic, the same for
   every angle and ray).
2. *Rotate and integrate*: each ray is sampled every ``≤ sample_step`` pixels (0.5) along the
   beam; a sample takes bilinear weights of its four neighbouring pixels and hat weights of its
   two neighbouring depth bins, times the path step (line integrals in pixel units, as
   ``ParallelProjector``). These weights form one sparse ``(n_angles · n_t, P · K)`` matrix
   (``P`` support pixels), built once and kept (``memory_budget``).

The depth step is chosen so that the 2θ shift changes by at most ``max_shift_step`` channels
(0.5) between neighbouring bins (clipped to 1/8 … 8 pixels). With ``distance_mm = inf`` there is
one depth bin and the operator is a ray-driven (bilinear) parallel projector: it equals
``ParallelProjector`` (pixel-driven) up to interpolation (≈ 1–2 % relative on a random image).

Shapes: volume ``(n, n, m)`` (y, x, tth) → sinograms ``(n_translations, n_angles, m)``
(translation, angle, tth), channel axis last, like ``ParallelProjector``. Work is done in
chunks of depth bins (temporaries ``≈ 12 · P · chunk · m`` bytes, ``block_bytes``) and blocks of
angles (``block``: the sparse matrices of one block, ``≈ 16 · 6 · n_t · 2r`` bytes per angle).
The adjoint is the exact transpose, applied in the same chunks; the torch autograd bridge uses it
(vector–Jacobian product), so the operator sits in any torch loss.

Measured costs and the agreement with the simulator (``tests/test_parallax_op.py``):
``docs/notes/tables-recon.md``.
"""
from __future__ import annotations

import copy
import logging
import math

import numpy as np
import scipy.sparse as sp
import torch

from ..base.errors import InputError
from ..base.validators import check_float
from .parallax_tables import (FORMULAS, INTERPS, TAPS, apparent_tth, auto_depth_step, check_formula,  # noqa: F401
                              check_interp, rotation_matrices, shift_taps, true_tth)
from .projector import LinearOperator, circle_mask, default_device, to_torch_csr

log = logging.getLogger(__name__)

__all__ = ["FORMULAS", "INTERPS", "ParallaxProjector", "apparent_tth", "true_tth"]


# ---------------------------------------------------------------------------- checks
def _positive(name, value, *, allow_inf=False):
    return check_float("ParallaxProjector", name + " (mm)", value, minimum=0.0, strict=True, allow_inf=allow_inf)


def _tth_axis(tth_deg):
    t = np.asarray(tth_deg, float).ravel()
    if t.size < 1 or not np.all(np.isfinite(t)):
        raise InputError(f"ParallaxProjector: tth_deg must be a non-empty finite 2θ axis in degrees, "
                         f"found {tth_deg!r}")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        raise InputError("ParallaxProjector: tth_deg must be strictly increasing (degrees)")
    if np.any(t <= 0) or np.any(t >= 180):
        raise InputError(f"ParallaxProjector: tth_deg must lie in (0, 180) degrees, found "
                         f"[{t.min():.4g}, {t.max():.4g}]")
    return t



class _Apply(torch.autograd.Function):
    """Autograd bridge: forward of ``op`` with its exact adjoint as the backward (and vice versa)."""

    @staticmethod
    def forward(ctx, x, op, adjoint):
        ctx.op, ctx.adjoint = op, adjoint
        return op._adjoint(x) if adjoint else op._forward(x)

    @staticmethod
    def backward(ctx, g):
        op = ctx.op
        return (op._forward(g) if ctx.adjoint else op._adjoint(g)), None, None



# ---------------------------------------------------------------------------- the operator
class ParallaxProjector(LinearOperator):
    """Pencil-beam projector with thick-sample parallax: volume ``(y, x, tth)`` → sinograms.

    Parameters
    ----------
    n : int
        Image size (``n × n`` pixels of one translation step).
    angles_deg : array
        Rotation angles in degrees (any set; 0–180° data alone is enough: the shift of a voxel
        at 180° + θ is the mirror of that at θ and the operator models both).
    tth_deg : array (m,)
        Strictly increasing 2θ axis in degrees, shared by the volume and the sinograms.
    distance_mm : float
        Rotation axis to detector distance in mm (``inf``: no parallax, the plain projector).
    pixel_mm : float
        Pixel size = translation step, mm.
    n_translations : int, optional
        Number of translations (default ``n``).
    centre_offset : float
        Rotation axis position from the middle of the translations, in steps (as
        ``ParallelProjector``).
    mask : bool or array (n, n)
        Image support (``True``: the inscribed circle); pixels outside are ignored (forward) and
        zero (adjoint).
    formula : {"atan", "arcsin"}
        Apparent-angle formula (module docstring).
    interp : {"lanczos3", "cubic", "linear"}
        Kernel of the 2θ resampling on the channel-index axis (module docstring):
        ``"lanczos3"`` (default; 6 taps), ``"cubic"`` (Keys / Catmull–Rom, 4 taps) or
        ``"linear"`` (2 taps, the cheapest with the gathers of GPUs). Linear interpolation
        broadens peaks only 1–2 channels wide and ParallaxNet then fits them too narrow
        (measured widths and costs: ``docs/notes/tables-recon.md``).
    depth_step : float, optional
        Depth bin size in pixels (default: from ``max_shift_step``).
    max_shift_step : float
        Largest change of the 2θ shift between neighbouring depth bins, in channels (default
        0.5), used when ``depth_step`` is not given.
    sample_step : float
        Largest step between ray samples along the beam, pixels (default 0.5).
    block : int, optional
        Angles per block of sparse matrices (bounds their memory); default from ``block_bytes``.
    block_bytes : int
        Target bytes of one angle block's matrices and of one depth chunk's temporaries
        (default 256 MiB).
    device : optional
        torch device (default CUDA when present).
    memory_budget : int
        Bytes of sparse rotation matrices kept between applications (default 1 GiB); blocks over
        it are rebuilt on each application.

    Notes
    -----
    ``op(vol)`` maps ``(n, n, m)`` to ``(n_t, n_angles, m)``; ``op.T(sino)`` is the exact
    adjoint. numpy in → numpy out; torch in → torch out, differentiable through autograd.
    :meth:`select_channels` gives the operator of a channel sub-range (sharing the rotation
    matrices), for channel batching.
    """

    _force_gather = False  # tests: use the gather path (that of GPUs) on the CPU too

    def __init__(self, n: int, angles_deg, tth_deg, distance_mm: float, pixel_mm: float, *,
                 n_translations: int | None = None, centre_offset: float = 0.0, mask=False,
                 formula: str = "atan", interp: str = "lanczos3", depth_step: float | None = None,
                 max_shift_step: float = 0.5,
                 sample_step: float = 0.5,
                 block: int | None = None, device=None, memory_budget: int = 2**30,
                 block_bytes: int = 256 * 2**20):
        try:
            n_int = int(n)
        except (TypeError, ValueError):
            n_int = -1
        if n_int != n or n_int < 1:
            raise InputError(f"ParallaxProjector: n must be an integer >= 1, found {n!r}")
        angles = np.asarray(angles_deg, dtype=np.float64).ravel()
        if angles.size == 0 or not np.all(np.isfinite(angles)):
            raise InputError(f"ParallaxProjector: angles_deg must be a non-empty finite array, found {angles_deg!r}")
        tth = _tth_axis(tth_deg)
        L = _positive("distance_mm", distance_mm, allow_inf=True)
        px = _positive("pixel_mm", pixel_mm)
        n_t = n_int if n_translations is None else n_translations
        if int(n_t) != n_t or int(n_t) < 1:
            raise InputError(f"ParallaxProjector: n_translations must be an integer >= 1, found {n_translations!r}")
        try:
            off = float(centre_offset)
        except (TypeError, ValueError):
            off = math.nan
        if not math.isfinite(off):
            raise InputError(f"ParallaxProjector: centre_offset must be a finite number (steps), found {centre_offset!r}")
        self.formula = check_formula(formula)
        self.interp = check_interp(interp)
        if mask is True:
            mask_arr = circle_mask(n_int)
        elif mask is False or mask is None:
            mask_arr = None
        else:
            mask_arr = np.asarray(mask, bool)
            if mask_arr.shape != (n_int, n_int):
                raise InputError(f"ParallaxProjector: mask must have shape {(n_int, n_int)}, found {mask_arr.shape}")
        self.n = n_int
        self.n_translations = int(n_t)
        self.angles_deg = angles
        self.distance_mm = L
        self.pixel_mm = px
        self.centre_offset = off
        self.mask = mask_arr
        self.device = torch.device(device) if device is not None else default_device()
        self.memory_budget = int(memory_budget)
        sup = np.nonzero(mask_arr) if mask_arr is not None else np.nonzero(np.ones((n_int, n_int), bool))
        self._support = (sup[0].astype(np.int64), sup[1].astype(np.int64))
        c = (n_int - 1) / 2.0
        r_max = float(np.sqrt((self._support[0] - c) ** 2 + (self._support[1] - c) ** 2).max())
        self._r_max = r_max
        self.sample_step = _positive("sample_step", sample_step)
        if math.isfinite(L) and L <= (r_max + 1.0) * px:
            raise InputError(f"ParallaxProjector: distance_mm ({L} mm) must be beyond the sample "
                             f"(its pixels reach {(r_max + 0.5) * px:.4g} mm from the axis)")
        # depth bins (one when there is no parallax)
        m = tth.size
        if math.isinf(L):
            self.depth_step, self._s_min, self.n_depth = math.inf, 0.0, 1
        else:
            if depth_step is None:
                depth_step = auto_depth_step(tth, self.pixel_mm, self.distance_mm, max_shift_step)
            self.depth_step = _positive("depth_step", depth_step)
            nk = math.floor((r_max + 1.5) / self.depth_step) + 2
            self._s_min = -nk * self.depth_step      # bin k sits at s_min + k·depth_step (pixels)
            self.n_depth = 2 * nk + 1
        P = self._support[0].size
        # depth chunks bound the shifted-volume temporary (P · chunk · m floats, ~3 copies)
        per_bin = 12 * P * max(m, 1)
        self._chunk = max(1, min(self.n_depth, int(block_bytes) // per_bin))
        self._chunks = [(k, min(self.n_depth, k + self._chunk)) for k in range(0, self.n_depth, self._chunk)]
        # angle blocks bound the rotation matrices (~6 entries per pixel and angle, 8 bytes each, ×2)
        if block is None:
            per_angle = 16 * self.n_translations * (2 * r_max + 3) * (3 if self.n_depth == 1 else 6)
            block = max(1, min(angles.size, int(block_bytes) // max(1, per_angle)))
        if isinstance(block, bool) or int(block) != block or int(block) < 1:
            raise InputError(f"ParallaxProjector: block must be an integer >= 1 (angles per block), found {block!r}")
        self.block = int(block)
        self._blocks = [(a, min(angles.size, a + self.block)) for a in range(0, angles.size, self.block)]
        self._cache: dict = {}
        self._set_channels(tth)
        log.debug("ParallaxProjector n=%d angles=%d translations=%d channels=%d L=%g mm px=%g mm "
                  "depth bins=%d (step %.3g px, chunks of %d) angle blocks=%d", n_int, angles.size,
                  self.n_translations, m, L, px, self.n_depth, self.depth_step, self._chunk, len(self._blocks))

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_geometry(cls, geometry, n: int, angles_deg, tth_deg, *, distance_mm=None, pixel_mm=None,
                      **kwargs) -> ParallaxProjector:
        """Operator of a :class:`~xrdwidgets.geometry.ScanGeometry` (distance, step, centre).

        ``distance_mm`` / ``pixel_mm`` override ``geometry.distance_mm`` /
        ``geometry.translation_step_mm``; other keywords go to the constructor.
        """
        L = distance_mm if distance_mm is not None else getattr(geometry, "distance_mm", None)
        px = pixel_mm if pixel_mm is not None else getattr(geometry, "translation_step_mm", None)
        if L is None:
            raise InputError("ParallaxProjector.from_geometry: no detector distance: give distance_mm= or "
                             "store geometry_distance_mm in the stack's attrs")
        if px is None:
            raise InputError("ParallaxProjector.from_geometry: no translation step: give pixel_mm= or store "
                             "geometry_translation_step_mm in the stack's attrs")
        kwargs.setdefault("centre_offset", getattr(geometry, "centre_offset", 0.0) if geometry is not None else 0.0)
        return cls(n, angles_deg, tth_deg, L, px, **kwargs)

    @classmethod
    def from_stack(cls, stack, *, n: int | None = None, distance_mm=None, pixel_mm=None,
                   **kwargs) -> ParallaxProjector:
        """Operator of a sinogram stack ``(translation, angle, tth)``: its angles, 2θ axis and geometry.

        Parameters
        ----------
        stack : xarray.DataArray or Dataset
            Sinogram stack with a ``tth`` axis (degrees) and ``geometry_*`` attrs
            (``distance_mm``, ``translation_step_mm``, ``centre_offset``).
        n : int, optional
            Image size (default: the number of translations).
        distance_mm, pixel_mm : float, optional
            Override the stored geometry.
        **kwargs
            Passed to the constructor (``mask``, ``device``, ``formula``, ``interp``, ...).
        """
        from .. import data as _data

        da = _data.validate_sinogram_stack(stack, check_finite=False)
        spec = _data.spectral_dim(da)
        if spec != "tth":
            raise InputError(f"ParallaxProjector.from_stack: the parallax model needs a 2θ axis 'tth' in "
                             f"degrees, found spectral dim {spec!r} (convert with xrdwidgets.data.convert_spectral)")
        n_t = da.sizes[_data.TRANSLATION]
        kwargs.setdefault("n_translations", n_t)
        return cls.from_geometry(_data.get_geometry(da), n_t if n is None else n, da[_data.ANGLE].values,
                                 da["tth"].values, distance_mm=distance_mm, pixel_mm=pixel_mm, **kwargs)

    def select_channels(self, channels) -> ParallaxProjector:
        """The operator of a channel sub-range (a ``slice`` or increasing index array).

        Shares the rotation matrices with ``self`` (no rebuild). Signal shifting into the
        sub-range from channels outside it is not modelled — hence overlapping channel batches
        (:mod:`xrdwidgets.recon.batching`).
        """
        tth = np.asarray(self.tth_deg[channels], float).ravel()
        new = copy.copy(self)
        new._set_channels(_tth_axis(tth))
        return new

    # ------------------------------------------------------------------ spectral shift tables
    def _set_channels(self, tth):
        """Per depth bin ``k`` and measured channel ``j``: the ``T`` source channels and weights.

        ``T`` = 2 (``interp="linear"``), 4 (``"cubic"``) or 6 (``"lanczos3"``). Kept per depth
        chunk: on the CPU a torch CSR pair ``(S, Sᵀ)``, ``S`` of shape ``(m, Kc·m)``; elsewhere
        (or with ``_force_gather``) the tensors ``(idx (T, Kc·m) int64, w (T, Kc·m) float32)``.
        """
        self.tth_deg = tth
        m = tth.size
        K = self.n_depth
        self.depth_mm = (self._s_min + np.arange(K) * self.depth_step) * self.pixel_mm if K > 1 else np.zeros(1)
        self._no_shift = K == 1
        if self._no_shift:
            self._shift = None
            return
        T = TAPS[self.interp]
        idx, w = shift_taps(tth, self.depth_mm, self.distance_mm, self.formula, self.interp)   # (T, K, m)
        dev = self.device
        # CPU: one sparse (m, Kc·m) matrix per chunk (dense @ CSR products, fastest there);
        # other devices: gathers (index_select / index_add_), supported everywhere
        self._use_sparse_shift = dev.type == "cpu" and not self._force_gather
        self._shift = []
        for k0, k1 in self._chunks:
            a = np.ascontiguousarray(idx[:, k0:k1]).reshape(T, -1)
            b = np.ascontiguousarray(w[:, k0:k1]).reshape(T, -1)
            if self._use_sparse_shift:
                q = np.arange(a.shape[1])
                S = sp.csr_matrix((b.ravel(), (a.ravel(), np.tile(q, T))), shape=(m, a.shape[1]))
                S.sum_duplicates()
                self._shift.append((to_torch_csr(S, dev), to_torch_csr(S.T.tocsr(), dev)))
            else:
                self._shift.append((torch.as_tensor(a, dtype=torch.int64, device=dev),
                                    torch.as_tensor(b, dtype=torch.float32, device=dev)))

    def _shifted(self, V, c):
        """Shifted copies of the volume ``V`` (P, m) for the depth bins of chunk ``c``: (P·Kc, m)."""
        if self._no_shift:
            return V
        if self._use_sparse_shift:
            S, _ = self._shift[c]
            return torch.mm(V, S).view(-1, V.shape[1])
        idx, w = self._shift[c]
        U = V.index_select(1, idx[0]) * w[0]
        for i in range(1, idx.shape[0]):
            U += V.index_select(1, idx[i]) * w[i]
        return U.view(-1, V.shape[1])

    def _unshift_add(self, acc, Ubar, c):
        """Adjoint of :meth:`_shifted`: ``acc (P, m) += Sᵀ Ubar`` for chunk ``c``."""
        if self._no_shift:
            acc += Ubar
            return
        Ub = Ubar.view(acc.shape[0], -1)
        if self._use_sparse_shift:
            _, ST = self._shift[c]
            acc += torch.mm(Ub, ST)
            return
        idx, w = self._shift[c]
        for i in range(idx.shape[0]):
            acc.index_add_(1, idx[i], Ub * w[i])

    # ------------------------------------------------------------------ shapes
    @property
    def n_channels(self) -> int:
        """Number of 2θ channels ``m``."""
        return int(self.tth_deg.size)

    @property
    def domain_shape(self) -> tuple:
        """Volume shape ``(n, n, m)`` (y, x, tth)."""
        return (self.n, self.n, self.n_channels)

    @property
    def range_shape(self) -> tuple:
        """Sinogram shape ``(n_translations, n_angles, m)`` (translation, angle, tth)."""
        return (self.n_translations, self.angles_deg.size, self.n_channels)

    # ------------------------------------------------------------------ rotation matrices
    def _block(self, b):
        """Per depth chunk, the ``(W, Wᵀ)`` torch CSR pair of angle block ``b``."""
        if b in self._cache:
            return self._cache[b]
        a0, a1 = self._blocks[b]
        mats = self._rotation_matrices(self.angles_deg[a0:a1])
        pairs = [(to_torch_csr(W, self.device), to_torch_csr(W.T.tocsr(), self.device)) for W in mats]
        nnz = sum(W.nnz for W in mats)
        used = sum(16 * W.values().numel() for v in self._cache.values() for W, _ in v)
        if used + 16 * nnz <= self.memory_budget:
            self._cache[b] = pairs
        elif not getattr(self, "_warned", False):
            self._warned = True
            log.warning("ParallaxProjector: rotation matrices over memory_budget (%.2f GiB); angle blocks are "
                        "rebuilt on every application (slow in loops: raise memory_budget)",
                        self.memory_budget / 2**30)
        return pairs

    def _rotation_matrices(self, angles_deg):
        """Per depth chunk, a CSR ``(n_a · n_t, P · Kc)``: (pixel, depth bin) → ray
        (:func:`~xrdwidgets.ops.parallax_tables.rotation_matrices`)."""
        return rotation_matrices(angles_deg, n=self.n, n_translations=self.n_translations, support=self._support,
                                 r_max=self._r_max, n_depth=self.n_depth, depth_step=self.depth_step,
                                 s_min=self._s_min, sample_step=self.sample_step,
                                 centre_offset=self.centre_offset, chunks=self._chunks)

    # ------------------------------------------------------------------ application
    def _check(self, x, shape, what):
        if tuple(x.shape) != tuple(shape):
            raise InputError(f"ParallaxProjector {what}: expected shape {tuple(shape)}, found {tuple(x.shape)}")

    def _forward(self, x):
        self._check(x, self.domain_shape, "forward (volume (y, x, tth))")
        dtype = x.dtype
        n, m, n_t = self.n, self.n_channels, self.n_translations
        rr, cc = self._support
        V = x.reshape(n * n, m).to(torch.float32)
        if self.mask is not None:
            V = V[torch.as_tensor(rr * n + cc, device=V.device)]
        V = V.contiguous()
        out = torch.zeros((self.angles_deg.size * n_t, m), dtype=torch.float32, device=x.device)
        for c in range(len(self._chunks)):
            U = self._shifted(V, c)
            for b, (a0, a1) in enumerate(self._blocks):
                W, _ = self._block(b)[c]
                out[a0 * n_t:a1 * n_t] += torch.sparse.mm(W, U)
        return out.view(self.angles_deg.size, n_t, m).transpose(0, 1).to(dtype)

    def _adjoint(self, y):
        self._check(y, self.range_shape, "adjoint (sinogram (translation, angle, tth))")
        dtype = y.dtype
        n, m, n_t = self.n, self.n_channels, self.n_translations
        Y = y.to(torch.float32).transpose(0, 1).reshape(self.angles_deg.size * n_t, m)
        acc = torch.zeros((self._support[0].size, m), dtype=torch.float32, device=y.device)
        for c in range(len(self._chunks)):
            Ubar = None
            for b, (a0, a1) in enumerate(self._blocks):
                _, WT = self._block(b)[c]
                part = torch.sparse.mm(WT, Y[a0 * n_t:a1 * n_t])
                Ubar = part if Ubar is None else Ubar.add_(part)
            self._unshift_add(acc, Ubar, c)
        if self.mask is None:
            out = acc
        else:
            out = torch.zeros((n * n, m), dtype=torch.float32, device=y.device)
            out[torch.as_tensor(self._support[0] * n + self._support[1], device=y.device)] = acc
        return out.reshape(n, n, m).to(dtype)

    def _apply(self, t: torch.Tensor, adjoint: bool) -> torch.Tensor:
        return _Apply.apply(t, self, adjoint)

    def __call__(self, vol):
        """Forward projection of a volume ``(n, n, m)`` (y, x, tth) → ``(n_t, n_angles, m)``."""
        return self._call(vol, False)

    def adjoint(self, sino):
        """Adjoint (back-projection with the inverse shifts) of ``(n_t, n_angles, m)`` → ``(n, n, m)``."""
        return self._call(sino, True)

    def __repr__(self):
        return (f"ParallaxProjector(n={self.n}, angles={self.angles_deg.size}, channels={self.n_channels}, "
                f"distance_mm={self.distance_mm}, pixel_mm={self.pixel_mm}, "
                f"n_translations={self.n_translations}, centre_offset={self.centre_offset}, "
                f"formula={self.formula!r}, interp={self.interp!r}, depth_step={self.depth_step:.4g}, "
                f"device='{self.device}')")
