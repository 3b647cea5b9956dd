"""DLSR: peak fitting straight from the sinograms (direct least-squares reconstruction).

Instead of reconstructing every channel and then fitting every pixel's pattern, DLSR fits the
parameter maps so that their forward projection matches the *measured* sinograms::

    maps (y, x, n_params) ──peak model──▶ patterns (y, x, C) ──projector──▶ sinograms (t, θ, C)
                                                                               ▲ compared with
                                                                                 the data

The reconstruction and the fit become one least-squares problem whose unknowns are the few
parameters per pixel rather than the C intensities per pixel, so the peak model regularises the
tomography: DLSR works with far fewer projections than FBP needs (Vamvakeros et al., nDTomo's
DLSR).

Parametrisations
    ``"maps"``: the normalised maps ``u = sigmoid(w)`` are learnable tensors ``w`` (one per pixel
    and parameter). ``"cnn"``: ``u`` is the output of a :class:`~xrdwidgets.analysis.peakfitcnn.
    PeakFitCNN` fed with the FBP of the selected channels (DLSR + PeakFitCNN); its weights are
    first pre-trained (MSE) to the initial maps. Either way ``lower + (upper − lower)·u`` gives the
    parameters within the bounds (:func:`~xrdwidgets.analysis.fitting.finite_bounds`).

Initial maps (``init``)
    ``"fbp_fit"``: FBP of the selected channels, then a pixel-wise fit
    (:func:`xrdwidgets.analysis.fitting.fit_volume`); ``"guess"``: the model's
    :meth:`~xrdwidgets.analysis.peaks.PeakModel.initial_guess` on the FBP (fast, rough); or a
    Dataset of maps (e.g. a :func:`~xrdwidgets.analysis.peakfitcnn.peakfitcnn` result).

Noise and modelling error
    With learnable maps nothing keeps the fit from following the Poisson noise of the sinograms
    and the small differences between the real forward process and the projector: the sinogram
    loss falls below what the true maps reach while the maps drift from them (measured in
    ``benchmarks/bench_selfsupervised_fit.py``: plain DLSR is *less* accurate than FBP + pixel-wise
    fit on noisy data, and gets worse with more epochs). ``tv=`` (a total-variation penalty on the
    normalised maps) limits this; the ``"cnn"`` parametrisation avoids it (the maps must come out
    of one small network) and is the variant to use on noisy data — there it beats FBP +
    pixel-wise fit on every map.

Loss: RMSE between the projection of the model patterns and the measured sinograms, both divided
by the largest measured value (plus ``tv`` × the mean TV of the normalised maps). Only the
channels inside ``tth_range`` go through the projector.
Training: :func:`xrdwidgets.recon.training.train` (Adam, plateau schedule, seeds, checkpoints in
``metrics["checkpoint"]``, resume with ``checkpoint=``); one epoch = one full projection.

Geometry: the stack's, through the shared :class:`~xrdwidgets.ops.projector.ParallelProjector`
built by :func:`xrdwidgets.recon.driver.prepare_stack` (rotation centre at ``(n − 1)/2``, image
restricted to the inscribed circle with ``circle=True``). Axis order: sinograms
``(translation, angle, spectral)``, maps ``(y, x)``; positions and FWHM in the units of the
spectral coordinate; areas in image units (sinogram units per translation step) × spectral units.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import xarray as xr
from torch import nn

from .. import data as _data
from ..recon import driver as _drv
from ..base.errors import DataError, InputError, InputTypeError, StateError
from ..base.progress import run_to_end
from ..recon.fbp import fbp_array
from .cnn import NORMS, CNNGenerator, build_cnn, downsample
from .fitting import finite_bounds
from .peaks import PeakModel
from .selfsupervised import ParamSpace, check_common, check_resume, content_hash, maps_dataset, select_channels

log = logging.getLogger(__name__)

__all__ = ["iterate_dlsr", "dlsr", "PARAMETRISATIONS", "INITS"]

#: Accepted ``parametrisation`` values.
PARAMETRISATIONS = ("maps", "cnn")
#: Named ``init`` values (a Dataset of maps is accepted too).
INITS = ("fbp_fit", "guess")
_CKPT_KEY = "dlsr"


class _MapGenerator(nn.Module):
    """Directly learnable maps: ``sigmoid(w)``, ``w`` of shape ``(y, x, n_params)``."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(logits)

    def forward(self):
        return torch.sigmoid(self.w)


