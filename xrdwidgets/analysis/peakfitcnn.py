"""PeakFitCNN: self-supervised peak fitting of a reconstructed volume by a small CNN.

Instead of fitting every pixel's pattern on its own, a convolutional network predicts all the
parameter maps at once, and its weights are fitted so that the patterns the peak model makes
from those maps match the data (the *self-supervised* loss: no labelled training data). The
network shares information between neighbouring pixels, which steadies the fit of noisy
patterns (Vamvakeros et al., nDTomo's ``PeakFitCNN``).

Architecture (:class:`PeakFitCNN`)
    input: the selected channels of the volume, normalised to a maximum of 1 and averaged down
    ``downsample`` (4) times in ``y`` and ``x`` → three blocks of (3×3 convolution with
    ``filters`` (32) filters, normalisation, ReLU), the third after a bilinear up-sampling back
    to the full ``(y, x)`` size → 3×3 convolution to one channel per parameter → sigmoid. The
    sigmoid output ``u ∈ (0, 1)`` is a *normalised* parameter map; ``lower + (upper − lower)·u``
    gives the parameter in its units (the bounds: :func:`resolve_bounds`), so every parameter
    stays within the user's bounds.

Loss
    At every step ``n_patches`` random ``patch × patch`` windows of the maps are drawn (windows
    touching the data's support only); the peak model (:meth:`PeakModel.evaluate
    <xrdwidgets.analysis.peaks.PeakModel.evaluate>`) regenerates their patterns and the loss is
    the RMSE against the data in the same windows (in units of the volume's maximum). The CNN
    itself sees the whole (down-sampled) volume at every step, so its normalisation statistics
    are the same in training and inference.

Training: :func:`xrdwidgets.recon.training.train` (Adam, learning rate halved after ``patience``
steps without improvement, seeds, checkpoints in ``metrics["checkpoint"]`` and resume with
``checkpoint=``). One step = one epoch.

Axis order: volumes ``(y, x, spectral)``; the maps come back as an :class:`xarray.Dataset` of
``(y, x)`` variables named as :attr:`PeakModel.param_names` (``area_0``, ``position_0``,
``fwhm_0``, ``eta_0``, ``bg_0``, …) plus ``residual`` (RMS of data − model per pixel). Positions
and FWHM are in the units of the spectral coordinate (degrees 2θ for ``tth``), areas in data
units × spectral units.

The helpers :func:`resolve_bounds`, :class:`ParamSpace`, :func:`select_channels` and
:func:`maps_dataset` are shared with :mod:`xrdwidgets.analysis.dlsr`.
"""
from __future__ import annotations

import hashlib
import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from .. import data as _data
from ..ops.projector import default_device
from ..recon import driver as _drv
from ..base.progress import run_to_end
from .peaks import PeakModel

log = logging.getLogger(__name__)

__all__ = [
    "PeakFitCNN", "ParamSpace", "resolve_bounds", "select_channels", "maps_dataset",
    "downsample", "iterate_peakfitcnn", "peakfitcnn", "NORMS",
]

#: Normalisation layers of :class:`PeakFitCNN`.
NORMS = ("instance", "group", "none")
#: Key of this module's information in a training checkpoint.
_CKPT_KEY = "peakfitcnn"


# ============================================================================ network
def _norm(kind: str, filters: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(filters, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, filters), filters)
    return nn.Identity()


