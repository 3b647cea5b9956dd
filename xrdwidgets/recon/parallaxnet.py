"""ParallaxNet: parallax-aware XRD-CT reconstruction by a 3-D generator network (Vamvakeros et al.).

A thick sample seen by a pencil beam shifts and broadens the measured peaks: each voxel's pattern
reaches the detector at 2θ shifted by its depth along the beam (:mod:`xrdwidgets.ops.parallax`).
Channel-by-channel reconstruction (FBP, SIRT, SD2I) cannot undo that — it mixes 2θ channels.
ParallaxNet fits a whole volume ``(y, x, tth)`` instead: an :class:`~xrdwidgets.recon.nets.SD2Vol`
generator produces it, the differentiable parallax operator
(:class:`~xrdwidgets.ops.parallax.ParallaxProjector`) projects it with the shifts, and the
network's weights are trained so that the projection matches the measured sinograms. The result
has the peaks at their true positions and widths. 0–180° data are enough (the operator models
the depth of every voxel at every angle).

Loss (per-channel normalised, in sinogram space)
    ``s_c`` = maximum of channel ``c``'s sinogram; the target is ``b̃ = b / s`` (every 2θ channel
    peaks at 1, so weak and strong channels weigh alike). The network output ``o`` is a
    *normalised* volume: the absolute volume is ``x = o · s · g`` (``g_c``: 99.5th percentile of
    the FBP of ``b̃_c`` inside the support, so ``o`` is O(1) in every channel). The operator acts on
    the absolute volume — parallax moves intensity between channels, so the channels must carry
    their true relative scale — and its output is divided by the same ``s``:
    ``pred = A(o · s · g) / s``. The loss is ``λ·MSE(pred, b̃) + (1 − λ)·(1 − SSIM(pred, b̃))``
    with ``λ = 1e-4`` (:func:`~xrdwidgets.recon.losses.mse_ssim`; SSIM of each channel's
    ``(translation, angle)`` image, averaged over channels). The factors are a
    :class:`~xrdwidgets.recon.training_setup.ChannelScaling` (``sino = s``, ``image = s · g``).

Channel batches with overlap
    The volume's dense layer has one weight per voxel and hidden unit, so long 2θ axes are cut
    into batches of ``batch`` channels (250) overlapping by ``overlap`` (40)
    (:func:`~xrdwidgets.recon.batching.plan_batches`), one model per batch; a batch's operator is
    :meth:`ParallaxProjector.select_channels` of the full one (shared matrices). Intensity that
    parallax moves into a batch from outside it is not modelled, so a batch's edge channels are
    less reliable; the overlaps are merged with linear cross-fade weights
    (:func:`~xrdwidgets.recon.batching.merge_batches`, ``merge="linear"``). Keep ``overlap`` well
    above the largest parallax shift in channels.

Training: :func:`~xrdwidgets.recon.training.train` (Adam, ``lr`` 5e-4, learning rate halved after
``patience`` epochs without improvement, stop below ``min_lr`` or after ``epochs``), the volume of
lowest loss is kept; ``pretrain=`` first fits the output to the (parallax-blind) FBP volume by MSE.

Geometry: that of the operator (rotation axis at ``(n − 1)/2``, scikit-image ``radon``
orientation, depth along the beam ``(x, y) = (sin θ, cos θ)``, detector distance
``geometry_distance_mm``, pixel = translation step ``geometry_translation_step_mm``).

Stack runner and checkpoints (resume protocol of :mod:`xrdwidgets.jobs`)
    The stack is run by the one stack runner (:func:`xrdwidgets.recon.driver.run_stack`) over
    fixed overlapping batches; this module provides only the batch solver
    (:func:`iterate_parallaxnet_array`). Checkpoints are the runner's (one schema for every
    method): each finished batch's volume goes out once as a chunk ``"<lead>_<start>_<stop>"``
    (absolute units, before merging); with ``checkpoint_every=N`` every ``N``-th epoch carries
    the running batch's training state (:func:`~xrdwidgets.recon.training.train`) under
    ``"running"``. ``iterate_parallaxnet(stack, ..., checkpoint=ck)`` with the accumulated
    checkpoint (:func:`xrdwidgets.jobs.load_checkpoint` / :func:`~xrdwidgets.jobs.merge_checkpoint`)
    takes the finished batches and continues the running one from its training state. A
    checkpoint of the per-method format of earlier versions is refused with an "older version"
    error.

Accuracy and cost (``benchmarks/bench_parallax.py --small``): ``docs/notes/tables-recon.md``. On a
CPU SD2Vol's 3-D convolutions and the SSIM dominate; use a GPU (``device="cuda"``) for real sizes.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..base.errors import InputError, InputTypeError
from .. import data as _data
from ..ops.parallax import FORMULAS, ParallaxProjector
from ..ops.projector import ParallelProjector
from . import driver as _drv
from ..base.progress import run_to_end
from .registry import common_params, param, register, training_params
from .batching import MERGE_WEIGHTS
from .losses import LAMBDA_PARALLAXNET, mse_ssim
from .nets import SD2Vol
from . import training as _training
from .training import ChannelScaling, train

log = logging.getLogger(__name__)

__all__ = [
    "BATCH",
    "CHECKPOINT_KIND",
    "EPOCHS",
    "PRETRAIN_FRACTION",
    "OVERLAP",
    "iterate_parallaxnet",
    "iterate_parallaxnet_array",
    "parallaxnet",
    "parallaxnet_array",
]

#: Default number of training epochs per channel batch.
EPOCHS = 5000
#: Default channels per batch.
BATCH = 250
#: Default overlap of consecutive batches (channels).
OVERLAP = 40
#: ``checkpoint["kind"]`` of its checkpoints: the one stack-checkpoint schema of
#: :mod:`~xrdwidgets.recon.driver` (earlier versions had their own, refused as "older version").
CHECKPOINT_KIND = _drv.STACK_CHECKPOINT_KIND
#: Pre-training epochs per training epoch when ``pretrain=True`` (the default): the paper's 1000
#: FBP epochs before 5000. Without pre-training the network can stay at a flat output (the
#: ParallaxNet table of the README, ``benchmarks/bench_parallax_oracle.py``).
PRETRAIN_FRACTION = 0.2


# ---------------------------------------------------------------------------- checks
def _config(caller, epochs, lr, lam, seed, patience, min_lr, pretrain, preview_every, checkpoint_every,
            net_options):
    scaled = int(epochs * PRETRAIN_FRACTION) if isinstance(epochs, (int, np.integer)) and epochs > 0 else 0
    cfg = _training.training_config(caller, epochs=epochs, lr=lr, seed=seed, patience=patience, min_lr=min_lr,
                                    pretrain=pretrain, pretrain_default=scaled,
                                    preview_every=preview_every, checkpoint_every=checkpoint_every,
                                    net_options=net_options)
    return {**cfg, "lam": _drv.check_float(caller, "lam", lam, minimum=0.0, maximum=1.0 + 1e-12)}


def _as_sino(caller, sino, op: ParallaxProjector):
    if not isinstance(op, ParallaxProjector):
        raise InputTypeError(f"{caller}: op must be a ParallaxProjector, found {type(op).__name__}")
    is_np = not isinstance(sino, torch.Tensor)
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(sino), np.float32)) if is_np else sino.detach()
    if tuple(t.shape) != tuple(op.range_shape):
        raise InputError(f"{caller}: sino must have shape (translation, angle, tth) = {tuple(op.range_shape)} "
                         f"(the operator's range), found {tuple(t.shape)}")
    t = t.to(device=op.device, dtype=torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{caller}: sino must be finite, found {int((~torch.isfinite(t)).sum())} NaN/inf values")
    return t, is_np


def _plain_of(op: ParallaxProjector) -> ParallelProjector:
    return ParallelProjector(op.n, op.angles_deg, n_translations=op.n_translations,
                             centre_offset=op.centre_offset, mask=op.mask if op.mask is not None else False,
                             device=op.device)


def _build_model(n, m, seed, device, options):
    if seed is None:
        return SD2Vol(n, m, device=device, **options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = SD2Vol(n, m, device="cpu", **options)
    return model.to(device)


# ---------------------------------------------------------------------------- one batch
def iterate_parallaxnet_array(sino, op: ParallaxProjector, *, epochs: int = EPOCHS, lr: float = 5e-4,
                              lam: float = LAMBDA_PARALLAXNET, seed: int | None = 0, patience: int = 300,
                              min_lr: float = 1e-6, pretrain=True, preview_every: int = 100,
                              checkpoint_every: int = 0, checkpoint=None, checkpoint_path=None,
                              amp: bool = False, compile: bool = False, net_options: dict | None = None,
                              plain: ParallelProjector | None = None, _extra: dict | None = None):
    """ParallaxNet reconstruction of one channel batch held in an array, as a generator.

    Parameters
    ----------
    sino : numpy.ndarray or torch.Tensor
        Sinograms ``(translation, angle, tth)`` matching ``op.range_shape``.
    op : ParallaxProjector
        The parallax operator of the scan (its 2θ axis is the batch's; its mask is the support).
    epochs : int
        Most training epochs.
    lr : float
        Adam learning rate (5e-4).
    lam : float
        Weight ``λ`` of the MSE in ``λ·MSE + (1 − λ)·(1 − SSIM)`` (1e-4).
    seed : int or None
        Seeds the weight initialisation and the training (0: reproducible on the CPU).
    patience, min_lr :
        Plateau schedule (halve after ``patience`` epochs without improvement; stop below
        ``min_lr``).
    pretrain : bool or int
        First fit the output to the clipped FBP volume by MSE for this many epochs (``True``, the
        default: ``epochs`` × :data:`PRETRAIN_FRACTION`, 1000 for the default 5000 as in the paper;
        ``False``: none).
    preview_every : int
        A preview (absolute volume summed over 2θ, ``(y, x)``) every this many epochs.
    checkpoint_every, checkpoint, checkpoint_path :
        See :func:`~xrdwidgets.recon.training.train`.
    amp, compile : bool
        Mixed precision / ``torch.compile`` (CUDA only).
    net_options : dict, optional
        Keywords of :class:`~xrdwidgets.recon.nets.SD2Vol` (e.g. ``{"conv_filters": (8,)}``).
    plain : ParallelProjector, optional
        Plain projector of the same scan (for the FBP that sets the image scale); built when
        not given.

    Yields
    ------
    Progress
        One per epoch (:func:`~xrdwidgets.recon.training.train`); ``metrics`` add ``residual``
        = ``‖pred − b̃‖ / ‖b̃‖`` of the normalised sinograms.

    Returns
    -------
    Volume ``(y, x, tth)`` in absolute units (sinogram units per translation step), numpy when
    ``sino`` is numpy, else a tensor; zero outside the operator's support.
    """
    caller = "iterate_parallaxnet_array"
    cfg = _config(caller, epochs, lr, lam, seed, patience, min_lr, pretrain, preview_every,
                  checkpoint_every, net_options)
    b, is_np = _as_sino(caller, sino, op)
    if checkpoint is not None and not isinstance(checkpoint, dict):
        raise InputError(f"{caller}: checkpoint must be a dict (as loaded by torch.load) or None, "
                         f"found {type(checkpoint).__name__}")
    plain = plain if plain is not None else _plain_of(op)
    C = op.n_channels
    scaling0 = ChannelScaling.from_sinogram(b)
    b_norm = scaling0.normalise_sino(b)
    gain, fbp_norm = _training.fbp_gain(b_norm, plain)
    scaling = ChannelScaling.from_sinogram(b, gain=gain)
    support = _drv.support_of(op)
    model = _build_model(op.n, C, cfg["seed"], op.device, cfg["net_options"])
    b_norm_norm = float(torch.linalg.vector_norm(b_norm))
    lam_v = cfg["lam"]

    def loss_fn(out):
        pred = scaling.normalise_sino(op(scaling.denormalise_image(out * support)))
        value = mse_ssim(pred, b_norm, lam=lam_v)
        with torch.no_grad():
            res = float(torch.linalg.vector_norm(pred - b_norm)) / b_norm_norm if b_norm_norm > 0 else 0.0
        return value, {"residual": res}

    def preview(out):
        return (scaling.denormalise_image(out.detach()) * support).sum(-1).cpu().numpy()

    target = (fbp_norm / gain).clamp_min(0.0) * support if cfg["pretrain"] else None
    gen = train(model, loss_fn, lr=cfg["lr"], max_epochs=cfg["epochs"], patience=cfg["patience"],
                min_lr=cfg["min_lr"], preview_every=cfg["preview_every"], preview_fn=preview,
                checkpoint_every=cfg["checkpoint_every"], checkpoint=checkpoint, checkpoint_path=checkpoint_path,
                checkpoint_extra=_extra, seed=cfg["seed"], pretrain_target=target,
                pretrain_epochs=cfg["pretrain"], amp=amp, compile=compile)
    log.debug("%s: n=%d, %d angles, %d channels, L=%g mm, %d epochs", caller, op.n, op.angles_deg.size, C,
              op.distance_mm, cfg["epochs"])
    return _finish(gen, scaling, support, is_np)


def _finish(gen, scaling, support, is_np):
    result = yield from gen
    vol = scaling.denormalise_image(result.output) * support
    return vol.cpu().numpy() if is_np else vol


def parallaxnet_array(sino, op: ParallaxProjector, **kwargs):
    """ParallaxNet reconstruction of one channel batch, run to the end; see :func:`iterate_parallaxnet_array`."""
    return run_to_end(iterate_parallaxnet_array(sino, op, **kwargs))


# ---------------------------------------------------------------------------- stacks
def iterate_parallaxnet(stack, *, distance_mm: float | None = None, pixel_mm: float | None = None,
                        epochs: int = EPOCHS, batch: int = BATCH, overlap: int = OVERLAP, lr: float = 5e-4,
                        lam: float = LAMBDA_PARALLAXNET, seed: int | None = 0, patience: int = 300,
                        min_lr: float = 1e-6, pretrain=True, merge: str = "linear", formula: str = "atan",
                        preview_every: int = 100, checkpoint_every: int = 0, checkpoint=None,
                        checkpoint_path=None, amp: bool = False, compile: bool = False,
                        net_options: dict | None = None, operator_options: dict | None = None,
                        n: int | None = None, circle: bool = True, centre_offset: float | None = None,
                        device=None):
    """ParallaxNet reconstruction of a sinogram stack, one model per overlapping channel batch, a generator.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack ``(translation, angle, tth)`` (any dim order; 2θ in degrees; angles in
        degrees, e.g. 0–180°), with the scan geometry in attrs (``geometry_distance_mm``,
        ``geometry_translation_step_mm``) unless given here.
    distance_mm, pixel_mm : float, optional
        Rotation axis to detector distance and translation step (mm); default the stack's
        geometry.
    epochs, lr, lam, seed, patience, min_lr, pretrain, preview_every, amp, compile, net_options :
        See :func:`iterate_parallaxnet_array` (applied to every batch).
    batch, overlap : int
        Channels per batch (250) and minimum overlap of consecutive batches (40)
        (:func:`~xrdwidgets.recon.batching.plan_batches`).
    merge : {"linear", "mean"}
        How overlaps are merged (:func:`~xrdwidgets.recon.batching.merge_batches`).
    formula : {"atan", "arcsin"}
        Apparent-angle formula of the operator (:mod:`xrdwidgets.ops.parallax`).
    checkpoint_every, checkpoint_path, checkpoint :
        See the module docstring (resume with the accumulated checkpoint of the same stack and
        parameters; another one raises a ValueError naming what differs).
    operator_options : dict, optional
        More keywords of :class:`~xrdwidgets.ops.parallax.ParallaxProjector` (``interp``,
        ``max_shift_step``, ``sample_step``, ``block``, ``memory_budget``).
    n, circle, centre_offset, device :
        Image size (default: the number of translations), restriction to the inscribed circle,
        rotation-axis offset in steps (default: the stored geometry's) and torch device.

    Returns
    -------
    generator
        Yields one :class:`Progress` per epoch and batch (``metrics`` add ``batch``,
        ``n_batches``, ``channel_start``, ``channel_stop``, ``channels``, ``inner_iteration``);
        returns the volume DataArray ``(y, x, tth)`` in absolute units with the stack's geometry
        and new provenance.
    """
    caller = "iterate_parallaxnet"
    cfg = _config(caller, epochs, lr, lam, seed, patience, min_lr, pretrain, preview_every,
                  checkpoint_every, net_options)
    if merge not in MERGE_WEIGHTS:
        raise InputError(f"{caller}: merge must be one of {MERGE_WEIGHTS}, found {merge!r}")
    if operator_options is not None and not isinstance(operator_options, dict):
        raise InputError(f"{caller}: operator_options must be a dict or None, found "
                         f"{type(operator_options).__name__}")
    batch = _drv.check_int(caller, "batch", batch)
    overlap = _drv.check_int(caller, "overlap", overlap, minimum=0)
    if overlap >= batch:
        raise InputError(f"{caller}: overlap must be smaller than batch (overlap {overlap}, batch {batch})")
    if checkpoint is not None and not isinstance(checkpoint, dict):
        raise InputError(f"{caller}: checkpoint must be a dict (e.g. xrdwidgets.jobs.load_checkpoint(workdir)) "
                         f"or None, found {type(checkpoint).__name__}")
    if checkpoint_path is not None:
        raise InputError(f"{caller}: checkpoint_path is not used for stacks any more: run as a job with a "
                         "work folder (xrdwidgets.jobs.run(..., workdir=...), `xrdwidgets reconstruct "
                         "--workdir`), which keeps the finished batches and the running training state")
    params = {k: v for k, v in cfg.items() if k != "net_options"}
    params.update(net_options={k: repr(v) for k, v in cfg["net_options"].items()}, formula=formula,
                  operator_options={k: repr(v) for k, v in (operator_options or {}).items()},
                  amp=bool(amp), compile=bool(compile))
    plan = _drv.prepare_stack(stack, caller=caller, producer="xrdwidgets.recon.parallaxnet", parameters=params,
                              batch=batch, n=n, circle=circle, centre_offset=centre_offset, device=device,
                              layout="overlap", overlap=overlap,
                              merge=merge, label="ParallaxNet")
    da, plain = plan.stack, plan.op
    spec = _data.spectral_dim(da)
    if spec != "tth":
        raise InputError(f"{caller}: ParallaxNet needs a 2θ axis 'tth' (degrees), found spectral dim {spec!r}; "
                         "convert with xrdwidgets.data.convert_spectral")
    op = ParallaxProjector.from_geometry(
        _data.get_geometry(da), plain.n, plain.angles_deg, da["tth"].values, distance_mm=distance_mm,
        pixel_mm=pixel_mm, n_translations=plain.n_translations, centre_offset=plain.centre_offset,
        mask=plain.mask if plain.mask is not None else False, formula=formula, device=plain.device,
        **(operator_options or {}))
    plan.parameters.update(distance_mm=op.distance_mm, pixel_mm=op.pixel_mm)

    def solve(sino, _plain, channels, checkpoint=None):
        return iterate_parallaxnet_array(
            sino, op.select_channels(channels), epochs=cfg["epochs"], lr=cfg["lr"], lam=cfg["lam"],
            seed=cfg["seed"], patience=cfg["patience"], min_lr=cfg["min_lr"], pretrain=cfg["pretrain"],
            preview_every=cfg["preview_every"], checkpoint_every=cfg["checkpoint_every"], checkpoint=checkpoint,
            amp=amp, compile=compile, net_options=cfg["net_options"], plain=plain)

    return _drv.run_stack(plan, solve, checkpoint=checkpoint)


def parallaxnet(stack, **kwargs):
    """ParallaxNet reconstruction of a sinogram stack, run to the end; see :func:`iterate_parallaxnet`."""
    return run_to_end(iterate_parallaxnet(stack, **kwargs))


register("parallaxnet", iterate_parallaxnet, label="ParallaxNet (parallax-free volume)",
         help="self-supervised parallax-free reconstruction over overlapping channel batches",
         params=[*training_params(epochs_help="training epochs per channel batch"),
                 param("distance_mm", label="detector distance",
                       help="rotation axis to detector distance (default: the data's scan "
                            "geometry)", kind="float", minimum=0.0, units="mm"),
                 param("pixel_mm", label="translation step",
                       help="translation step (default: the data's scan geometry)", kind="float",
                       minimum=0.0, units="mm", advanced=True),
                 param("overlap", label="batch overlap",
                       help="channels shared by neighbouring channel batches", minimum=0),
                 param("merge", label="overlap merge",
                       help="how overlaps are merged: linear cross-fade or mean", choices=MERGE_WEIGHTS),
                 param("lam", label="MSE weight λ",
                       help="weight λ of the MSE in the loss λ·MSE + (1 − λ)·(1 − SSIM)", minimum=0.0,
                       maximum=1.0, advanced=True),
                 param("formula", label="angle formula",
                       help="apparent-angle formula of the operator", choices=FORMULAS, advanced=True),
                 *common_params(batch_help="channels per network (the paper: 250)")],
         presets={"quick": {"epochs": 500}, "fast": {"epochs": 2000}})
