"""SD2I: self-supervised reconstruction by a generator network (Dong et al., Digital Discovery 2023).

A generator (:mod:`~xrdwidgets.recon.nets`, SD2Iu by default) maps a constant to an image batch
``(y, x, C)``; its weights are fitted so that the projection of the image matches the measured
sinograms. No training data: the network's structure is the prior, which suppresses the streaks of
angular undersampling. One multi-channel model reconstructs a channel batch of an XRD-CT stack.

Loss (in sinogram space, per-channel normalised — the ParallaxNet paper's scheme)
    ``s_c`` = maximum of channel ``c``'s sinogram, ``b̃ = b / s`` (each channel peaks at 1), and
    ``g_c`` = the 99.5th percentile of the FBP of ``b̃_c`` inside the support (the normalised
    image's brightness), so the network's output ``o`` is O(1) for every channel. The image is
    ``x = o · s · g`` (absolute units, per pixel of one translation step); its normalised
    projection ``A(x) / s = A(o · g)`` is compared with ``b̃`` by ``loss`` (default ``mae``; the
    paper's ``mae_ssim``: ``0.16·MAE + 0.84·(1 − SSIM)``, SSIM averaged over channels — see "Choice
    of loss"). The factors are
    :class:`~xrdwidgets.recon.training_setup.ChannelScaling` (``sino = s``, ``image = s·g``).

Training: :func:`~xrdwidgets.recon.training.train` (Adam 5e-4, learning rate halved after 300
epochs without improvement, at most ``epochs`` = 6000 as in the paper, stop when the learning
rate falls below ``min_lr``). The result is the image of lowest loss. ``pretrain=True`` (or a
number of epochs, 1000 for ``True``) first fits the output to the clipped FBP image by MSE.

Choice of loss — why the default is ``"mae"``, not the paper's
    With data from another forward model than ours (exact line integrals of an analytic
    phantom, or scikit-image ``radon``), the sinogram-space SSIM term rewards fitting the few-percent
    model mismatch, and the image grows a checkerboard texture that the data barely constrain;
    ``loss="mae_ssim"`` stays available for the paper's protocol. Measurements
    (``benchmarks/bench_sd2i.py``, ``bench_sd2i_upsample.py``, real data): ``docs/notes/tables-recon.md``.

Geometry, axis order and rotation centre: those of the projector
(:class:`~xrdwidgets.ops.projector.ParallelProjector`, centre ``(n-1)/2``).

Cost: grows fast with the image size; use a GPU (``device="cuda"``) for full-size runs
(measured: ``docs/notes/tables-recon.md``).
"""
from __future__ import annotations

import logging

import torch

from ..base.errors import InputError, InputTypeError, StateError
from ..ops.projector import ParallelProjector
from . import driver as _drv
from ..base.progress import run_to_end
from .registry import common_params, param, register, training_params
from .losses import LOSSES, get_loss
from .nets import ARCHITECTURES, build_generator
from . import training as _training
from .training import ChannelScaling, train

log = logging.getLogger(__name__)

__all__ = ["EPOCHS", "PRETRAIN_EPOCHS", "iterate_sd2i", "iterate_sd2i_array", "sd2i", "sd2i_array"]

#: Default number of epochs (the paper's).
EPOCHS = 6000
#: Pre-training epochs for ``pretrain=True``.
PRETRAIN_EPOCHS = 1000


def _check_common(caller, arch, loss, k, epochs, lr, patience, min_lr, pretrain, seed, preview_every,
                  checkpoint_every, net_options):
    key = str(arch).lower()
    if key not in ARCHITECTURES:
        raise InputError(f"{caller}: arch must be one of {tuple(ARCHITECTURES)}, found {arch!r}")
    if not callable(loss) and str(loss).lower() not in LOSSES:
        raise InputError(f"{caller}: loss must be one of {tuple(LOSSES)} or a callable, found {loss!r}")
    cfg = _training.training_config(caller, epochs=epochs, lr=lr, seed=seed, patience=patience, min_lr=min_lr,
                                    pretrain=pretrain, pretrain_default=PRETRAIN_EPOCHS,
                                    preview_every=preview_every, checkpoint_every=checkpoint_every,
                                    net_options=net_options)
    return {"arch": key, "loss": loss if callable(loss) else str(loss).lower(),
            "k": _drv.check_int(caller, "k", k), **cfg}


