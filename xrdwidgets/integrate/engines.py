"""Azimuthal integration of frames to 1-D patterns with pyFAI, one frame or a batch at a time.

:class:`Integrator` holds a pyFAI geometry, the corrections (mask, dark, flat, polarisation,
solid angle — pyFAI's own options) and the integration settings; :meth:`Integrator.integrate`
turns a batch of frames ``(n, rows, columns)`` into patterns ``(n, bins)``.

Methods
    ``"mean"``
        The plain mean of the corrected pixels in each bin (pyFAI ``integrate1d_ng``).
    ``"trimmed"``
        Trimmed mean: pixels below the ``trim`` and above the ``100 - trim`` percentile of each
        bin are dropped before averaging (pyFAI ``medfilt1d_ng`` with
        ``percentile=(trim, 100 - trim)``). ``trim=10`` is the papers' "10 % trimmed mean",
        which removes single-crystal spots (:data:`PRESETS`).
    ``"sigma_clip"``
        Iterative sigma clipping at ``sigma`` standard deviations (pyFAI ``sigma_clip_ng``,
        azimuthal error model).

Engines for ``"mean"`` (``engine=``)
    ``"pyfai"``
        pyFAI's CSR engine called frame by frame.
    ``"scipy"``, ``"torch"``
        pyFAI's pixel-to-bin CSR matrix ``C`` (bins × pixels, exported once from its engine) is
        applied to a whole batch in one sparse product: ``I = C (F − dark) / (C norm)`` with
        ``norm = flat × solid angle × polarisation`` (pyFAI's own ``sum_normalization``), equal
        to pyFAI's result to float32 rounding. ``"torch"`` runs on ``device`` (CPU or CUDA).
    ``"auto"``
        ``"torch"`` on CUDA (``device="cuda"``, or no device given and a GPU present), else
        ``"scipy"`` (on a CPU, torch's threads compete with the frame reader; the rates are in
        the README, measured by ``benchmarks/bench_integrate.py``). The scipy product is ``F Cᵀ`` (frames as rows, ``Cᵀ`` CSR), which reads the frames in
        place: no transposed copy.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from ..data import DataError
from .calibration import check_shape, load_image

log = logging.getLogger(__name__)

__all__ = ["UNITS", "METHODS", "ENGINES", "PRESETS", "IntegrationOptions", "Integrator"]

#: Spectral dim → (pyFAI unit, our units).
UNITS = {"tth": ("2th_deg", "deg"), "q": ("q_A^-1", "1/Å")}
METHODS = ("mean", "trimmed", "sigma_clip")
ENGINES = ("auto", "pyfai", "scipy", "torch")
#: Named settings: the papers' 10 % trimmed mean.
PRESETS = {"trimmed10": {"method": "trimmed", "trim": 10.0}}
_SPLITS = ("no", "bbox", "full")


@dataclass(frozen=True, kw_only=True)
class IntegrationOptions:
    """Settings of an azimuthal integration.

    Parameters
    ----------
    unit : {"tth", "q"}
        2θ in degrees or q in 1/Å.
    bins : int
        Number of radial bins.
    radial_range : (min, max), optional
        In ``unit``; default: the whole detector.
    method : {"mean", "trimmed", "sigma_clip"}
    trim : float
        Percent dropped at each end of a bin (``"trimmed"``), 0 ≤ trim < 50.
    sigma : float
        Clipping threshold in standard deviations (``"sigma_clip"``).
    polarization_factor : float, optional
        pyFAI's polarisation factor (−1…1; e.g. 0.99 at a synchrotron); ``None``: none.
    solid_angle : bool
        Correct the solid angle of each pixel.
    split : {"bbox", "full", "no"}
        pyFAI pixel splitting.
    engine : {"auto", "pyfai", "scipy", "torch"}
        Engine of the ``"mean"`` method (see the module docstring; ``"auto"``: torch on CUDA,
        else scipy).
    device : str, optional
        Torch device of the ``"torch"`` engine (default CUDA when present).
    """

    unit: str = "tth"
    bins: int = 1000
    radial_range: tuple | None = None
    method: str = "mean"
    trim: float = 10.0
    sigma: float = 3.0
    polarization_factor: float | None = None
    solid_angle: bool = True
    split: str = "bbox"
    engine: str = "auto"
    device: str | None = None

    def __post_init__(self):
        if self.unit not in UNITS:
            raise DataError(f"unit: expected one of {tuple(UNITS)}, found {self.unit!r}")
        if self.method not in METHODS:
            raise DataError(f"method: expected one of {METHODS}, found {self.method!r}")
        if self.engine not in ENGINES:
            raise DataError(f"engine: expected one of {ENGINES}, found {self.engine!r}")
        if self.split not in _SPLITS:
            raise DataError(f"split: expected one of {_SPLITS}, found {self.split!r}")
        if int(self.bins) < 2:
            raise DataError(f"bins: expected an integer >= 2, found {self.bins!r}")
        if not 0 <= float(self.trim) < 50:
            raise DataError(f"trim: expected a percentage in [0, 50), found {self.trim!r}")
        if self.radial_range is not None:
            lo, hi = (float(v) for v in self.radial_range)
            if not hi > lo:
                raise DataError(f"radial_range: expected (min, max) with max > min, found {self.radial_range!r}")
            object.__setattr__(self, "radial_range", (lo, hi))
        object.__setattr__(self, "bins", int(self.bins))

    def to_dict(self) -> dict:
        return asdict(self)


def _pixels_by_frames(f):
    """``(pixels, n)`` float32, C-ordered, from frames ``(n, ny, nx)`` in one fused cast +
    transpose (the layout a CSR × dense product reads fastest)."""
    x = f.reshape(f.shape[0], -1)
    out = np.empty((x.shape[1], x.shape[0]), np.float32)
    np.copyto(out, x.T, casting="unsafe")
    return out


def _default_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Integrator:
    """A pyFAI geometry with its corrections and settings: frames in, 1-D patterns out.

    Parameters
    ----------
    ai : pyFAI AzimuthalIntegrator
        From :func:`~xrdwidgets.integrate.calibration.load_poni`.
    frame_shape : (ny, nx)
        Frame shape, checked against the detector.
    options : IntegrationOptions, optional
    mask, dark, flat : array, path or None
        Read by :func:`~xrdwidgets.integrate.calibration.load_image` and checked against
        ``frame_shape``; mask ``True``/non-zero = pixel excluded.

    Attributes
    ----------
    radial : numpy.ndarray (bins,)
        Bin centres in the unit's units (deg or 1/Å).
    """

    def __init__(self, ai, frame_shape, options: IntegrationOptions | None = None, *, mask=None,
                 dark=None, flat=None):
        self.ai = ai
        self.frame_shape = tuple(int(v) for v in frame_shape)
        check_shape(ai, self.frame_shape)
        self.options = opts = options or IntegrationOptions()
        self.mask = None if mask is None else load_image(mask, "mask", self.frame_shape)
        self.dark = None if dark is None else load_image(dark, "dark", self.frame_shape)
        self.flat = None if flat is None else load_image(flat, "flat", self.frame_shape)
        self._method = (opts.split, "csr", "cython")
        self._kw = dict(unit=UNITS[opts.unit][0], correctSolidAngle=opts.solid_angle,
                        polarization_factor=opts.polarization_factor, mask=self.mask, dark=self.dark,
                        flat=self.flat, radial_range=opts.radial_range)
        probe = ai.integrate1d_ng(np.zeros(self.frame_shape, np.float32), opts.bins, method=self._method,
                                  **self._kw)
        self.radial = np.asarray(probe.radial, float)
        self._norm = np.asarray(probe.sum_normalization, np.float64)
        self._csr = None
        self._csr_t = None
        self._torch = None
        self.engine = opts.engine
        if self.engine == "auto":
            cuda = (str(opts.device).startswith("cuda") if opts.device is not None
                    else _default_device() == "cuda")
            self.engine = "torch" if cuda else "scipy"
        if opts.method == "mean":
            # export now: pyFAI replaces the engine of this method when the same integrator is
            # later used with other bins, mask or range
            self.csr_matrix()

    # ------------------------------------------------------------------ CSR export
    def csr_matrix(self):
        """pyFAI's pixel-to-bin matrix, a ``scipy.sparse.csr_matrix`` (bins × pixels, float32)."""
        if self._csr is None:
            import scipy.sparse as sp

            eng = None
            for key, val in self.ai.engines.items():
                if getattr(key, "split_lower", None) == self._method[0] and getattr(key, "dim", 1) == 1 \
                        and getattr(key, "algo_lower", None) == "csr":
                    eng = val.engine
            if eng is None:
                raise DataError(f"pyFAI kept no 1-D CSR engine for method {self._method}; cannot export "
                                "its pixel-to-bin matrix (use engine='pyfai')")
            n_bins, n_pix = int(eng.output_size), int(eng.input_size)
            if n_bins != self.options.bins or n_pix != int(np.prod(self.frame_shape)):
                raise DataError(f"pyFAI engine shape {(n_bins, n_pix)} does not fit bins × pixels "
                                f"{(self.options.bins, int(np.prod(self.frame_shape)))}")
            self._csr = sp.csr_matrix((np.asarray(eng.data, np.float32), np.asarray(eng.indices, np.int32),
                                       np.asarray(eng.indptr, np.int32)), shape=(n_bins, n_pix))
            self._dark_term = None if self.dark is None else self._csr @ self.dark.ravel().astype(np.float64)
            valid = self._norm > 0
            self._inv_norm = np.where(valid, 1.0 / np.where(valid, self._norm, 1.0), 0.0)
        return self._csr

    def _csr_transposed(self):
        """``Cᵀ`` (pixels × bins) as CSR, made once."""
        if self._csr_t is None:
            self._csr_t = self.csr_matrix().T.tocsr()
        return self._csr_t

    def _torch_csr(self):
        import torch

        if self._torch is None:
            c = self.csr_matrix()
            dev = torch.device(self.options.device or _default_device())
            with warnings.catch_warnings():   # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                mat = torch.sparse_csr_tensor(torch.from_numpy(c.indptr.astype(np.int64)),
                                              torch.from_numpy(c.indices.astype(np.int64)),
                                              torch.from_numpy(c.data), size=c.shape, device=dev,
                                              check_invariants=False)
            inv = torch.from_numpy(self._inv_norm.astype(np.float32)).to(dev)
            dark = None if self._dark_term is None else torch.from_numpy(self._dark_term.astype(np.float32)).to(dev)
            self._torch = (mat, inv, dark, dev)
        return self._torch

    # ------------------------------------------------------------------ integration
    def _check(self, frames):
        f = np.asarray(frames)
        if f.ndim == 2:
            f = f[None]
        if f.ndim != 3 or f.shape[1:] != self.frame_shape:
            raise DataError(f"frames: expected (n, {self.frame_shape[0]}, {self.frame_shape[1]}), "
                            f"found shape {np.shape(frames)}")
        return f

    def integrate(self, frames, *, engine: str | None = None) -> np.ndarray:
        """Patterns of a batch of frames.

        Parameters
        ----------
        frames : array (n, ny, nx) or (ny, nx)
            Raw frames (any numeric dtype).
        engine : str, optional
            Override the ``"mean"`` engine.

        Returns
        -------
        numpy.ndarray (n, bins), float32
            Intensity per bin (counts per pixel of normal incidence); empty bins are 0.
        """
        f = self._check(frames)
        opts = self.options
        if opts.method != "mean":
            return np.stack([self._one(fr) for fr in f]).astype(np.float32)
        engine = engine or self.engine
        if engine == "pyfai":
            return np.stack([self._one(fr) for fr in f]).astype(np.float32)
        if engine == "scipy":
            # frames (n, pixels) @ Cᵀ (pixels × bins, CSR): reads each frame row in place and
            # needs only the float32 cast, no transposed copy (1.0 ms/frame less than C @ Fᵀ
            # at 1000 × 1000 px, 32 frames; same sums)
            x = f.reshape(f.shape[0], -1).astype(np.float32, copy=False)     # (n, pixels)
            num = np.asarray(x @ self._csr_transposed(), np.float64)         # (n, bins)
            if self._dark_term is not None:
                num -= self._dark_term[None, :]
            return (num * self._inv_norm[None, :]).astype(np.float32)
        if engine == "torch":
            import torch

            mat, inv, dark, dev = self._torch_csr()
            if dev.type == "cpu":
                x = torch.from_numpy(_pixels_by_frames(f))
            else:   # cast on the device: 4× less to copy for 8/16-bit frames
                x = torch.from_numpy(np.ascontiguousarray(f.reshape(f.shape[0], -1))).to(dev)
                x = x.to(torch.float32).T.contiguous()
            num = mat @ x                                   # (bins, n)
            if dark is not None:
                num = num - dark[:, None]
            return (num * inv[:, None]).T.cpu().numpy()
        raise DataError(f"engine: expected one of {ENGINES[1:]}, found {engine!r}")

    def _one(self, frame):
        opts = self.options
        data = np.asarray(frame, np.float32)
        if opts.method == "mean":
            r = self.ai.integrate1d_ng(data, opts.bins, method=self._method, **self._kw)
        elif opts.method == "trimmed":
            r = self.ai.medfilt1d_ng(data, opts.bins, method=("full", "csr", "cython"),
                                     percentile=(opts.trim, 100.0 - opts.trim), **self._kw)
        else:
            r = self.ai.sigma_clip_ng(data, opts.bins, method=("no", "csr", "cython"), thres=opts.sigma,
                                      error_model="azimuthal", **self._kw)
        return np.asarray(r.intensity)

    def describe(self) -> dict:
        """JSON-friendly record of the settings and corrections (for provenance)."""
        d = self.options.to_dict()
        d.update(engine_used=self.engine, pyfai_method=list(self._method), mask=self.mask is not None,
                 dark=self.dark is not None, flat=self.flat is not None)
        return d
