"""PeakFitCNN: self-supervised peak fitting of a reconstructed volume by a small CNN.

Instead of fitting every pixel's pattern on its own, a convolutional network predicts all the
parameter maps at once, and its weights are fitted so that the patterns the peak model makes
from those maps match the data (the *self-supervised* loss: no labelled training data). The
network shares information between neighbouring pixels, which steadies the fit of noisy
patterns (Vamvakeros et al., nDTomo's ``PeakFitCNN``).

Architecture (:class:`~xrdwidgets.analysis.cnn.PeakFitCNN`)
    input: the selected channels of the volume, normalised to a maximum of 1 and averaged down
    ``downsample`` (4) times in ``y`` and ``x`` → three blocks of (3×3 convolution with
    ``filters`` (32) filters, normalisation, ReLU), the third after a bilinear up-sampling back
    to the full ``(y, x)`` size → 3×3 convolution to one channel per parameter → sigmoid. The
    sigmoid output ``u ∈ (0, 1)`` is a *normalised* parameter map; ``lower + (upper − lower)·u``
    gives the parameter in its units (the bounds:
    :func:`~xrdwidgets.analysis.fitting.finite_bounds`), so every parameter stays within the
    user's bounds.

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

The network lives in :mod:`~xrdwidgets.analysis.cnn`; the parameter space, channel selection,
maps and checkpoint checks shared with :mod:`xrdwidgets.analysis.dlsr` in
:mod:`~xrdwidgets.analysis.selfsupervised`; the bounds are
:func:`~xrdwidgets.analysis.fitting.finite_bounds`.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import xarray as xr

from .. import data as _data
from ..base.errors import DataError, InputError, InputTypeError
from ..base.progress import run_to_end
from ..ops.projector import default_device
from ..recon import driver as _drv
from .cnn import NORMS, CNNGenerator, build_cnn, downsample
from .fitting import finite_bounds
from .peaks import PeakModel
from .selfsupervised import ParamSpace, check_common, check_resume, content_hash, maps_dataset, select_channels

log = logging.getLogger(__name__)

__all__ = ["iterate_peakfitcnn", "peakfitcnn"]

#: Key of this module's information in a training checkpoint.
_CKPT_KEY = "peakfitcnn"


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
        Parameter bounds (:func:`~xrdwidgets.analysis.fitting.finite_bounds`); the sigmoid output is
        mapped into them. Narrow, physically sensible bounds (positions and FWHM above all) speed up
        and steady the fit.
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
        raise InputTypeError(f"{caller}: model must be a PeakModel, found {type(model).__name__}")
    da = _data.validate_volume(_data.as_dataarray(volume, "volume"), name="volume")
    extra = [d for d in da.dims if d in _data.EXTRA_DIMS]
    if extra:
        raise DataError(f"{caller}: expected a single volume (y, x, spectral), found extra dims {extra}; "
                         f"select one, e.g. volume.isel({extra[0]}=0)")
    cfg = check_common(caller, epochs=epochs, lr=lr, seed=seed, preview_every=preview_every,
                       checkpoint_every=checkpoint_every, patience=patience)
    patch = _drv.check_int(caller, "patch", patch)
    n_patches = _drv.check_int(caller, "n_patches", n_patches)
    filters = _drv.check_int(caller, "filters", filters)
    factor = _drv.check_int(caller, "downsample_factor", downsample_factor)
    min_lr = _drv.check_float(caller, "min_lr", min_lr, minimum=0.0)
    if norm not in NORMS:
        raise InputError(f"{caller}: norm must be one of {NORMS}, found {norm!r}")
    da, sdim, xs = select_channels(da, tth_range, caller=caller, model=model)
    vol = np.asarray(da.values, dtype=np.float64)
    ny, nx, C = vol.shape
    patch = min(patch, ny, nx)
    lower, upper = finite_bounds(model, xs, vol, bounds, func=caller)
    dev = torch.device(device) if device is not None else default_device()
    info = {"shape": [ny, nx, C], "params": model.param_names, "profile": model.profile,
            "background": model.background, "lower": lower.tolist(), "upper": upper.tolist(),
            "tth": [float(xs[0]), float(xs[-1])], "patch": patch, "n_patches": n_patches, "filters": filters,
            "downsample": factor, "norm": norm, "data_hash": content_hash(vol)}
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
    gen_model = CNNGenerator(cnn, downsample(data, factor), (ny, nx))
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