def iterate_sd2i_array(sino, op: ParallelProjector, *, arch: str = "sd2iu", epochs: int = EPOCHS,
                       lr: float = 5e-4, loss="mae", k: int = 8, seed: int | None = 0,
                       patience: int = 300, min_lr: float = 1e-6, pretrain=False,
                       preview_every: int = 100, checkpoint_every: int = 0, checkpoint=None,
                       checkpoint_path=None, amp: bool = False, compile: bool = False,
                       net_options: dict | None = None):
    """SD2I reconstruction of one sinogram or a channel batch (one multi-channel model), a generator.

    Parameters
    ----------
    sino : numpy.ndarray or torch.Tensor
        ``(translation, angle)`` or ``(translation, angle, C)``, matching ``op.range_shape``.
    op : ParallelProjector
        Projector of the scan geometry (its mask, if any, is also the generator's support).
    arch : {"sd2iu", "sd2i"}
        Generator architecture (:mod:`~xrdwidgets.recon.nets`).
    epochs : int
        Most training epochs (the paper: 6000).
    lr : float
        Adam learning rate (5e-4).
    loss : str or callable
        A name of :data:`~xrdwidgets.recon.losses.LOSSES` (``"mae"``; the paper's ``"mae_ssim"``) or
        ``fn(pred, target)``, applied to normalised sinograms ``(translation, angle, C)``.
    k : int
        Feature maps after the generator's reshape (8).
    seed : int or None
        Seeds the weight initialisation and the training (0: reproducible on the CPU).
    patience, min_lr :
        Plateau schedule (halve after ``patience`` epochs without improvement; stop below
        ``min_lr``).
    pretrain : bool or int
        Pre-train towards the clipped FBP image for this many epochs (``True``: 1000).
    preview_every : int
        A preview (absolute image summed over channels, ``(y, x)``) every this many epochs.
    checkpoint_every, checkpoint, checkpoint_path :
        See :func:`~xrdwidgets.recon.training.train`; a checkpoint records the architecture and
        shapes, and resuming with another set raises a ``ValueError``.
    amp, compile : bool
        Mixed precision / ``torch.compile`` (CUDA only).
    net_options : dict, optional
        Extra keywords of the generator class (e.g. ``{"filters": 32}``).

    Yields
    ------
    Progress
        One per epoch (see :func:`~xrdwidgets.recon.training.train`); ``metrics`` add
        ``residual`` = ``‖A x − b‖ / ‖b‖`` of the normalised sinograms.

    Returns
    -------
    Image batch ``(y, x[, C])`` in absolute units (sinogram units per translation step), same
    type and rank as ``sino``.
    """
    caller = "iterate_sd2i_array"
    cfg = _check_common(caller, arch, loss, k, epochs, lr, patience, min_lr, pretrain, seed,
                        preview_every, checkpoint_every, net_options)
    b, wrap = _drv.as_sino_batch(caller, sino, op)
    C = b.shape[2]
    info = {"arch": cfg["arch"], "n": op.n, "range_shape": list(op.range_shape), "channels": C,
            "k": cfg["k"], "net_options": {k_: repr(v) for k_, v in cfg["net_options"].items()}}
    if checkpoint is not None:
        if not isinstance(checkpoint, dict):
            raise InputTypeError(f"{caller}: checkpoint must be a dict (as loaded by torch.load) or None, "
                             f"found {type(checkpoint).__name__}")
        made = checkpoint.get("sd2i")
        if made is not None and made != info:
            raise StateError(f"{caller}: checkpoint was made for {made}, not for this reconstruction {info}")
    # build the projector's sparse matrices now (training applies it thousands of times): the
    # FBP below then uses them too, not the matrix-free numba kernels (whose worker threads slow
    # down torch's CPU kernels afterwards when both run in one process)
    op(torch.zeros((op.n, op.n, 1), dtype=torch.float32, device=op.device))
    scaling0 = ChannelScaling.from_sinogram(b)
    b_norm = scaling0.normalise_sino(b)
    gain, fbp_norm = _training.fbp_gain(b_norm, op)
    scaling = ChannelScaling.from_sinogram(b, gain=gain)
    support = _drv.support_of(op)
    opts = dict(cfg["net_options"])
    opts.setdefault("mask", op.mask if op.mask is not None else False)
    model = build_generator(cfg["arch"], op.n, C, k=cfg["k"], device=op.device, seed=cfg["seed"], **opts)
    loss_of = get_loss(cfg["loss"])
    b_norm_norm = float(torch.linalg.vector_norm(b_norm))

    def loss_fn(out):
        pred = scaling.normalise_sino(op(scaling.denormalise_image(out)))
        value = loss_of(pred, b_norm)
        with torch.no_grad():
            res = float(torch.linalg.vector_norm(pred - b_norm)) / b_norm_norm if b_norm_norm > 0 else 0.0
        return value, {"residual": res}

    def preview(out):
        return scaling.denormalise_image(out.detach()).sum(-1).cpu().numpy()

    target = None
    if cfg["pretrain"]:
        target = (fbp_norm / gain).clamp_min(0.0) * support
    extra = {"sd2i": info}
    gen = train(model, loss_fn, lr=cfg["lr"], max_epochs=cfg["epochs"], patience=cfg["patience"],
                min_lr=cfg["min_lr"], preview_every=cfg["preview_every"], preview_fn=preview,
                checkpoint_every=cfg["checkpoint_every"], checkpoint=checkpoint,
                checkpoint_path=checkpoint_path, checkpoint_extra=extra, seed=cfg["seed"],
                pretrain_target=target, pretrain_epochs=cfg["pretrain"], amp=amp, compile=compile)
    log.debug("%s: %s, %d channels, n=%d, %d epochs", caller, cfg["arch"], C, op.n, cfg["epochs"])
    return _finish(gen, scaling, wrap)


