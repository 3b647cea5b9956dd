"""One channel group of Noise2Inverse: its section reconstructions, training data, network
training and inference (see :mod:`xrdwidgets.recon.noise2inverse` for the method).

:func:`split_angles` splits the angles into interleaved sections; :func:`group_data` reconstructs
each section of a channel group and builds the training images (:class:`GroupData`);
:func:`train_group` trains the denoising network on random patches and applies it (a generator
of Progress events, resumable from its own training state).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..base.errors import InputError, StateError
from ..base.progress import run_to_end
from ..ops.projector import ParallelProjector
from . import driver as _drv
from .denoise_nets import build_denoiser
from .fbp import fbp_array
from .training import train

log = logging.getLogger(__name__)

__all__ = ["split_angles", "GroupData", "group_data", "train_group", "MIN_STEPS"]

#: Least number of training steps per epoch (small data sets).
MIN_STEPS = 10
_RECON_CHANNELS = 256  # channels reconstructed per projector call


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
        raise InputError(f"split_angles: k={k} sections need at least {2 * k} angles (two per section), "
                         f"found {n_angles}; use k <= {n_angles // 2}")
    return [np.arange(j, n_angles, k) for j in range(k)]


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


class GroupData:
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


def group_data(sino5, plan, cfg, offsets) -> GroupData:
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
        return GroupData(sec_t, sec_t.sum(0, keepdim=True), inf_t, scale, ctx, x_to_1=False)
    sec_t = tensor(sec)
    inf_t = [tensor(inf[0])] if cfg["strategy"] == "X:1" else list(sec_t)
    return GroupData(sec_t, sec_t.sum(0, keepdim=True), inf_t, scale, ctx, x_to_1=cfg["strategy"] == "X:1")


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


def _sample(data: GroupData, gen: torch.Generator, images: list[int], p: int):
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


def _infer(model, data: GroupData, which=None, tta: bool = False) -> torch.Tensor:
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


def train_group(data: GroupData, cfg, gi, device, state, preview_slice, support, n_groups):
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
        raise StateError(f"iterate_noise2inverse: the checkpoint's running state is of group {state.get('group')!r}, "
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
