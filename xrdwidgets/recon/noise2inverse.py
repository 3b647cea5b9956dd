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
    costs 5–7× less per step on a CPU: measured on the benchmark below (the demo sample, 64²,
    128 channels in one network, 20 % dose, 1500 steps of 16 patches of 32²), the U-Net reached
    37.3 dB (FBP 22.4 dB, best TV 34.6 dB) in 60 s, MS-D 28.8 dB in 420 s. MS-D has far fewer
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
import math
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from .. import data as _data
from ..ops.projector import ParallelProjector
from . import driver as _drv
from ..base.progress import run_to_end
from .registry import common_params, param, register
from .batching import even_batches
from .denoise_nets import DENOISERS, build_denoiser
from .training import train
from .fbp import fbp_array

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
#: Least number of training steps per epoch (small data sets).
MIN_STEPS = 10
_CHECKPOINT_VERSION = 2  # 2: the one stack-checkpoint schema (running = {key, state})
_RECON_CHANNELS = 256  # channels reconstructed per projector call


# ---------------------------------------------------------------------------- splits
def split_angles(n_angles: int, k: int) -> list[np.ndarray]:
    """Interleaved split of ``n_angles`` angle indices into ``k`` sections.

    Section ``j`` holds the indices ``j, j + k, j + 2k, …`` (``j::k``): the sections are
    disjoint, together hold every angle once, and each spans the whole angular range.

    Parameters
    ----------
    n_angles : int
        Number of angles (>= 2·k, so every section has at least two).
    k : int
        Number of sections (>= 2).

    Returns
    -------
    list of numpy.ndarray
        ``k`` integer index arrays.
    """
    n_angles = _drv.check_int("split_angles", "n_angles", n_angles)
    k = _drv.check_int("split_angles", "k", k, minimum=2)
    if 2 * k > n_angles:
        raise ValueError(f"split_angles: k={k} sections need at least {2 * k} angles (two per section), "
                         f"found {n_angles}; use k <= {n_angles // 2}")
    return [np.arange(j, n_angles, k) for j in range(k)]