def _finish(gen, scaling, wrap):
    result = yield from gen
    return _drv.to_output(scaling.denormalise_image(result.output), wrap)


def sd2i_array(sino, op: ParallelProjector, **kwargs):
    """SD2I reconstruction run to the end; see :func:`iterate_sd2i_array`."""
    return run_to_end(iterate_sd2i_array(sino, op, **kwargs))


def iterate_sd2i(stack, *, arch: str = "sd2iu", epochs: int = EPOCHS, lr: float = 5e-4, loss="mae",
                 k: int = 8, seed: int | None = 0, patience: int = 300, min_lr: float = 1e-6, pretrain=False,
                 preview_every: int = 100, checkpoint_every: int = 500, checkpoint=None, amp: bool = False,
                 compile: bool = False, net_options: dict | None = None, batch: int = 32,
                 n: int | None = None, circle: bool = True, centre_offset: float | None = None, device=None):
    """SD2I reconstruction of a sinogram stack, one multi-channel model per channel batch, a generator.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack (any dim order; angles in degrees, any set).
    arch, epochs, lr, loss, k, seed, patience, min_lr, pretrain, preview_every, amp, compile, net_options :
        See :func:`iterate_sd2i_array` (applied to every batch).
    checkpoint_every : int
        The training state of the running batch goes out in a stack checkpoint every this many
        epochs (500; 0: only the finished batches, see :mod:`xrdwidgets.recon.driver`).
    checkpoint : dict, optional
        A stack checkpoint of this function on the same stack and settings (e.g.
        ``xrdwidgets.jobs.load_checkpoint(workdir)``): finished batches are taken from it and the
        running one continues from its saved training state.
    batch, n, circle, centre_offset, device :
        As in :func:`xrdwidgets.recon.sirt.iterate_sirt` (``batch`` = channels per model, 32).

    Returns
    -------
    generator
        Yields one :class:`Progress` per epoch and batch; returns the volume DataArray
        ``(y, x, spectral)`` in absolute units, with provenance.
    """
    caller = "iterate_sd2i"
    cfg = _check_common(caller, arch, loss, k, epochs, lr, patience, min_lr, pretrain, seed,
                        preview_every, checkpoint_every, net_options)
    params = {k_: v for k_, v in cfg.items() if k_ not in ("net_options", "preview_every", "checkpoint_every")}
    params["loss"] = cfg["loss"] if isinstance(cfg["loss"], str) else getattr(cfg["loss"], "__name__", "callable")
    params["net_options"] = {k_: repr(v) for k_, v in cfg["net_options"].items()}
    params.update(amp=bool(amp), compile=bool(compile))

    def solve(sino, op, channels, checkpoint=None):
        return iterate_sd2i_array(
            sino, op, arch=cfg["arch"], epochs=cfg["epochs"], lr=cfg["lr"], loss=cfg["loss"], k=cfg["k"],
            seed=cfg["seed"], patience=cfg["patience"], min_lr=cfg["min_lr"], pretrain=cfg["pretrain"],
            preview_every=cfg["preview_every"], checkpoint_every=cfg["checkpoint_every"],
            checkpoint=checkpoint, amp=amp, compile=compile, net_options=cfg["net_options"])

    return _drv.stream_stack(stack, solve, caller=caller, producer="xrdwidgets.recon.sd2i", parameters=params,
                             batch=batch, n=n, circle=circle, centre_offset=centre_offset, device=device,
                             checkpoint=checkpoint)


def sd2i(stack, **kwargs):
    """SD2I reconstruction of a sinogram stack, run to the end; see :func:`iterate_sd2i`."""
    return run_to_end(iterate_sd2i(stack, **kwargs))


register("sd2i", iterate_sd2i, label="SD2I (self-supervised neural)",
         help="self-supervised neural reconstruction: a generator network per channel batch fitted "
              "to the sinograms",
         params=[*training_params(epochs_help="training epochs (the learning rate halves after `patience` "
                                  "epochs without improvement; training stops at its floor)"),
                 param("arch", label="network",
                       help="generator: SD2Iu (upsampling) or the original SD2I", choices=tuple(ARCHITECTURES)),
                 param("loss", label="loss function",
                       help="loss in sinogram space (mae_ssim: the paper's (1-μ)·MAE + μ·(1-SSIM))",
                       choices=tuple(LOSSES)),
                 param("k", label="latent size factor",
                       help="latent size factor of the generator", minimum=1, advanced=True),
                 *common_params(batch_help="channels per network (bounds memory)")],
         presets={"quick": {"epochs": 1000}})