def _init_maps_from(ds, model: PeakModel, n: int, caller: str) -> np.ndarray:
    if not isinstance(ds, xr.Dataset):
        raise InputTypeError(f"{caller}: init must be one of {INITS} or an xarray Dataset of maps "
                         f"(e.g. a peakfitcnn result), found {type(ds).__name__}")
    missing = [p for p in model.param_names if p not in ds.data_vars]
    if missing:
        raise DataError(f"{caller}: init Dataset lacks the maps {missing} (the model's parameters are "
                         f"{model.param_names})")
    out = []
    for p in model.param_names:
        v = ds[p]
        if set(v.dims) != {"y", "x"} or v.sizes["y"] != n or v.sizes["x"] != n:
            raise DataError(f"{caller}: init map {p!r} must have dims (y, x) of size {n} × {n}, found "
                             f"{dict(v.sizes)}")
        out.append(np.asarray(v.transpose("y", "x").values, np.float64))
    return np.stack(out, -1)


def iterate_dlsr(stack, model: PeakModel, *, tth_range=None, bounds=None, parametrisation: str = "maps",
                 epochs: int = 500, lr: float | None = None, seed: int | None = 0, device=None,
                 checkpoint: dict | None = None, checkpoint_every: int = 0, init="fbp_fit",
                 preview_every: int = 50, circle: bool = True, centre_offset: float | None = None,
                 patience: int | None = None, min_lr: float = 1e-6, pretrain_epochs: int = 300,
                 filters: int = 32, downsample_factor: int = 4, norm: str = "instance",
                 fit_options: dict | None = None, tv: float = 0.0):
    """Fit peak-parameter maps directly to a sinogram stack (DLSR), as a generator of Progress.

    The arguments are checked when this is called (not at the first ``next()``).

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack ``(translation, angle, spectral)`` in any dim order (a Dataset gives its
        ``sinogram``); angles in degrees, any set (undersampled scans included).
    model : PeakModel
        Peaks and background of every pixel's pattern.
    tth_range : (float, float), optional
        Channels of the spectral axis to fit (in its units); only these are projected.
    bounds : dict or (lower, upper), optional
        Parameter bounds (:func:`~xrdwidgets.analysis.fitting.finite_bounds`); defaults are
        derived from the FBP of the selected channels.
    parametrisation : {"maps", "cnn"}
        Learnable maps, or a PeakFitCNN that produces them (DLSR + PeakFitCNN).
    epochs : int
        Optimisation steps (one projection of all selected channels each).
    lr : float, optional
        Adam learning rate (default 0.02 for ``"maps"``, 2e-3 for ``"cnn"``).
    seed : int or None
        Seeds the CNN weights and torch's RNG.
    device : optional
        torch device (default CUDA when present).
    checkpoint : dict, optional
        A checkpoint from ``metrics["checkpoint"]`` of an earlier run with the same stack and
        parameters: training continues from it.
    checkpoint_every : int
        Every this many epochs an event carries ``metrics["checkpoint"]`` (0: never).
    init : {"fbp_fit", "guess"} or xarray.Dataset
        Initial maps (see the module notes).
    preview_every : int
        Preview (the first peak's area map) every this many epochs and at the last.
    circle : bool
        Restrict the maps to the inscribed circle (the projector's support).
    centre_offset : float, optional
        Rotation-axis offset in steps (default: the stack's geometry, else 0).
    patience, min_lr :
        Plateau schedule: halve the learning rate after ``patience`` epochs without improvement
        (default ``epochs // 5``); stop below ``min_lr``.
    pretrain_epochs : int
        ``"cnn"`` only: epochs fitting the CNN output to the initial maps first.
    filters, downsample_factor, norm :
        ``"cnn"`` only: the PeakFitCNN's options.
    fit_options : dict, optional
        Extra keyword arguments of :func:`~xrdwidgets.analysis.fitting.fit_volume` for
        ``init="fbp_fit"`` (e.g. ``max_iter``).
    tv : float
        Weight of a total-variation penalty on the normalised maps (0: none, the plain DLSR). The
        plain fit follows the noise and the projector's modelling error into the maps (see the
        module notes); a small weight (about 0.01–0.05 for the ``"maps"`` parametrisation)
        keeps edges and removes most of it.

    Yields
    ------
    Progress
        One per epoch: ``loss`` = sinogram RMSE (units of the largest measured value);
        ``metrics``: ``phase`` (``"pretrain"``/``"train"``), ``epoch``, ``lr``, ``best_loss``,
        ``checkpoint`` (every ``checkpoint_every``); ``preview``: area map.

    Returns
    -------
    xarray.Dataset
        Maps ``(y, x)`` named by ``model.param_names`` (NaN outside the projector's support),
        attrs: ``model``, bounds, ``sinogram_rmse`` (relative to the data's RMS), provenance.
    """
    caller = "iterate_dlsr"
    if not isinstance(model, PeakModel):
        raise InputTypeError(f"{caller}: model must be a PeakModel, found {type(model).__name__}")
    if parametrisation not in PARAMETRISATIONS:
        raise InputError(f"{caller}: parametrisation must be one of {PARAMETRISATIONS}, found {parametrisation!r}")
    if isinstance(init, str) and init not in INITS:
        raise InputError(f"{caller}: init must be one of {INITS} or an xarray Dataset of maps, found {init!r}")
    if not isinstance(init, (str, xr.Dataset)):
        raise InputTypeError(f"{caller}: init must be one of {INITS} or an xarray Dataset of maps, "
                         f"found {type(init).__name__}")
    if norm not in NORMS:
        raise InputError(f"{caller}: norm must be one of {NORMS}, found {norm!r}")
    if fit_options is not None and not isinstance(fit_options, dict):
        raise InputTypeError(f"{caller}: fit_options must be a dict or None, found {type(fit_options).__name__}")
    da = _data.validate_sinogram_stack(_data.as_dataarray(stack, "sinogram"), name="stack")
    extra = [d for d in da.dims if d in _data.EXTRA_DIMS]
    if extra:
        raise DataError(f"{caller}: expected a single sinogram stack (translation, angle, spectral), found "
                         f"extra dims {extra}; select one, e.g. stack.isel({extra[0]}=0)")
    if lr is None:
        lr = 0.02 if parametrisation == "maps" else 2e-3
    cfg = check_common(caller, epochs=epochs, lr=lr, seed=seed, preview_every=preview_every,
                       checkpoint_every=checkpoint_every, patience=patience)
    cfg["min_lr"] = _drv.check_float(caller, "min_lr", min_lr, minimum=0.0)
    cfg["pretrain_epochs"] = _drv.check_int(caller, "pretrain_epochs", pretrain_epochs, minimum=0)
    cfg["filters"] = _drv.check_int(caller, "filters", filters)
    cfg["factor"] = _drv.check_int(caller, "downsample_factor", downsample_factor)
    cfg["norm"] = norm
    cfg["tv"] = _drv.check_float(caller, "tv", tv, minimum=0.0)
    sel, sdim, xs = select_channels(da, tth_range, caller=caller, model=model)
    params = {"model": repr(model), "tth_range": [float(xs[0]), float(xs[-1])], "parametrisation": parametrisation,
              "init": init if isinstance(init, str) else "dataset", "epochs": cfg["epochs"], "lr": cfg["lr"],
              "seed": cfg["seed"], "tv": cfg["tv"]}
    plan = _drv.prepare_stack(sel, caller=caller, producer="xrdwidgets.analysis.dlsr", parameters=params,
                              batch=int(xs.size), circle=circle, centre_offset=centre_offset, device=device)
    op = plan.op
    init_maps = None
    if isinstance(init, xr.Dataset):
        init_maps = _init_maps_from(init, model, op.n, caller)
    sino = np.asarray(plan.stack.values, np.float32)
    info = {"shape": list(sino.shape), "n": op.n, "params": model.param_names, "profile": model.profile,
            "background": model.background, "tth": [float(xs[0]), float(xs[-1])],
            "parametrisation": parametrisation, "circle": bool(circle), "centre_offset": op.centre_offset,
            "tv": cfg["tv"],
            "data_hash": content_hash(sino, op.angles_deg)}
    if parametrisation == "cnn":
        info.update(filters=cfg["filters"], downsample=cfg["factor"], norm=norm)
    check_resume(caller, checkpoint, _CKPT_KEY, info, ignore=("lower", "upper"))
    # build the projector's matrices now (training applies it thousands of times); the FBP
    # below then uses them too (see recon.sd2i)
    op(torch.zeros((op.n, op.n, 1), dtype=torch.float32, device=op.device))
    fbp_np = fbp_array(torch.as_tensor(sino, device=op.device), op.angles_deg, projector=op).double().cpu().numpy()
    support = op.mask if op.mask is not None else np.ones((op.n, op.n), bool)
    lower, upper = finite_bounds(model, xs, fbp_np[support], bounds, func=caller)
    if checkpoint is not None:
        made = checkpoint[_CKPT_KEY]
        if made.get("lower") != lower.tolist() or made.get("upper") != upper.tolist():
            raise StateError(f"{caller}: the checkpoint was made with other bounds (lower {made.get('lower')}, "
                             f"upper {made.get('upper')}; now {lower.tolist()}, {upper.tolist()})")
    info.update(lower=lower.tolist(), upper=upper.tolist())
    return _run_dlsr(plan, sino, fbp_np, support, lower, upper, sdim, xs, model, parametrisation, init, init_maps,
                     cfg, checkpoint, info, params, dict(fit_options or {}))