class PeakFitCNN(nn.Module):
    """Three convolutional blocks that turn a down-sampled volume into normalised parameter maps.

    Parameters
    ----------
    n_in : int
        Input channels (the spectral channels of the volume).
    n_out : int
        Output channels (the number of peak-model parameters).
    filters : int
        Filters of every block (32).
    factor : int
        Up-sampling factor of the third block (4); the input is the volume averaged down by it.
    norm : {"instance", "group", "none"}
        Normalisation of each block.

    Notes
    -----
    ``forward(x, size=None)``: ``x`` is ``(batch, n_in, h, w)``; the output is
    ``(batch, n_out, H, W)`` in (0, 1), with ``(H, W) = size`` or ``(factor·h, factor·w)``.
    """

    def __init__(self, n_in: int, n_out: int, *, filters: int = 32, factor: int = 4, norm: str = "instance"):
        super().__init__()
        n_in = _drv.check_int("PeakFitCNN", "n_in", n_in)
        n_out = _drv.check_int("PeakFitCNN", "n_out", n_out)
        filters = _drv.check_int("PeakFitCNN", "filters", filters)
        self.factor = _drv.check_int("PeakFitCNN", "factor", factor)
        if norm not in NORMS:
            raise ValueError(f"PeakFitCNN: norm must be one of {NORMS}, found {norm!r}")
        self.n_in, self.n_out, self.filters, self.norm = n_in, n_out, filters, norm

        def block(cin):
            return nn.Sequential(nn.Conv2d(cin, filters, 3, padding=1), _norm(norm, filters), nn.ReLU())

        self.block1 = block(n_in)
        self.block2 = block(filters)
        self.block3 = block(filters)  # after the up-sampling
        self.head = nn.Conv2d(filters, n_out, 3, padding=1)

    def forward(self, x: torch.Tensor, size=None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.n_in:
            raise ValueError(f"PeakFitCNN: expected input (batch, {self.n_in}, h, w), found {tuple(x.shape)}")
        h = self.block2(self.block1(x))
        if size is None:
            size = (h.shape[-2] * self.factor, h.shape[-1] * self.factor)
        h = F.interpolate(h, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.head(self.block3(h)))

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, n_out={self.n_out}, filters={self.filters}, factor={self.factor}, norm={self.norm!r}"


def downsample(volume: torch.Tensor, factor: int) -> torch.Tensor:
    """Average a volume ``(y, x, C)`` down ``factor`` times in ``y`` and ``x`` → ``(1, C, h, w)``.

    ``h = ceil(y / factor)`` (adaptive average pooling: sizes need not be multiples of ``factor``).
    """
    ny, nx = volume.shape[:2]
    t = volume.permute(2, 0, 1)[None]
    return F.adaptive_avg_pool2d(t, (math.ceil(ny / factor), math.ceil(nx / factor)))


def build_cnn(n_in: int, n_out: int, *, filters: int, factor: int, norm: str, seed, device) -> PeakFitCNN:
    """A :class:`PeakFitCNN` with weights drawn on the CPU from ``seed`` (caller's RNG untouched)."""
    if seed is None:
        return PeakFitCNN(n_in, n_out, filters=filters, factor=factor, norm=norm).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = PeakFitCNN(n_in, n_out, filters=filters, factor=factor, norm=norm)
    return net.to(device)


# ============================================================================ parameters
def resolve_bounds(model: PeakModel, x, data=None, bounds=None, *, caller: str = "resolve_bounds"):
    """Finite box bounds ``(lower, upper)`` of every parameter (numpy float64 ``(n_params,)``).

    Parameters
    ----------
    model : PeakModel
    x : array (n_channels,)
        The spectral axis of the fitted range.
    data : array (..., n_channels), optional
        Patterns used for the data-derived defaults.
    bounds : dict or (lower, upper), optional
        As :func:`xrdwidgets.analysis.fitting.resolve_bounds`: ``{name: (lo, hi)}`` with names
        from ``model.param_names`` (``"position_0"``) or a base name (``"position"``: every peak),
        ``None`` in a pair keeping that default; or two sequences of ``n_params`` values.
        ``lo == hi`` fixes a parameter.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)

    Notes
    -----
    Defaults: :meth:`PeakModel.default_bounds` (position within ``x``, FWHM from half a channel
    step to the width of ``x``, η in [0, 1]), with the bounds it leaves open closed from the data
    (a sigmoid needs finite ones): area up to twice the largest integral of a pattern's positive
    part, the constant background in ``[−0.1·m, m]`` and higher background terms in ``[−m, m]``
    (``m`` = largest ``|data|``).
    """
    from .fitting import resolve_bounds as _fit_bounds

    if not isinstance(model, PeakModel):
        raise ValueError(f"{caller}: model must be a PeakModel, found {type(model).__name__}")
    x = np.asarray(x, dtype=np.float64).ravel()
    lo, hi = _fit_bounds(model, x, None, bounds, func=caller)
    lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    step = float(np.min(np.abs(np.diff(x)))) if x.size > 1 else 1.0
    m, integral = 1.0, step
    if data is not None:
        d = np.asarray(data, dtype=np.float64).reshape(-1, x.size)
        d = d[np.isfinite(d).all(-1)]
        if d.size:
            m = float(np.abs(d).max()) or 1.0
            integral = float(np.clip(d, 0, None).sum(-1).max() * step) or m * step
    for i, name in enumerate(model.param_names):
        base, k = name.rsplit("_", 1)
        if base == "area":
            lo[i] = lo[i] if np.isfinite(lo[i]) else 0.0
            hi[i] = hi[i] if np.isfinite(hi[i]) else 2.0 * integral
        elif base == "bg":
            d_lo, d_hi = (-0.1 * m, m) if k == "0" else (-m, m)
            lo[i] = lo[i] if np.isfinite(lo[i]) else d_lo
            hi[i] = hi[i] if np.isfinite(hi[i]) else max(d_hi, lo[i])
    bad = [f"{n}: [{a!r}, {b!r}]" for n, a, b in zip(model.param_names, lo, hi)
           if not (np.isfinite(a) and np.isfinite(b) and a <= b)]
    if bad:
        raise ValueError(f"{caller}: bounds must be finite with lower <= upper; found {', '.join(bad)}")
    return lo, hi


class ParamSpace:
    """Maps between normalised parameters ``u ∈ [0, 1]`` and the peak model's parameters.

    Positions are handled relative to the middle ``c`` of the spectral axis (``x − c`` and
    ``position − c``), so float32 keeps their precision whatever the axis' offset; the background
    is unchanged by the shift (its abscissa is scaled over the axis).

    Parameters
    ----------
    model : PeakModel
    x : array (n_channels,)
        Spectral axis of the fitted range.
    lower, upper : array (n_params,)
        Finite bounds (:func:`resolve_bounds`).
    device : torch device
    """

    def __init__(self, model: PeakModel, x, lower, upper, device):
        self.model = model
        self.x = np.asarray(x, dtype=np.float64)
        self.centre = 0.5 * (self.x[0] + self.x[-1])
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.is_pos = np.array([n.startswith("position_") for n in model.param_names])
        shift = np.where(self.is_pos, self.centre, 0.0)
        self._shift = shift
        self.device = torch.device(device)
        self.x_rel = torch.as_tensor(self.x - self.centre, dtype=torch.float32, device=self.device)
        self.lo_rel = torch.as_tensor(self.lower - shift, dtype=torch.float32, device=self.device)
        self.span = torch.as_tensor(self.upper - self.lower, dtype=torch.float32, device=self.device)

    def params(self, u: torch.Tensor) -> torch.Tensor:
        """Normalised ``u (..., n_params)`` → model parameters (positions relative to the centre)."""
        return self.lo_rel + self.span * u

    def evaluate(self, u: torch.Tensor) -> torch.Tensor:
        """Patterns ``(..., n_channels)`` of normalised parameters ``u (..., n_params)``."""
        return self.model.evaluate(self.x_rel, self.params(u))

    def physical(self, u) -> np.ndarray:
        """Normalised ``u`` → parameters in their units (float64 numpy, absolute positions)."""
        u = u.detach().double().cpu().numpy() if isinstance(u, torch.Tensor) else np.asarray(u, np.float64)
        return self.lower + (self.upper - self.lower) * u

    def normalised(self, params, eps: float = 1e-4) -> np.ndarray:
        """Parameters in their units → ``u``, clipped to ``[eps, 1 − eps]`` (float64 numpy)."""
        p = np.asarray(params, dtype=np.float64)
        return np.clip((p - self.lower) / (self.upper - self.lower), eps, 1.0 - eps)


def select_channels(da: xr.DataArray, tth_range, *, caller: str, model: PeakModel):
    """Restrict ``da`` to the channels with ``min ≤ coordinate ≤ max`` of its spectral axis.

    Returns ``(selected DataArray, spectral dim name, spectral values float64)``; a ValueError
    (:class:`~xrdwidgets.data.DataError`) when the range is malformed, lies outside the axis or
    keeps no more channels than the model has parameters.
    """
    from .fitting import fit_channels

    sdim = _data.spectral_dim(da)
    coord = np.asarray(da[sdim].values, dtype=np.float64)
    i0, i1 = fit_channels(coord, tth_range, func=caller, min_channels=model.n_params + 1,
                          units=str(da[sdim].attrs.get("units", "")))
    da = da.isel({sdim: slice(i0, i1)})
    return da, sdim, coord[i0:i1].copy()


def maps_dataset(params: np.ndarray, model: PeakModel, y, x, *, spectral: np.ndarray, spectral_dim: str,
                 spectral_units: str, data_units: str, lower, upper, producer: str, parameters: dict,
                 residual: np.ndarray | None = None, rwp: np.ndarray | None = None,
                 attrs: dict | None = None) -> xr.Dataset:
    """Parameter maps ``(y, x, n_params)`` as a Dataset of ``(y, x)`` variables.

    Variables are named by ``model.param_names`` (as :func:`xrdwidgets.analysis.fitting.fit_volume`
    names them) with ``units``/``long_name``; ``residual`` (RMS of data − model, data units) and
    ``rwp`` (√(Σ(y − f)² / Σy²), a fraction) are added when given. Attrs: ``model``,
    ``param_names``, ``fit_dim``, ``fit_range``, ``fit_range_units``, ``lower_bounds``,
    ``upper_bounds`` (as the fitting module's) and provenance.
    """
    units = model.param_units(spectral_units, data_units)
    long = {"area": "integrated intensity", "position": f"peak position ({spectral_dim})",
            "fwhm": f"FWHM ({spectral_dim})", "eta": "Lorentzian fraction η", "bg": "background coefficient"}
    coords = {"y": y, "x": x}
    ds = xr.Dataset(coords=coords)
    for i, name in enumerate(model.param_names):
        base, k = name.rsplit("_", 1)
        la = f"{long[base]} {'t^' + k if base == 'bg' else 'of peak ' + k}"
        ds[name] = xr.DataArray(np.asarray(params[..., i], np.float64), dims=("y", "x"),
                                attrs={"units": units[name], "long_name": la})
    if residual is not None:
        ds["residual"] = xr.DataArray(np.asarray(residual, np.float64), dims=("y", "x"),
                                      attrs={"units": data_units, "long_name": "RMS residual (data − model)"})
    if rwp is not None:
        ds["rwp"] = xr.DataArray(np.asarray(rwp, np.float64), dims=("y", "x"),
                                 attrs={"units": "1", "long_name": "profile R factor Rwp (fraction)"})
    spectral = np.asarray(spectral, np.float64)
    ds.attrs.update({
        "model": repr(model), "param_names": list(model.param_names), "fit_dim": spectral_dim,
        "fit_range": [float(spectral.min()), float(spectral.max())], "fit_range_units": spectral_units,
        "lower_bounds": [float(v) for v in lower], "upper_bounds": [float(v) for v in upper],
    })
    ds.attrs.update(attrs or {})
    ds.attrs.update(_data.provenance(producer, parameters))
    return ds


def _hash(*arrays) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    return h.hexdigest()


def check_resume(caller: str, checkpoint, key: str, info: dict, ignore=()):
    """Refuse a training checkpoint made for another problem (``checkpoint[key] != info``).

    Keys in ``ignore`` are not compared (checked later by the caller).
    """
    if checkpoint is None:
        return
    if not isinstance(checkpoint, dict):
        raise TypeError(f"{caller}: checkpoint must be a dict (e.g. torch.load(path)) or None, "
                        f"found {type(checkpoint).__name__}")
    made = checkpoint.get(key)
    if made is None:
        raise ValueError(f"{caller}: checkpoint was not made by {caller} (no {key!r} entry)")
    made = {k: v for k, v in made.items() if k not in ignore} if isinstance(made, dict) else {"info": made}
    info = {k: v for k, v in info.items() if k not in ignore}
    if made != info:
        diffs = [f"{k}={made.get(k, '<unset>')!r} in the checkpoint, {info.get(k, '<unset>')!r} now"
                 for k in sorted(set(made) | set(info)) if made.get(k, "<unset>") != info.get(k, "<unset>")]
        raise ValueError(f"{caller}: the checkpoint belongs to another fit ({'; '.join(diffs)}); resume with "
                         "the data and parameters it was made with, or start afresh (checkpoint=None)")


def check_common(caller, *, epochs, lr, seed, preview_every, checkpoint_every, patience):
    """Checked training arguments as a dict (:func:`xrdwidgets.recon.training.training_config`)."""
    from ..recon.training import training_config

    return training_config(caller, epochs=epochs, lr=lr, seed=seed, preview_every=preview_every,
                           checkpoint_every=checkpoint_every, patience=patience)


class _CNNGenerator(nn.Module):
    """No-input generator for :func:`~xrdwidgets.recon.training.train`: maps ``(y, x, n_params)``."""

    def __init__(self, cnn: PeakFitCNN, inp: torch.Tensor, size):
        super().__init__()
        self.cnn = cnn
        self.register_buffer("inp", inp, persistent=False)  # the data: not part of the checkpoint
        self.size = tuple(size)

    def forward(self):
        return self.cnn(self.inp, self.size)[0].permute(1, 2, 0)


# ============================================================================ PeakFitCNN fit
def _patch_origins(support: np.ndarray, patch: int) -> np.ndarray:
    """Top-left corners ``(K, 2)`` of the ``patch × patch`` windows that touch ``support``."""
    ny, nx = support.shape
    s = np.pad(support.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    r = np.arange(ny - patch + 1)[:, None]
    c = np.arange(nx - patch + 1)[None, :]
    count = s[r + patch, c + patch] - s[r, c + patch] - s[r + patch, c] + s[r, c]
    origins = np.argwhere(count > 0)
    if origins.size == 0:  # no signal at all: every window
        origins = np.argwhere(np.ones_like(count, bool))
    return origins


def iterate_peakfitcnn(volume, model: PeakModel, *, tth_range=None, bounds=None, epochs: int = 2000,
                       patch: int = 16, n_patches: int = 8, lr: float = 2e-3, seed: int | None = 0,
                       device=None, checkpoint: dict | None = None, checkpoint_every: int = 0,
                       preview_every: int = 100, filters: int = 32, downsample_factor: int = 4,
                       norm: str = "instance", patience: int | None = None, min_lr: float = 1e-6):
    """Fit a peak model to every pixel of a volume with PeakFitCNN, as a generator of Progress.

    The arguments are checked when this is called (not at the first ``next()``).

    Parameters
    ----------
    volume : xarray.DataArray or Dataset
        Reconstructed volume ``(y, x, spectral)`` in any dim order (e.g. the FBP of a stack);
        a Dataset gives its ``volume`` variable.
    model : PeakModel
        Peaks and background to fit, e.g. ``PeakModel(1, "pseudo_voigt", "linear")``.
    tth_range : (float, float), optional
        Channels of the spectral axis (any of tth/q/d/energy, in its units) to fit; default all.
    bounds : dict or (lower, upper), optional
        Parameter bounds (:func:`resolve_bounds`); the sigmoid output is mapped into them. Narrow,
        physically sensible bounds (positions and FWHM above all) speed up and steady the fit.
    epochs : int
        Optimisation steps (one random batch of patches each).
    patch : int
        Size (pixels) of the square windows the loss is computed on (capped at the image size).
    n_patches : int
        Windows per step.
    lr : float
        Adam learning rate.
    seed : int or None
        Seeds the weights and the window draws (the same seed gives the same result on the CPU).
    device : optional
        torch device (default CUDA when present).
    checkpoint : dict, optional
        A checkpoint from ``metrics["checkpoint"]`` of an earlier run on the same data and
        parameters (``torch.load`` of a saved one): training continues from it.
    checkpoint_every : int
        Every this many steps an event carries ``metrics["checkpoint"]`` (0: never).
    preview_every : int
        Preview (the first peak's area map, ``(y, x)``) every this many steps and at the last.
    filters, downsample_factor, norm :
        Network: filters per block, down-sampling of the input (and up-sampling factor), and the
        normalisation (``"instance"``, ``"group"``, ``"none"``).
    patience : int, optional
        Steps without improvement before the learning rate is halved (default ``epochs // 4``).
    min_lr : float
        Training stops when the learning rate falls below it.

    Yields
    ------
    Progress
        One per step: ``loss`` = RMSE of the step's windows (units of the volume's maximum);
        ``metrics``: ``epoch``, ``lr``, ``best_loss``, ``checkpoint`` (every ``checkpoint_every``).

    Returns
    -------
    xarray.Dataset
        Maps ``(y, x)`` named by ``model.param_names`` and ``residual`` (RMS of data − model per
        pixel, data units); attrs: ``model``, ``bounds_lower``/``bounds_upper``, ``loss``,
        provenance.
    """
    caller = "iterate_peakfitcnn"
    if not isinstance(model, PeakModel):
        raise ValueError(f"{caller}: model must be a PeakModel, found {type(model).__name__}")
    da = _data.validate_volume(_data.as_dataarray(volume, "volume"), name="volume")
    extra = [d for d in da.dims if d in _data.EXTRA_DIMS]
    if extra:
        raise ValueError(f"{caller}: expected a single volume (y, x, spectral), found extra dims {extra}; "
                         f"select one, e.g. volume.isel({extra[0]}=0)")
    cfg = check_common(caller, epochs=epochs, lr=lr, seed=seed, preview_every=preview_every,
                       checkpoint_every=checkpoint_every, patience=patience)
    patch = _drv.check_int(caller, "patch", patch)
    n_patches = _drv.check_int(caller, "n_patches", n_patches)
    filters = _drv.check_int(caller, "filters", filters)
    factor = _drv.check_int(caller, "downsample_factor", downsample_factor)
    min_lr = _drv.check_float(caller, "min_lr", min_lr, minimum=0.0)
    if norm not in NORMS:
        raise ValueError(f"{caller}: norm must be one of {NORMS}, found {norm!r}")
    da, sdim, xs = select_channels(da, tth_range, caller=caller, model=model)
    vol = np.asarray(da.values, dtype=np.float64)
    ny, nx, C = vol.shape
    patch = min(patch, ny, nx)
    lower, upper = resolve_bounds(model, xs, vol, bounds, caller=caller)
    dev = torch.device(device) if device is not None else default_device()
    info = {"shape": [ny, nx, C], "params": model.param_names, "profile": model.profile,
            "background": model.background, "lower": lower.tolist(), "upper": upper.tolist(),
            "tth": [float(xs[0]), float(xs[-1])], "patch": patch, "n_patches": n_patches, "filters": filters,
            "downsample": factor, "norm": norm, "data_hash": _hash(vol)}
    check_resume(caller, checkpoint, _CKPT_KEY, info)
    return _run_peakfitcnn(da, sdim, xs, vol, model, lower, upper, cfg, patch, n_patches, filters, factor,
                           norm, min_lr, dev, checkpoint, info)


def _run_peakfitcnn(da, sdim, xs, vol, model, lower, upper, cfg, patch, n_patches, filters, factor, norm,
                    min_lr, dev, checkpoint, info):
    from ..recon.training import train

    ny, nx, C = vol.shape
    scale = float(np.abs(vol).max()) or 1.0
    data = torch.as_tensor(vol / scale, dtype=torch.float32, device=dev)          # (y, x, C)
    space = ParamSpace(model, xs, lower, upper, dev)
    cnn = build_cnn(C, model.n_params, filters=filters, factor=factor, norm=norm, seed=cfg["seed"], device=dev)
    gen_model = _CNNGenerator(cnn, downsample(data, factor), (ny, nx))
    support = np.abs(vol).sum(-1) > 0
    origins = torch.as_tensor(_patch_origins(support, patch), dtype=torch.long)
    ar = torch.arange(patch)
    i_area = model.param_names.index("area_0")

    def loss_fn(u):                                   # u: (y, x, P) normalised maps
        pick = origins[torch.randint(origins.shape[0], (n_patches,))]
        rows = (pick[:, 0:1] + ar)[:, :, None].to(dev)                            # (K, p, 1)
        cols = (pick[:, 1:2] + ar)[:, None, :].to(dev)                            # (K, 1, p)
        pred = space.evaluate(u[rows, cols]) / scale                              # (K, p, p, C)
        return torch.sqrt(torch.mean((pred - data[rows, cols]) ** 2))

    def preview(u):                                   # the first peak's area map (y, x)
        return lower[i_area] + (upper[i_area] - lower[i_area]) * u[..., i_area].detach().double().cpu().numpy()

    patience = cfg["patience"] if cfg["patience"] is not None else max(1, cfg["epochs"] // 4)
    log.debug("peakfitcnn: volume %s, %d channels, model %r, %d steps of %d×%d² windows on %s",
              (ny, nx), C, model, cfg["epochs"], n_patches, patch, dev)
    gen = train(gen_model, loss_fn, lr=cfg["lr"], max_epochs=cfg["epochs"], patience=patience, min_lr=min_lr,
                keep_best=False, preview_every=cfg["preview_every"], preview_fn=preview,
                checkpoint_every=cfg["checkpoint_every"], checkpoint=checkpoint,
                checkpoint_extra={_CKPT_KEY: info}, seed=cfg["seed"])
    result = yield from gen
    with torch.no_grad():
        u = gen_model()
        params = space.physical(u)
        diff = space.evaluate(u) - data * scale
        residual = torch.sqrt(torch.mean(diff ** 2, -1)).double().cpu().numpy()
        ss = torch.sum((data * scale) ** 2, -1).double().cpu().numpy()
        rwp = np.sqrt(np.divide(torch.sum(diff ** 2, -1).double().cpu().numpy(), ss,
                                out=np.full_like(ss, np.nan), where=ss > 0))
    parameters = {"model": repr(model), "tth_range": [float(xs[0]), float(xs[-1])], "epochs": cfg["epochs"],
                  "patch": info["patch"], "n_patches": info["n_patches"], "lr": cfg["lr"], "seed": cfg["seed"],
                  "filters": info["filters"], "downsample": info["downsample"], "norm": info["norm"]}
    attrs = {"loss": float(result.losses[-1]) if result.losses else float("nan"), "epochs_done": result.epochs,
             "device": str(dev)}
    return maps_dataset(params, model, da["y"], da["x"], spectral=xs, spectral_dim=sdim,
                        spectral_units=str(da[sdim].attrs.get("units", "")),
                        data_units=str(da.attrs.get("units", "")), lower=lower, upper=upper,
                        producer="xrdwidgets.analysis.peakfitcnn", parameters=parameters,
                        residual=residual, rwp=rwp, attrs=attrs)


def peakfitcnn(volume, model: PeakModel, **kwargs) -> xr.Dataset:
    """PeakFitCNN run to the end; see :func:`iterate_peakfitcnn`."""
    return run_to_end(iterate_peakfitcnn(volume, model, **kwargs))
