"""Noise2Inverse: self-supervised denoising of XRD-CT reconstructions (Hendriksen et al., IEEE TCI 2020).

No clean data are needed. The measured sinograms are split into ``K`` *sections* whose noise is
independent; each section is reconstructed on its own with a linear method (FBP by default), and
a CNN learns to predict one section's reconstruction from the others'. Since the noise of the
target is independent of the input and has zero mean, the best prediction in the mean-squared
sense is the noise-free image: the network learns to denoise.

Sections and strategies
    ``domain="diffraction"`` (default) and ``"space"``: the angles are split interleaved, section
    ``j`` holding angles ``j, j + K, j + 2K, …`` (:func:`split_angles`); each section covers
    0–180° with ``K`` times fewer angles. Strategy ``"X:1"`` (default): the input is the mean of
    the other ``K − 1`` sections' reconstructions, the target the held-out one, round-robin over
    ``j`` (every section is a target equally often); inference applies the network to the
    reconstruction of the *full* sinogram. ``"1:X"``: input one section, target the mean of the
    others; inference averages the network's output over the ``K`` sections.

    ``domain="time"`` (dynamic tomography): the first ``K`` time steps are taken as the sections
    (the sample is assumed not to change during them; their angles may be interlaced, see
    ``angle_offsets``): the input is one time step's reconstruction, the target the mean of the
    other ``K − 1`` (``"1:X"``); inference applies the network to every time step's
    reconstruction.

Domains (what the network sees)
    * ``"diffraction"``: the channels of a reconstruction are the CNN's channels, input and output
      together, so the network can use the diffraction pattern a phase shares across pixels.
      Stacks with many channels are cut into groups of at most ``batch`` channels, one network
      per group. Leading ``time``/``z`` slices are more training samples for the same network.
    * ``"space"`` (3-D): 2.5-D input — the slice and ``context`` slices above and below along
      ``z`` (edge slices repeated at the ends), all channels; the output is the middle slice.
    * ``"time"``: sections are time steps (above); each time step is denoised.

Training (defaults known to work without tuning, after the paper)
    MSE loss, Adam (``lr`` = 1e-3, constant or with ``lr_schedule="cosine"`` decay to 0),
    ``batch_size`` = 16 patches of ``patch``² pixels at random positions, with random
    flips/transposes of input and target together. The training images — one per (section,
    slice) — are drawn in rounds of a random permutation of all of them, so every section is a
    target equally often. Data are scaled to a unit range per channel (division by the 99.5th
    percentile of the magnitude of the inference input inside the support; the result is scaled
    back). One *epoch* is as many steps as make the patches cover every training image once on
    average, at least :data:`MIN_STEPS` (``ceil(n_images · H · W / (batch_size · patch²))``;
    ``steps_per_epoch`` overrides it). The network of the last epoch is used; with ``tta=True``
    (default) its output is averaged over the 8 flips/transposes of the input.

Networks (:mod:`~xrdwidgets.recon.denoise_nets`)
    ``net="unet"`` (default): a small U-Net. ``net="msd"``: the paper's mixed-scale dense network
    (depth 100, width 1). The U-Net is the default because it learns faster on XRD-CT sizes and
    costs less per step on a CPU (measured: ``docs/notes/tables-recon.md``). MS-D has far fewer
    weights and a larger receptive field; it is worth trying on a GPU with long training, the
    regime of the paper.

Benchmark (``benchmarks/bench_noise2inverse.py``): PSNR/SSIM against the ground truth for FBP,
TV and Noise2Inverse at three doses, with timings.

Stack runner and checkpoints (protocol of :mod:`xrdwidgets.jobs`)
    The stack is run by the one stack runner (:func:`xrdwidgets.recon.driver.run_stack`) over
    near-equal channel groups of at most ``batch`` channels, each holding every leading slice
    (``layout="even"``, ``whole_lead=True``); this module provides the group solver only.
    Checkpoints follow the one stack-checkpoint schema (kind :data:`CHECKPOINT_KIND`, version 2):
    every ``checkpoint_every`` epochs the running group's training state (network, optimiser,
    sampling RNG) under ``"running": {"key", "state"}``, and at the end of every group its
    denoised images as ``chunks`` named ``"<lead>_<start>_<stop>"``, one per leading slice.
    ``iterate_noise2inverse(stack, ..., checkpoint=ck)`` with the accumulated checkpoint
    (:func:`xrdwidgets.jobs.load_checkpoint`, :func:`~xrdwidgets.jobs.merge_checkpoint`) takes
    the finished groups and continues the running one; on the CPU a seeded resumed run gives the
    same volume as an uninterrupted one. A checkpoint of other data or parameters is refused with
    a ValueError that says what differs; one of version 1 with an "older version" error.

Geometry: that of :class:`~xrdwidgets.ops.projector.ParallelProjector` (rotation axis at
``(n − 1)/2``, scikit-image ``radon`` orientation); images ``(y, x)`` with one pixel per
translation step; the result is in the units of the reconstruction method (FBP: sinogram units
per step), like :func:`~xrdwidgets.recon.fbp.fbp`.

Memory: a channel group of ``C`` channels over ``L`` leading slices holds its ``K`` section
reconstructions, their sum and the inference input on the device — about
``4·(K + 2)·L·C·n²`` bytes — plus the network's activations for one batch of patches (and for
one whole slice at inference; MS-D: ``4·(C·(2·context + 1) + depth)·n²`` bytes per slice).
Lower ``batch`` (channels per network) to bound it.

Cost: reconstructing the sections costs ``K`` FBPs; training dominates. On a two-core CPU, a
step of 16 patches of 32² takes about 0.13 s (16 channels) to 0.26 s (128 channels) with MS-D
(depth 100) and 0.02–0.04 s with the U-Net; inference is a fraction of a second per slice. Use
a GPU (``device="cuda"``) for real sizes. The last event of every group reports
``seconds_sections``, ``seconds_training`` and ``seconds_inference`` in its metrics.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ..base.errors import InputError, InputTypeError
from .. import data as _data
from . import driver as _drv
from ..base.progress import run_to_end
from .registry import common_params, param, register
from .batching import even_batches
from .denoise_nets import DENOISERS, build_denoiser
from .noise2inverse_group import MIN_STEPS, group_data, split_angles, train_group

log = logging.getLogger(__name__)

__all__ = ["iterate_noise2inverse", "noise2inverse", "split_angles", "DOMAINS", "STRATEGIES",
           "SECTION_METHODS", "LR_SCHEDULES", "CHECKPOINT_KIND", "EPOCHS", "MIN_STEPS"]

#: ``domain=`` values.
DOMAINS = ("diffraction", "space", "time")
#: ``strategy=`` values.
STRATEGIES = ("X:1", "1:X")
#: ``lr_schedule=`` values.
LR_SCHEDULES = ("constant", "cosine")
#: Linear reconstruction methods usable for the sections.
SECTION_METHODS = ("fbp", "sirt", "cgls")
#: ``kind`` of the checkpoints.
CHECKPOINT_KIND = "xrdwidgets.recon.noise2inverse"
#: Default number of epochs.
EPOCHS = 100
_CHECKPOINT_VERSION = 2  # 2: the one stack-checkpoint schema (running = {key, state})

# ---------------------------------------------------------------------------- checks
def _config(caller, k, net, domain, strategy, epochs, steps_per_epoch, batch_size, patch, lr, context,
            seed, method, method_options, net_options, preview_every, checkpoint_every, lr_schedule, tta):
    dom = str(domain).lower()
    if dom not in DOMAINS:
        raise InputError(f"{caller}: domain must be one of {DOMAINS}, found {domain!r}")
    key = str(net).lower()
    if key not in DENOISERS:
        raise InputError(f"{caller}: net must be one of {DENOISERS}, found {net!r}")
    if strategy is None:
        strategy = "1:X" if dom == "time" else "X:1"
    strat = str(strategy).upper()
    if strat not in STRATEGIES:
        raise InputError(f"{caller}: strategy must be one of {STRATEGIES}, found {strategy!r}")
    if dom == "time" and strat != "1:X":
        raise InputError(f"{caller}: domain='time' denoises every time step from its own reconstruction, "
                         f"so it uses strategy '1:X', found {strategy!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise InputError(f"{caller}: lr_schedule must be one of {LR_SCHEDULES}, found {lr_schedule!r}")
    m = str(method).lower()
    if m not in SECTION_METHODS:
        raise InputError(f"{caller}: method must be a linear reconstruction method, one of {SECTION_METHODS}, "
                         f"found {method!r}")
    for name, opts in (("method_options", method_options), ("net_options", net_options)):
        if opts is not None and not isinstance(opts, dict):
            raise InputError(f"{caller}: {name} must be a dict or None, found {type(opts).__name__}")
    mopts = dict(method_options or {})
    if mopts.get("nonneg"):
        raise InputError(f"{caller}: method_options nonneg=True makes the section reconstructions non-linear "
                         "(their noise is no longer zero-mean); Noise2Inverse needs a linear method")
    bad = sorted(set(mopts) & {"x0", "checkpoint", "checkpoint_every", "projector", "preview_every"})
    if bad:
        raise InputError(f"{caller}: method_options may not set {bad}")
    allowed = _method_keywords(m)
    unknown = sorted(set(mopts) - set(allowed))
    if unknown:
        raise InputError(f"{caller}: method {m!r} does not take {unknown} in method_options; it accepts {allowed}")
    cfg = dict(
        k=_drv.check_int(caller, "k", k, minimum=2), net=key, domain=dom, strategy=strat,
        epochs=_drv.check_int(caller, "epochs", epochs),
        steps_per_epoch=None if steps_per_epoch is None else _drv.check_int(caller, "steps_per_epoch",
                                                                            steps_per_epoch),
        batch_size=_drv.check_int(caller, "batch_size", batch_size),
        patch=_drv.check_int(caller, "patch", patch, minimum=4),
        lr=_drv.check_float(caller, "lr", lr, minimum=0.0, strict=True), lr_schedule=lr_schedule,
        context=_drv.check_int(caller, "context", context, minimum=0),
        seed=_drv.check_int(caller, "seed", seed, minimum=0),
        method=m, method_options=mopts, net_options=dict(net_options or {}), tta=bool(tta),
        preview_every=_drv.check_int(caller, "preview_every", preview_every, minimum=0),
        checkpoint_every=_drv.check_int(caller, "checkpoint_every", checkpoint_every, minimum=0),
    )
    # build a tiny network now so that bad net_options fail at the call
    build_denoiser(key, 1, 1, **cfg["net_options"])
    return cfg


def _method_keywords(method: str) -> list[str]:
    """Keywords ``method_options`` may hold for a section method."""
    import inspect

    if method == "fbp":
        return ["filter"]
    from .cgls import iterate_cgls_array
    from .sirt import iterate_sirt_array

    fn = iterate_sirt_array if method == "sirt" else iterate_cgls_array
    skip = {"sino", "op", "x0", "checkpoint", "checkpoint_every", "preview_every"}
    return [k for k in inspect.signature(fn).parameters if k not in skip]


def _time_offsets(caller, da, angle_offsets, n_time):
    if angle_offsets is None:
        if "angle_offset" in da.coords:
            c = da.coords["angle_offset"]
            if c.dims != (_data.TIME,):
                raise InputError(f"{caller}: coordinate 'angle_offset' must lie along 'time', found dims {c.dims}")
            angle_offsets = c.values
        else:
            return np.zeros(n_time)
    off = np.asarray(angle_offsets, dtype=np.float64).ravel()
    if off.size != n_time or not np.all(np.isfinite(off)):
        raise InputError(f"{caller}: angle_offsets must be {n_time} finite angles in degrees (one per time step), "
                         f"found {angle_offsets!r}")
    return off


# ---------------------------------------------------------------------------- section reconstructions

# ---------------------------------------------------------------------------- the stack entry
def iterate_noise2inverse(stack, *, k: int = 4, net: str = "unet", domain: str = "diffraction",
                          strategy: str | None = None, epochs: int = EPOCHS, steps_per_epoch: int | None = None,
                          batch_size: int = 16, patch: int = 32, lr: float = 1e-3, lr_schedule: str = "constant",
                          tta: bool = True, context: int = 1,
                          seed: int = 0, method: str = "fbp", method_options: dict | None = None,
                          net_options: dict | None = None, angle_offsets=None, preview_every: int = 10,
                          checkpoint_every: int = 10, checkpoint: dict | None = None, batch: int = 64,
                          n: int | None = None, circle: bool = True, centre_offset: float | None = None,
                          device=None):
    """Noise2Inverse denoising of a sinogram stack, as a generator of :class:`Progress`.

    The arguments are checked when this is called (not at the first ``next()``).

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        Sinogram stack ``(time, z, translation, angle, spectral)`` (``time``/``z`` optional, any
        dim order); angles in degrees, evenly covering 180° (or 360°).
    k : int
        Number of sections (4): interleaved angle subsets, or for ``domain="time"`` the first
        ``k`` time steps. Each angle section needs at least two angles.
    net : {"unet", "msd"}
        Denoising network (:mod:`~xrdwidgets.recon.denoise_nets`); ``net_options`` are passed
        to it (U-Net: ``filters`` 16, ``levels`` 3; MS-D: ``depth`` 100, ``width`` 1,
        ``dilations`` 1–10). Default the U-Net (see the module docstring for why).
    domain : {"diffraction", "space", "time"}
        What the network sees and how sections are made (module docstring). ``"space"`` needs a
        ``z`` dim, ``"time"`` a ``time`` dim with at least ``k`` steps.
    strategy : {"X:1", "1:X"}, optional
        Default ``"X:1"`` (``"1:X"`` for ``domain="time"``, the only choice there).
    epochs : int
        Training epochs per channel group (module docstring for the epoch length).
    steps_per_epoch : int, optional
        Override the number of training steps per epoch (default: module docstring).
    batch_size : int
        Patches per training step (16).
    patch : int
        Patch side in pixels (32; the image size when smaller).
    lr : float
        Adam learning rate (1e-3).
    lr_schedule : {"constant", "cosine"}
        Keep ``lr``, or decay it to 0 along a half cosine over the training.
    tta : bool
        Average the network's output over the 8 flips/transposes of its input (True; 8×
        inference, which stays far cheaper than training).
    context : int
        ``domain="space"``: slices above and below the denoised one in the input (1).
    seed : int
        Seeds the network initialisation and the patch sampling (each group from ``seed`` and
        its index): a run is reproducible on the CPU.
    method : {"fbp", "sirt", "cgls"}
        Linear reconstruction of the sections and of the inference input; ``method_options``
        go to :func:`~xrdwidgets.recon.fbp.fbp_array` (``filter``) or ``iterate_sirt_array`` /
        ``iterate_cgls_array`` (``n_iter``, …; ``nonneg`` is refused: it is not linear).
    angle_offsets : array of floats, optional
        ``domain="time"``: the angle offset (degrees) of each time step, whose angles are
        ``angle + angle_offsets[t]`` (interlaced acquisitions). Default the stack's
        ``angle_offset`` coordinate along ``time`` when present, else zeros.
    preview_every : int
        A preview (the denoised middle slice summed over the group's channels, ``(y, x)``, in
        output units) every this many epochs and at the last (0: last only).
    checkpoint_every : int
        The running group's training state goes out every this many epochs (0: only finished
        groups).
    checkpoint : dict, optional
        Resume from an accumulated checkpoint of this function (module docstring).
    batch : int
        Channels per network (64): the spectral axis is cut into near-equal groups of at most
        this many channels, one network each.
    n, circle, centre_offset, device :
        Image size (default: the number of translations), restriction to the inscribed circle,
        rotation-axis offset in steps (default: the stored geometry's) and torch device
        (default CUDA when present).

    Returns
    -------
    generator
        Yields one :class:`Progress` per epoch and group (``loss``: mean training MSE of the
        epoch on the unit-range data; ``metrics``: ``epoch``, ``group``, ``n_groups``,
        ``channel_start``, ``channel_stop``, ``channels``, ``steps``, ``lr``, ``checkpoint``
        as above, and on a group's last event ``seconds_sections``, ``seconds_training``,
        ``seconds_inference``); returns the denoised volume DataArray ``(y, x, spectral)``
        (leading ``time``/``z`` kept), float32, with the stack's geometry and new provenance.
    """
    caller = "iterate_noise2inverse"
    cfg = _config(caller, k, net, domain, strategy, epochs, steps_per_epoch, batch_size, patch, lr, context,
                  seed, method, method_options, net_options, preview_every, checkpoint_every, lr_schedule, tta)
    batch = _drv.check_int(caller, "batch", batch)
    if checkpoint is not None and not isinstance(checkpoint, dict):
        raise InputTypeError(f"{caller}: checkpoint must be a dict (e.g. xrdwidgets.jobs.load_checkpoint(workdir)) "
                        f"or None, found {type(checkpoint).__name__}")
    params = {key: v for key, v in cfg.items() if key not in ("preview_every", "checkpoint_every")}
    params["net_options"] = {key: repr(v) for key, v in cfg["net_options"].items()}
    params["method_options"] = {key: repr(v) for key, v in cfg["method_options"].items()}
    params["net_channels"] = batch
    plan = _drv.prepare_stack(stack, caller=caller, producer="xrdwidgets.recon.noise2inverse",
                              parameters=params, batch=batch, n=n, circle=circle, centre_offset=centre_offset,
                              device=device, layout="even", whole_lead=True, label="Noise2Inverse",
                              kind=CHECKPOINT_KIND, version=_CHECKPOINT_VERSION)
    da, op = plan.stack, plan.op
    sizes = da.sizes
    n_time, n_z = sizes.get(_data.TIME, 1), sizes.get(_data.Z, 1)
    n_a = sizes[_data.ANGLE]
    K = cfg["k"]
    offsets = None
    if cfg["domain"] == "time":
        if _data.TIME not in sizes:
            raise InputError(f"{caller}: domain='time' needs a 'time' dim; the stack has dims {tuple(da.dims)}")
        if n_time < K:
            raise InputError(f"{caller}: domain='time' uses the first k={K} time steps as sections, but the "
                             f"stack has {n_time}; use k <= {n_time}")
        if n_a < 2:
            raise InputError(f"{caller}: each time step needs at least two angles, found {n_a}")
        offsets = _time_offsets(caller, da, angle_offsets, n_time)
        plan.parameters["angle_offsets"] = offsets.tolist()
    else:
        if angle_offsets is not None:
            raise InputError(f"{caller}: angle_offsets is for domain='time', found domain={cfg['domain']!r}")
        if 2 * K > n_a:
            raise InputError(f"{caller}: k={K} sections need at least {2 * K} angles (two per section), "
                             f"the stack has {n_a}; use k <= {n_a // 2}")
        if cfg["domain"] == "space" and _data.Z not in sizes:
            raise InputError(f"{caller}: domain='space' needs a 'z' dim (slices); the stack has dims "
                             f"{tuple(da.dims)}")
    groups = [(t.start, t.stop) for t in even_batches(plan.n_channels, batch)]
    T, Z = n_time, n_z
    n = op.n
    support = torch.as_tensor(np.ones((n, n)) if op.mask is None else op.mask, dtype=torch.float32,
                              device=op.device)
    preview_slice = (T // 2, Z // 2) if cfg["domain"] != "time" else (0, Z // 2)

    def solve(sino, _op, channels, checkpoint=None):
        """One channel group over every leading slice: sections, training, inference (a generator)."""
        s, e = channels.start, channels.stop
        gi = groups.index((s, e))
        n_t, n_a = op.range_shape
        sino5 = sino.reshape(T, Z, n_t, n_a, e - s)
        t0 = time.perf_counter()
        data = group_data(sino5, plan, cfg, offsets)
        timing = {"seconds_sections": time.perf_counter() - t0}
        log.debug("noise2inverse: group %d/%d (channels %d:%d): %d training images of %s", gi + 1, len(groups),
                  s, e, data.n_images, data.shape[-3:])
        res, more = yield from train_group(data, cfg, gi, op.device, checkpoint, preview_slice, support,
                                            len(groups))
        timing.update(more)
        res = res * torch.as_tensor(data.scale, device=res.device)[:, None, None] * support
        img = np.ascontiguousarray(res.permute(0, 1, 3, 4, 2).cpu().numpy(), np.float32)  # (V, Z, n, n, Cg)
        log.info("noise2inverse: group %d/%d (channels %d:%d) done: sections %.2f s, training %.2f s, "
                 "inference %.2f s", gi + 1, len(groups), s, e, timing["seconds_sections"],
                 timing["seconds_training"], timing["seconds_inference"])
        return img.reshape(T * Z, n, n, e - s), timing

    return _drv.run_stack(plan, solve, checkpoint=checkpoint)


def noise2inverse(stack, **kwargs):
    """Noise2Inverse denoising of a sinogram stack, run to the end; see :func:`iterate_noise2inverse`."""
    return run_to_end(iterate_noise2inverse(stack, **kwargs))


# ---------------------------------------------------------------------------- one group

register("noise2inverse", iterate_noise2inverse, label="Noise2Inverse (self-supervised denoising)",
         help="self-supervised denoising: a network maps k-1 angle-section reconstructions to the held-out one",
         params=[param("epochs", label="training epochs", help="training epochs of the denoising network", minimum=1),
                 param("k", label="sections",
                       help="sections (interleaved angle subsets j::k, or time steps)", minimum=2, maximum=64),
                 param("net", label="network",
                       help="denoising network: U-Net or mixed-scale dense", choices=DENOISERS),
                 param("domain", label="network sees",
                       help="what the network sees (diffraction channels, z slices, time steps)",
                       choices=DOMAINS),
                 param("lr", label="learning rate", help="Adam learning rate", minimum=1e-7, maximum=0.1),
                 param("batch_size", label="patches per step", help="patches per training step", minimum=1),
                 param("patch", label="patch size", help="patch side", minimum=4, units="px"),
                 param("lr_schedule", label="learning-rate schedule",
                       help="keep lr or decay it along a half cosine", choices=LR_SCHEDULES,
                       advanced=True),
                 param("tta", label="flip averaging",
                       help="average over the 8 flips/transposes at inference", advanced=True),
                 param("steps_per_epoch", label="steps per epoch",
                       help="training steps per epoch (default: from the data size)", kind="int",
                       minimum=1, advanced=True),
                 param("method", label="section reconstruction",
                       help="linear reconstruction of the sections", choices=SECTION_METHODS,
                       advanced=True, flag="--section-method"),
                 param("seed", label="random seed",
                       help="seed of the network and the patch sampling", minimum=0, advanced=True),
                 param("checkpoint_every", label="checkpoint every",
                       help="checkpoint every this many epochs (0: only finished groups)",
                       minimum=0, advanced=True),
                 *common_params(batch_help="channels per network")],
         presets={"quick": {"epochs": 50}})