def _initial_params(init, init_maps, model, space, xs, sdim, fbp_np, support, lower, upper, fit_options):
    """Initial parameters ``(n, n, P)`` (physical units) from ``init``."""
    if init_maps is not None:
        p0 = init_maps
    else:
        guess = model.initial_guess(xs, fbp_np)
        p0 = np.clip(np.asarray(guess, np.float64), lower, upper)
        if init == "fbp_fit":
            from .fitting import fit_volume

            n = fbp_np.shape[0]
            vol = xr.DataArray(fbp_np, dims=("y", "x", sdim),
                               coords={"y": np.arange(n), "x": np.arange(n), sdim: xs})
            opts = {"max_iter": 50, **fit_options}
            fit = fit_volume(vol, model, bounds=(lower, upper), mask=support, **opts)
            fitted = np.stack([np.asarray(fit[p].values, np.float64) for p in model.param_names], -1)
            ok = np.isfinite(fitted).all(-1)
            p0 = np.where(ok[..., None], fitted, p0)
    p0 = np.where(np.isfinite(p0), p0, 0.5 * (lower + upper))
    return space.normalised(p0)


def _run_dlsr(plan, sino_np, fbp_np, support, lower, upper, sdim, xs, model, parametrisation, init, init_maps,
              cfg, checkpoint, info, params, fit_options):
    from ..recon.driver import image_coords
    from ..recon.training import train

    op = plan.op
    dev = op.device
    n = op.n
    sino = torch.as_tensor(sino_np, device=dev)
    space = ParamSpace(model, xs, lower, upper, dev)
    scale = float(sino.abs().max()) or 1.0
    sino_n = sino / scale
    supp_t = torch.as_tensor(support, dtype=torch.float32, device=dev)[..., None]
    need_init = checkpoint is None or (parametrisation == "cnn" and checkpoint.get("phase") == "pretrain")
    u0 = None
    if need_init:
        u0 = _initial_params(init, init_maps, model, space, xs, sdim, fbp_np, support, lower, upper, fit_options)
    P = model.n_params
    target = None
    if parametrisation == "maps":
        w0 = np.zeros((n, n, P)) if u0 is None else np.log(u0 / (1.0 - u0))
        net = _MapGenerator(torch.as_tensor(w0, dtype=torch.float32, device=dev))
        n_pre = 0
    else:
        fmax = float(np.abs(fbp_np).max()) or 1.0
        inp = downsample(torch.as_tensor(fbp_np / fmax, dtype=torch.float32, device=dev), cfg["factor"])
        cnn = build_cnn(int(xs.size), P, filters=cfg["filters"], factor=cfg["factor"], norm=cfg["norm"],
                        seed=cfg["seed"], device=dev)
        net = CNNGenerator(cnn, inp, (n, n))
        n_pre = cfg["pretrain_epochs"]
        target = torch.as_tensor(u0 if u0 is not None else np.full((n, n, P), 0.5), dtype=torch.float32,
                                 device=dev)
    i_area = model.param_names.index("area_0")

    tv = cfg["tv"]
    pair_y = supp_t[1:, :-1] * supp_t[:-1, :-1]                                # both pixels inside
    pair_x = supp_t[:-1, 1:] * supp_t[:-1, :-1]
    n_pairs = float(pair_y.sum()) or 1.0

    def loss_fn(u):
        img = space.evaluate(u) * supp_t                                         # (n, n, C)
        data = torch.sqrt(torch.mean((op(img) / scale - sino_n) ** 2))
        if tv <= 0:
            return data
        dy = (u[1:, :-1] - u[:-1, :-1]) * pair_y
        dx = (u[:-1, 1:] - u[:-1, :-1]) * pair_x
        penalty = torch.sqrt(dy ** 2 + dx ** 2 + 1e-8).sum() / (n_pairs * u.shape[-1])
        return data + tv * penalty, {"data_loss": float(data.detach()), "tv": float(penalty.detach())}

    def preview(u):
        return lower[i_area] + (upper[i_area] - lower[i_area]) * u[..., i_area].detach().double().cpu().numpy()

    patience = cfg["patience"] if cfg["patience"] is not None else max(1, cfg["epochs"] // 5)
    log.debug("dlsr: %s, %d channels, n=%d, %d angles, %s, %d epochs on %s", model, xs.size, n,
              op.angles_deg.size, parametrisation, cfg["epochs"], dev)
    gen = train(net, loss_fn, lr=cfg["lr"], max_epochs=cfg["epochs"], patience=patience, min_lr=cfg["min_lr"],
                keep_best=True, preview_every=cfg["preview_every"], preview_fn=preview,
                checkpoint_every=cfg["checkpoint_every"], checkpoint=checkpoint,
                checkpoint_extra={_CKPT_KEY: info}, seed=cfg["seed"],
                pretrain_target=target if n_pre > 0 else None, pretrain_epochs=n_pre)
    result = yield from gen
    u = result.output
    with torch.no_grad():
        pred = op(space.evaluate(u) * supp_t)
        ref = float(torch.linalg.vector_norm(sino)) or 1.0
        rel = float(torch.linalg.vector_norm(pred - sino)) / ref
    maps = space.physical(u)
    maps[~support] = np.nan
    pos, units = image_coords(plan.stack, n)
    y = xr.DataArray(pos, dims=("y",), attrs={"units": units, "long_name": "y"})
    x = xr.DataArray(pos.copy(), dims=("x",), attrs={"units": units, "long_name": "x"})
    attrs = {"sinogram_rmse": rel, "loss": float(result.best_loss), "epochs_done": result.epochs,
             "n_angles": int(op.angles_deg.size), "device": str(dev)}
    return maps_dataset(maps, model, y, x, spectral=xs, spectral_dim=sdim,
                        spectral_units=str(plan.stack[sdim].attrs.get("units", "")),
                        data_units=str(plan.stack.attrs.get("units", "")), lower=lower, upper=upper,
                        producer="xrdwidgets.analysis.dlsr", parameters=params, attrs=attrs)


def dlsr(stack, model: PeakModel, **kwargs) -> xr.Dataset:
    """DLSR run to the end; see :func:`iterate_dlsr`."""
    return run_to_end(iterate_dlsr(stack, model, **kwargs))