# ---------------------------------------------------------------------------- checks
def _config(caller, k, net, domain, strategy, epochs, steps_per_epoch, batch_size, patch, lr, context,
            seed, method, method_options, net_options, preview_every, checkpoint_every, lr_schedule, tta):
    dom = str(domain).lower()
    if dom not in DOMAINS:
        raise ValueError(f"{caller}: domain must be one of {DOMAINS}, found {domain!r}")
    key = str(net).lower()
    if key not in DENOISERS:
        raise ValueError(f"{caller}: net must be one of {DENOISERS}, found {net!r}")
    if strategy is None:
        strategy = "1:X" if dom == "time" else "X:1"
    strat = str(strategy).upper()
    if strat not in STRATEGIES:
        raise ValueError(f"{caller}: strategy must be one of {STRATEGIES}, found {strategy!r}")
    if dom == "time" and strat != "1:X":
        raise ValueError(f"{caller}: domain='time' denoises every time step from its own reconstruction, "
                         f"so it uses strategy '1:X', found {strategy!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"{caller}: lr_schedule must be one of {LR_SCHEDULES}, found {lr_schedule!r}")
    m = str(method).lower()
    if m not in SECTION_METHODS:
        raise ValueError(f"{caller}: method must be a linear reconstruction method, one of {SECTION_METHODS}, "
                         f"found {method!r}")
    for name, opts in (("method_options", method_options), ("net_options", net_options)):
        if opts is not None and not isinstance(opts, dict):
            raise ValueError(f"{caller}: {name} must be a dict or None, found {type(opts).__name__}")
    mopts = dict(method_options or {})
    if mopts.get("nonneg"):
        raise ValueError(f"{caller}: method_options nonneg=True makes the section reconstructions non-linear "
                         "(their noise is no longer zero-mean); Noise2Inverse needs a linear method")
    bad = sorted(set(mopts) & {"x0", "checkpoint", "checkpoint_every", "projector", "preview_every"})
    if bad:
        raise ValueError(f"{caller}: method_options may not set {bad}")
    allowed = _method_keywords(m)
    unknown = sorted(set(mopts) - set(allowed))
    if unknown:
        raise ValueError(f"{caller}: method {m!r} does not take {unknown} in method_options; it accepts {allowed}")
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
                raise ValueError(f"{caller}: coordinate 'angle_offset' must lie along 'time', found dims {c.dims}")
            angle_offsets = c.values
        else:
            return np.zeros(n_time)
    off = np.asarray(angle_offsets, dtype=np.float64).ravel()
    if off.size != n_time or not np.all(np.isfinite(off)):
        raise ValueError(f"{caller}: angle_offsets must be {n_time} finite angles in degrees (one per time step), "
                         f"found {angle_offsets!r}")
    return off


# ---------------------------------------------------------------------------- section reconstructions
def _reconstruct(sino: np.ndarray, op: ParallelProjector, method: str, options: dict) -> np.ndarray:
    """Linear reconstruction of ``(n_t, n_a, M)`` → ``(n, n, M)`` float32, ``_RECON_CHANNELS`` at a time."""
    M = sino.shape[2]
    out = np.empty((op.n, op.n, M), np.float32)
    for a in range(0, M, _RECON_CHANNELS):
        b = min(M, a + _RECON_CHANNELS)
        t = torch.as_tensor(np.ascontiguousarray(sino[:, :, a:b]), device=op.device)
        if method == "fbp":
            img = fbp_array(t, op.angles_deg, projector=op, **options)
        elif method == "sirt":
            from .sirt import iterate_sirt_array

            img = run_to_end(iterate_sirt_array(t, op, preview_every=0, **options))
        else:
            from .cgls import iterate_cgls_array

            img = run_to_end(iterate_cgls_array(t, op, preview_every=0, **options))
        out[:, :, a:b] = img.detach().cpu().numpy()
    return out


def _stacked(sino5: np.ndarray, op, method, options) -> np.ndarray:
    """Reconstruct ``(T, Z, n_t, n_a, C)`` → ``(T, Z, C, n, n)`` with one projector."""
    T, Z, n_t, n_a, C = sino5.shape
    flat = np.moveaxis(sino5, (2, 3), (0, 1)).reshape(n_t, n_a, T * Z * C)
    img = _reconstruct(flat, op, method, options).reshape(op.n, op.n, T, Z, C)
    return np.ascontiguousarray(np.transpose(img, (2, 3, 4, 0, 1)))


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
        raise TypeError(f"{caller}: checkpoint must be a dict (e.g. xrdwidgets.jobs.load_checkpoint(workdir)) "
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
            raise ValueError(f"{caller}: domain='time' needs a 'time' dim; the stack has dims {tuple(da.dims)}")
        if n_time < K:
            raise ValueError(f"{caller}: domain='time' uses the first k={K} time steps as sections, but the "
                             f"stack has {n_time}; use k <= {n_time}")
        if n_a < 2:
            raise ValueError(f"{caller}: each time step needs at least two angles, found {n_a}")
        offsets = _time_offsets(caller, da, angle_offsets, n_time)
        plan.parameters["angle_offsets"] = offsets.tolist()
    else:
        if angle_offsets is not None:
            raise ValueError(f"{caller}: angle_offsets is for domain='time', found domain={cfg['domain']!r}")
        if 2 * K > n_a:
            raise ValueError(f"{caller}: k={K} sections need at least {2 * K} angles (two per section), "
                             f"the stack has {n_a}; use k <= {n_a // 2}")
        if cfg["domain"] == "space" and _data.Z not in sizes:
            raise ValueError(f"{caller}: domain='space' needs a 'z' dim (slices); the stack has dims "
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
        data = _group_data(sino5, plan, cfg, offsets)
        timing = {"seconds_sections": time.perf_counter() - t0}
        log.debug("noise2inverse: group %d/%d (channels %d:%d): %d training images of %s", gi + 1, len(groups),
                  s, e, data.n_images, data.shape[-3:])
        res, more = yield from _train_group(data, cfg, gi, op.device, checkpoint, preview_slice, support,
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
class _Data:
    """Sections and inference inputs of one channel group, unit-range tensors ``(…, C, H, W)``.

    ``sec``: ``(S, V, Z, C, H, W)`` — section, volume (time step), slice; ``total``: their sum
    ``(1, V, Z, C, H, W)``. A training image is ``(s, v, z)``: for ``"X:1"`` the input is the mean
    of the other sections, ``(total − sec[s]) / (S − 1)``, and the target ``sec[s]``; ``"1:X"``
    swaps them. Pairs are formed per patch, so a group holds ``S + 1`` copies of its images (plus
    the inference input), not ``2·S``. ``inf``: a list of ``(V', Z, C, H, W)`` tensors whose
    network outputs are averaged (one for X:1 and time, ``S`` for 1:X). ``scale``: ``(C,)``.
    """

    def __init__(self, sec, total, inf, scale, context, x_to_1):
        self.sec, self.total, self.inf, self.scale, self.context = sec, total, inf, scale, context
        self.x_to_1 = x_to_1
        S, V, Z = sec.shape[:3]
        self.n_images = S * V * Z
        self.shape = tuple(sec.shape)

    def neighbours(self, z, Z):
        c = self.context
        return [min(max(z + d, 0), Z - 1) for d in range(-c, c + 1)]

    def stacked(self, arr, v, z):
        """``(C·(2c+1), H, W)``: slice ``z`` of volume ``v`` of ``arr`` with its ``context`` neighbours."""
        if self.context == 0:
            return arr[v, z]
        return arr[v, self.neighbours(z, arr.shape[1])].reshape(-1, *arr.shape[-2:])

    def pair(self, s, v, z, ys, xs):
        """Input ``(C·(2c+1), h, w)`` and target ``(C, h, w)`` of training image ``(s, v, z)`` on a window."""
        S, Z = self.shape[0], self.shape[2]
        zs = self.neighbours(z, Z)
        one = self.sec[s, v, zs, :, ys, xs]
        others = (self.total[0, v, zs, :, ys, xs] - one) / (S - 1)
        inp, tgt = (others, one) if self.x_to_1 else (one, others)
        mid = self.context
        return inp.reshape(-1, *inp.shape[-2:]), tgt[mid]


def _group_data(sino5, plan, cfg, offsets) -> _Data:
    """Reconstruct the sections of one group ``(T, Z, n_t, n_a, C)`` and build the training pairs."""
    op = plan.op
    K, method, mopts = cfg["k"], cfg["method"], cfg["method_options"]
    mask = op.mask if op.mask is not None else None

    def projector(angles):
        return ParallelProjector(op.n, angles, n_translations=op.n_translations, centre_offset=op.centre_offset,
                                 mask=mask if mask is not None else False, device=op.device)

    if cfg["domain"] == "time":
        T = sino5.shape[0]
        recs = np.empty((T,) + (sino5.shape[1], sino5.shape[4], op.n, op.n), np.float32)
        cache: dict = {}
        for t in range(T):
            key = float(offsets[t])
            if key not in cache:
                cache[key] = op if key == 0.0 else projector(op.angles_deg + key)
            recs[t] = _stacked(sino5[t:t + 1], cache[key], method, mopts)[0]
        inf = [recs]                                        # (T, Z, C, n, n); sections: the first K steps
    else:
        idx = split_angles(op.angles_deg.size, K)
        sec = np.stack([_stacked(sino5[:, :, :, ix], projector(op.angles_deg[ix]), method, mopts) for ix in idx])
        inf = [_stacked(sino5, op, method, mopts)] if cfg["strategy"] == "X:1" else list(sec)
    support = np.ones((op.n, op.n), bool) if op.mask is None else op.mask
    ref = np.abs(np.mean(inf, axis=0))[..., support]      # (V, Z, C, m)
    ref = np.moveaxis(ref, 2, 0).reshape(ref.shape[2], -1)
    scale = np.percentile(ref, 99.5, axis=1) if ref.shape[1] else np.ones(ref.shape[0])
    floor = max(float(scale.max()) * 1e-3, 1e-30)
    scale = np.maximum(scale, floor).astype(np.float32)
    dev = op.device

    def tensor(a):
        return torch.as_tensor(a / scale[:, None, None], dtype=torch.float32, device=dev)

    ctx = cfg["context"] if cfg["domain"] == "space" else 0
    if cfg["domain"] == "time":
        inf_t = [tensor(recs)]
        sec_t = inf_t[0][:K, None]                         # (K, 1, Z, C, n, n), a view
        return _Data(sec_t, sec_t.sum(0, keepdim=True), inf_t, scale, ctx, x_to_1=False)
    sec_t = tensor(sec)
    inf_t = [tensor(inf[0])] if cfg["strategy"] == "X:1" else list(sec_t)
    return _Data(sec_t, sec_t.sum(0, keepdim=True), inf_t, scale, ctx, x_to_1=cfg["strategy"] == "X:1")


def _dihedral(x: torch.Tensor, code: int) -> torch.Tensor:
    """One of the 8 flips/rotations of the last two axes."""
    if code & 4:
        x = x.transpose(-1, -2)
    if code & 1:
        x = x.flip(-1)
    if code & 2:
        x = x.flip(-2)
    return x


def _image_indices(seed: int, start: int, count: int, n_images: int) -> list[int]:
    """Training images ``start … start + count - 1`` of the schedule: rounds of a permutation of all images.

    Draw ``c`` takes image ``perm_r[c mod n_images]`` with ``r = c div n_images`` and ``perm_r`` a
    random permutation seeded by ``(seed, r)``: over every whole round each (section, slice) image —
    so each section as target — is used exactly once. Stateless, so a resumed run draws the same.
    """
    out, perm, r_cached = [], None, None
    for c in range(start, start + count):
        r, pos = divmod(c, n_images)
        if r != r_cached:
            perm = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed * 100003 + r)).tolist()
            r_cached = r
        out.append(perm[pos])
    return out


def _sample(data: _Data, gen: torch.Generator, images: list[int], p: int):
    """A batch of random ``p × p`` patches (input, target) of the given training images, augmented alike."""
    S, V, Z, C, H, W = data.shape
    draw = torch.randint(0, 2**31 - 1, (len(images), 3), generator=gen).tolist()
    xs, ys = [], []
    for i, (r_y, r_x, r_aug) in zip(images, draw):
        s, rest = divmod(i, V * Z)
        v, z = divmod(rest, Z)
        y0, x0 = r_y % (H - p + 1), r_x % (W - p + 1)
        xin, tg = data.pair(s, v, z, slice(y0, y0 + p), slice(x0, x0 + p))
        xs.append(_dihedral(xin, r_aug % 8))
        ys.append(_dihedral(tg, r_aug % 8))
    return torch.stack(xs), torch.stack(ys)


def _apply(model, x: torch.Tensor, tta: bool) -> torch.Tensor:
    """``model`` on one image ``(c, H, W)`` → ``(C, H, W)``; ``tta``: mean over the 8 flips/transposes."""
    if not tta:
        return model(x[None])[0]
    out = 0.0
    for code in range(8):
        y = model(_dihedral(x, code)[None])[0]
        # undo: the transforms are applied transpose first, then flips
        if code & 2:
            y = y.flip(-2)
        if code & 1:
            y = y.flip(-1)
        if code & 4:
            y = y.transpose(-1, -2)
        out = out + y
    return out / 8.0


def _infer(model, data: _Data, which=None, tta: bool = False) -> torch.Tensor:
    """Network output of the inference inputs ``(V, Z, C, H, W)`` (unit range); ``which=(v, z)``: one slice."""
    model.eval()
    with torch.no_grad():
        outs = []
        for arr in data.inf:
            V, Z = arr.shape[:2]
            sl = [which] if which is not None else [(v, z) for v in range(V) for z in range(Z)]
            res = torch.stack([_apply(model, data.stacked(arr, v, z), tta) for v, z in sl])
            outs.append(res if which is not None else res.reshape(V, Z, *res.shape[1:]))
        out = torch.stack(outs).mean(0)
    model.train()
    return out


def _train_group(data: _Data, cfg, gi, device, state, preview_slice, support, n_groups):
    """Train one group's network with the one training loop (:func:`~xrdwidgets.recon.training.train`,
    minibatch mode): a generator of per-epoch :class:`Progress` (the group's running state in
    ``metrics["checkpoint"]`` every ``checkpoint_every`` epochs); returns the denoised inference
    output ``(V, Z, C, H, W)`` in unit range and timings."""
    S, V, Z, C, H, W = data.shape
    c_in = C * (2 * data.context + 1)
    seed = cfg["seed"] * 1009 + gi
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_denoiser(cfg["net"], c_in, C, **cfg["net_options"])
    model = model.to(device)
    gen = torch.Generator().manual_seed(seed)
    p = min(cfg["patch"], H, W)
    B = cfg["batch_size"]
    steps = cfg["steps_per_epoch"] or max(MIN_STEPS, math.ceil(data.n_images * H * W / (B * p * p)))
    scale = torch.as_tensor(data.scale, device=device)[:, None, None]

    def step_loss(net, epoch, i):
        images = _image_indices(seed, ((epoch - 1) * steps + i) * B, B, data.n_images)
        xb, yb = _sample(data, gen, images, p)
        return F.mse_loss(net(xb), yb)

    def preview(_out):
        img = _infer(model, data, preview_slice)[0] * scale
        return (img.sum(0) * support).cpu().numpy()

    def set_rng(extra):
        gen.set_state(torch.as_tensor(extra["rng"], dtype=torch.uint8))

    if state is not None and state.get("group") != gi:
        raise ValueError(f"iterate_noise2inverse: the checkpoint's running state is of group {state.get('group')!r}, "
                         f"not {gi}")
    t0 = time.perf_counter()
    events = train(model, step_loss=step_loss, steps_per_epoch=steps, lr=cfg["lr"], max_epochs=cfg["epochs"],
                   lr_schedule=cfg["lr_schedule"], preview_every=cfg["preview_every"], preview_fn=preview,
                   checkpoint_every=cfg["checkpoint_every"], checkpoint=state, checkpoint_extra={"group": gi},
                   state_hooks=(lambda: {"rng": gen.get_state().clone()}, set_rng))
    while True:
        try:
            ev = next(events)
        except StopIteration:
            break
        yield replace(ev, metrics={**ev.metrics, "group": gi + 1, "n_groups": n_groups})
    t1 = time.perf_counter()
    out = _infer(model, data, tta=cfg["tta"])
    return out, {"seconds_training": t1 - t0, "seconds_inference": time.perf_counter() - t1}


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
