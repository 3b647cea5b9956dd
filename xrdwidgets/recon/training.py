"""One training driver for every generator-network reconstruction (SD2I, ParallaxNet, …).

A generator network (:mod:`~xrdwidgets.recon.nets`) has no data input: ``model()`` returns its
output (an image batch ``(y, x, C)`` or a volume). A method plugs in with a *closure*
``loss_fn(output) -> scalar tensor`` that applies its forward operator (the projector for SD2I,
the parallax operator for ParallaxNet) and compares with the measured data. :func:`train` runs
the optimisation as a generator of :class:`~xrdwidgets.base.progress.Progress` events::

    gen = train(model, lambda out: mae_ssim(op(out), target), max_epochs=6000, seed=0)
    result = run_to_end(gen)          # TrainResult: output, model, losses, stop reason

Schedule
    Adam (``lr`` = 5e-4); the learning rate is multiplied by ``factor`` (0.5) after ``patience``
    (300) epochs without a relative improvement of ``threshold`` (1e-4) — PyTorch's
    ``ReduceLROnPlateau``; training stops after ``max_epochs`` (6000) or as soon as the learning
    rate falls below ``min_lr`` (1e-6: nine halvings of 5e-4).

Optional pre-training (``pretrain_target=``, ``pretrain_epochs=``, about 1000): the output is
first fitted to a target (for SD2I the FBP image) by MSE with its own Adam optimiser, which
speeds up the main training.

Checkpoints and resume
    With ``checkpoint_every=N`` every ``N``-th epoch's :class:`Progress` (but the last one's:
    the result follows) carries ``metrics["checkpoint"]``, a dict the job system
    (:mod:`xrdwidgets.jobs`) writes to ``checkpoint.pt`` (tensors, numpy arrays and plain values
    only, so it loads with ``torch.load(weights_only=True)``): ``{"format", "phase", "epoch", "model", "optimizer",
    "pretrain_optimizer", "scheduler", "scaler", "best_loss", "best_output", "losses",
    "rng_torch", "rng_numpy", "rng_cuda"}`` plus the caller's ``checkpoint_extra`` (all tensors
    copied to the CPU). When the generator is closed early (a cancelled job) and
    ``checkpoint_path`` is given, the state at that point is written there atomically (a yield is
    not possible while closing). ``train(..., checkpoint=torch.load(path))`` on a freshly built
    model continues exactly where the checkpoint was taken: on the CPU a resumed seeded run gives
    the same losses and weights as an uninterrupted one.

Per-channel normalisation, checked training arguments and the checkpoint format:
:mod:`xrdwidgets.recon.training_setup`.

Mixed precision (``amp=True``: bfloat16 autocast of the model's forward, float16 with a gradient
scaler where bfloat16 is missing) and ``compile=True`` (``torch.compile`` of the model) act on
CUDA only; on the CPU they are ignored with an ``INFO`` log line (bfloat16 convolutions and the
inductor compiler are slow or missing on most CPUs). The loss is always computed in float32.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..base.errors import InputError, InputTypeError, StateError
from . import driver as _drv
from ..base.progress import Progress
# The set-up around train(), re-exported: the methods use them as ``_training.<name>``.
from .training_setup import (CHECKPOINT_FORMAT, ChannelScaling, check_train_checkpoint, cpu_copy,  # noqa: F401
                             fbp_gain, pretrain_epochs, save_checkpoint, training_config)

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "ChannelScaling",
    "LR_SCHEDULES",
    "TrainResult",
    "default_preview",
    "fbp_gain",
    "training_config",
    "save_checkpoint",
    "train",
]

#: ``lr_schedule=`` values of :func:`train`.
LR_SCHEDULES = ("plateau", "constant", "cosine")


# ---------------------------------------------------------------------------- result
@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    output : torch.Tensor
        Detached model output: the one of lowest loss (``keep_best=True``) or after the last step.
    model : torch.nn.Module
        The trained model (weights after the last step).
    best_loss : float
        Lowest loss of the main training.
    epochs : int
        Main-training epochs done (counting those before a resume).
    stop_reason : str
        ``"max_epochs"`` or ``"min_lr"``.
    losses : list of float
        Loss of every main-training epoch (before a resume included).
    """

    output: torch.Tensor
    model: nn.Module
    best_loss: float
    epochs: int
    stop_reason: str
    losses: list = field(default_factory=list)


def default_preview(output: torch.Tensor) -> np.ndarray:
    """2-D numpy preview of a model output: trailing axes summed until two remain."""
    x = output.detach().float()
    while x.dim() > 2:
        x = x.sum(-1)
    return x.cpu().numpy()


# ---------------------------------------------------------------------------- checkpoints

# ---------------------------------------------------------------------------- mixed precision / compile
class _Forward:
    """``model()``, optionally compiled and under autocast (CUDA only); output in float32."""

    def __init__(self, model, device, amp, compile_):
        self.model = model
        self.dtype = None
        self.scaler = None
        self.compiled = None
        if amp and device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            if self.dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")
        elif amp:
            log.info("train: amp=True ignored on %s (mixed precision acts on CUDA only)", device)
        if compile_ and device.type == "cuda":
            self.compiled = torch.compile(model)
        elif compile_:
            log.info("train: compile=True ignored on %s (torch.compile acts on CUDA only)", device)

    def __call__(self):
        ctx = torch.autocast("cuda", dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()
        with ctx:
            if self.compiled is not None:
                try:
                    out = self.compiled()
                except Exception as exc:  # noqa: BLE001 - compilation problems fall back to eager
                    log.warning("train: torch.compile failed (%s); running the model eagerly", exc)
                    self.compiled = None
                    out = self.model()
            else:
                out = self.model()
        return out.float()

    def step(self, loss, opt):
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
        else:
            loss.backward()
            opt.step()


def _split_loss(caller, value, epoch):
    extra = {}
    if isinstance(value, tuple):
        value, extra = value[0], dict(value[1]) if len(value) > 1 else {}
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise InputError(f"{caller}: loss_fn must return a scalar tensor (or (tensor, dict)), found "
                         f"{type(value).__name__}{tuple(value.shape) if isinstance(value, torch.Tensor) else ''}")
    v = float(value.detach())
    if not math.isfinite(v):
        raise FloatingPointError(f"{caller}: the loss is {v} at epoch {epoch}; lower lr or check the data "
                                 "for NaN/inf")
    return value.reshape(()), v, {k: float(x) for k, x in extra.items()}


# ---------------------------------------------------------------------------- driver
def train(model: nn.Module, loss_fn=None, *, lr: float = 5e-4, max_epochs: int = 6000, patience: int = 300,
          factor: float = 0.5, min_lr: float = 1e-6, threshold: float = 1e-4, keep_best: bool = True,
          preview_every: int = 100, preview_fn=None, checkpoint_every: int = 0, checkpoint=None,
          checkpoint_path=None, checkpoint_extra: dict | None = None, seed: int | None = None,
          pretrain_target: torch.Tensor | None = None, pretrain_epochs: int = 1000,
          pretrain_lr: float | None = None, amp: bool = False, compile: bool = False,
          step_loss=None, steps_per_epoch: int = 1, lr_schedule: str = "plateau", state_hooks=None):
    """Train a network, as a generator of :class:`Progress` events: the one training loop.

    Two kinds of network: a *generator* (SD2I, ParallaxNet: ``model()`` has no input; one step
    per epoch on ``loss_fn(model())``), or a network trained on *minibatches* (Noise2Inverse:
    ``step_loss(model, epoch, step)`` draws a minibatch and returns its loss; ``steps_per_epoch``
    steps per epoch, the epoch's loss is their mean).

    Parameters
    ----------
    model : torch.nn.Module
        Generator with no input: ``model()`` returns its output (any shape); or any network
        when ``step_loss`` is given.
    loss_fn : callable
        ``loss_fn(output) -> scalar tensor`` (or ``(tensor, dict)``: the dict's numbers are added to
        the event's ``metrics``). ``output`` is float32. None with ``step_loss``.
    step_loss : callable, optional
        ``step_loss(model, epoch, step) -> scalar tensor`` (epoch from 1, step from 0): the loss
        of one minibatch. There is no output to keep then (``TrainResult.output`` is None: the
        caller runs its own inference; ``preview_fn(None)`` makes its previews), and no
        pre-training.
    steps_per_epoch : int
        Optimiser steps per epoch with ``step_loss`` (1 otherwise).
    lr_schedule : {"plateau", "constant", "cosine"}
        ``"plateau"`` (below); ``"constant"``; ``"cosine"``: ``lr`` decays to 0 along a half
        cosine over all steps (set before each step). ``min_lr`` stops only the plateau schedule.
    state_hooks : (callable, callable), optional
        ``(get, set)``: ``get()`` returns a dict of the caller's own state to keep in every
        checkpoint (e.g. a sampler's RNG), ``set(dict)`` restores it on resume.
    lr : float
        Adam learning rate (> 0).
    max_epochs : int
        Most main-training epochs (>= 1).
    patience, factor, threshold : int, float, float
        Plateau schedule: ``lr ← factor·lr`` after ``patience`` epochs without a relative
        improvement of ``threshold``.
    min_lr : float
        Training stops as soon as the learning rate falls below it (>= 0).
    keep_best : bool
        Return the output of the lowest loss (else the output after the last step).
    preview_every : int
        A preview every this many epochs and at the last (0: last only).
    preview_fn : callable, optional
        ``preview_fn(output) -> 2-D numpy`` (default :func:`default_preview`).
    checkpoint_every : int
        Every this many main-training (and pre-training) epochs an event carries
        ``metrics["checkpoint"]`` (0: never; not at the last epoch, which returns the result).
    checkpoint : dict, optional
        A checkpoint of this driver to resume from (``model`` must have the same architecture).
    checkpoint_path : path-like, optional
        Also write every checkpoint there, and the current state when the generator is closed
        before the end.
    checkpoint_extra : dict, optional
        Added to every checkpoint (read when the checkpoint is made, so it may be updated).
    seed : int, optional
        Seeds torch's and NumPy's global RNGs at the start (not on resume: the checkpoint's RNG
        states are restored). Weight initialisation happens when the model is built, before.
    pretrain_target : torch.Tensor, optional
        Fit the output to this tensor (same shape) by MSE first.
    pretrain_epochs : int
        Pre-training epochs when ``pretrain_target`` is given (1000).
    pretrain_lr : float, optional
        Pre-training learning rate (default ``lr``).
    amp, compile : bool
        Mixed precision / ``torch.compile`` (CUDA only; see the module docstring).

    Yields
    ------
    Progress
        One per epoch: ``iteration`` counts pre-training then training epochs (``total`` =
        pre-training + ``max_epochs``); ``loss``; ``metrics``: ``phase`` (``"pretrain"`` or
        ``"train"``), ``epoch`` (within the phase), ``lr`` (used for this epoch's step),
        ``best_loss``, the loss function's extras, and ``checkpoint`` every
        ``checkpoint_every`` epochs; ``preview`` every ``preview_every`` epochs.

    Returns
    -------
    TrainResult
    """
    caller = "train"
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"{caller}: model must be a torch.nn.Module, found {type(model).__name__}")
    if step_loss is not None:
        if loss_fn is not None or not callable(step_loss):
            raise InputTypeError(f"{caller}: give either loss_fn (a generator network) or a callable step_loss "
                            "(minibatches), not both")
        if pretrain_target is not None:
            raise InputError(f"{caller}: pretrain_target is for generator networks (loss_fn), not step_loss")
    elif not callable(loss_fn):
        raise InputTypeError(f"{caller}: loss_fn must be callable, found {type(loss_fn).__name__}")
    if lr_schedule not in LR_SCHEDULES:
        raise InputError(f"{caller}: lr_schedule must be one of {LR_SCHEDULES}, found {lr_schedule!r}")
    if state_hooks is not None and not (len(state_hooks) == 2 and all(callable(f) for f in state_hooks)):
        raise InputTypeError(f"{caller}: state_hooks must be a pair of callables (get, set) or None")
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError(f"{caller}: model has no trainable parameters")
    cfg = {
        "lr": _drv.check_float(caller, "lr", lr, minimum=0.0, strict=True),
        "max_epochs": _drv.check_int(caller, "max_epochs", max_epochs),
        "patience": _drv.check_int(caller, "patience", patience, minimum=0),
        "factor": _drv.check_float(caller, "factor", factor, minimum=0.0, strict=True, maximum=1.0),
        "min_lr": _drv.check_float(caller, "min_lr", min_lr, minimum=0.0),
        "threshold": _drv.check_float(caller, "threshold", threshold, minimum=0.0),
        "preview_every": _drv.check_int(caller, "preview_every", preview_every, minimum=0),
        "checkpoint_every": _drv.check_int(caller, "checkpoint_every", checkpoint_every, minimum=0),
        "keep_best": bool(keep_best) and step_loss is None,
        "steps": 1 if step_loss is None else _drv.check_int(caller, "steps_per_epoch", steps_per_epoch),
        "schedule": lr_schedule,
    }
    if preview_fn is not None and not callable(preview_fn):
        raise InputTypeError(f"{caller}: preview_fn must be callable or None, found {type(preview_fn).__name__}")
    if seed is not None:
        seed = _drv.check_int(caller, "seed", seed, minimum=0)
    if checkpoint is not None:
        check_train_checkpoint(caller, checkpoint)
    if checkpoint_extra is not None and not isinstance(checkpoint_extra, dict):
        raise InputTypeError(f"{caller}: checkpoint_extra must be a dict or None, found {type(checkpoint_extra).__name__}")
    n_pre = 0
    if pretrain_target is not None:
        if not isinstance(pretrain_target, torch.Tensor):
            raise InputTypeError(f"{caller}: pretrain_target must be a torch tensor, found "
                             f"{type(pretrain_target).__name__}")
        n_pre = _drv.check_int(caller, "pretrain_epochs", pretrain_epochs, minimum=0)
    cfg["pretrain_lr"] = cfg["lr"] if pretrain_lr is None else \
        _drv.check_float(caller, "pretrain_lr", pretrain_lr, minimum=0.0, strict=True)
    if preview_fn is None:
        preview_fn = default_preview if step_loss is None else (lambda _out: None)
    return _train(model, loss_fn, cfg, n_pre, pretrain_target, preview_fn, checkpoint,
                  None if checkpoint_path is None else Path(checkpoint_path), checkpoint_extra, seed,
                  bool(amp), bool(compile), step_loss, state_hooks)


def _train(model, loss_fn, cfg, n_pre, pre_target, preview_fn, ckpt_in, ckpt_path, extra, seed, amp, compile_,
           step_loss=None, hooks=None):
    caller = "train"
    device = next(model.parameters()).device
    fwd = _Forward(model, device, amp, compile_)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_pre = torch.optim.Adam(params, lr=cfg["pretrain_lr"])
    opt = torch.optim.Adam(params, lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=cfg["factor"], patience=cfg["patience"], threshold=cfg["threshold"],
        threshold_mode="rel", min_lr=0.0)
    if pre_target is not None:
        pre_target = pre_target.detach().to(device=device, dtype=torch.float32)
    st = {"phase": "pretrain" if n_pre > 0 else "train", "epoch": 0, "best_loss": math.inf,
          "best_output": None, "losses": []}

    def make_checkpoint():
        ck = {"format": CHECKPOINT_FORMAT, "phase": st["phase"], "epoch": st["epoch"],
              "model": cpu_copy(model.state_dict()), "optimizer": cpu_copy(opt.state_dict()),
              "pretrain_optimizer": cpu_copy(opt_pre.state_dict()),
              "scheduler": cpu_copy(sched.state_dict()),
              "scaler": None if fwd.scaler is None else cpu_copy(fwd.scaler.state_dict()),
              "best_loss": st["best_loss"], "best_output": cpu_copy(st["best_output"]),
              "losses": list(st["losses"]), "rng_torch": torch.get_rng_state(),
              "rng_numpy": np.random.get_state(),
              "rng_cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None}
        if extra:
            ck.update({k: cpu_copy(v) for k, v in extra.items()})
        if hooks is not None:
            ck["extra_state"] = cpu_copy(hooks[0]())
        return ck

    if ckpt_in is not None:
        try:
            model.load_state_dict(ckpt_in["model"])
        except RuntimeError as exc:
            raise StateError(f"{caller}: checkpoint does not fit the model: {exc}") from None
        opt.load_state_dict(ckpt_in["optimizer"])
        if ckpt_in.get("pretrain_optimizer") is not None:
            opt_pre.load_state_dict(ckpt_in["pretrain_optimizer"])
        sched.load_state_dict(ckpt_in["scheduler"])
        if fwd.scaler is not None and ckpt_in.get("scaler"):
            fwd.scaler.load_state_dict(ckpt_in["scaler"])
        st.update(phase=ckpt_in["phase"], epoch=int(ckpt_in["epoch"]),
                  best_loss=float(ckpt_in.get("best_loss", math.inf)), losses=list(ckpt_in.get("losses", [])))
        bo = ckpt_in.get("best_output")
        st["best_output"] = None if bo is None else bo.to(device)
        if ckpt_in.get("rng_torch") is not None:
            torch.set_rng_state(ckpt_in["rng_torch"])
        if ckpt_in.get("rng_numpy") is not None:
            np.random.set_state(ckpt_in["rng_numpy"])
        if ckpt_in.get("rng_cuda") is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(ckpt_in["rng_cuda"])
        if hooks is not None:
            if not isinstance(ckpt_in.get("extra_state"), dict):
                raise StateError(f"{caller}: checkpoint lacks the caller's state ('extra_state')")
            hooks[1](ckpt_in["extra_state"])
        if st["phase"] == "pretrain" and st["epoch"] >= n_pre:
            st.update(phase="train", epoch=0)
        log.info("train: resuming at %s epoch %d", st["phase"], st["epoch"] + 1)
    elif seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed)

    total = n_pre + cfg["max_epochs"]
    every = cfg["checkpoint_every"]
    stop_reason = "max_epochs"

    def checkpoint_metric(epoch, last):
        if not every or epoch % every or last:
            return {}
        ck = make_checkpoint()
        if ckpt_path is not None:
            save_checkpoint(ck, ckpt_path)
        return {"checkpoint": ck}

    try:
        # ------------------------------------------------------------ pre-training
        if st["phase"] == "pretrain":
            for e in range(st["epoch"] + 1, n_pre + 1):
                opt_pre.zero_grad(set_to_none=True)
                out = fwd()
                if out.shape != pre_target.shape:
                    raise InputError(f"{caller}: pretrain_target has shape {tuple(pre_target.shape)} but the "
                                     f"model output has shape {tuple(out.shape)}")
                loss = torch.mean((out - pre_target) ** 2)
                loss, v, _ = _split_loss(caller, loss, e)
                fwd.step(loss, opt_pre)
                st["epoch"] = e
                metrics = {"phase": "pretrain", "epoch": e, "lr": cfg["pretrain_lr"]}
                metrics.update(checkpoint_metric(e, False))
                yield Progress(iteration=e, total=total, loss=v, metrics=metrics,
                               preview=preview_fn(out) if _drv.want_preview(e, n_pre, cfg["preview_every"])
                               else None)
            st.update(phase="train", epoch=0)
        # ------------------------------------------------------------ training
        E, S = cfg["max_epochs"], cfg["steps"]
        for e in range(st["epoch"] + 1, E + 1):
            lr_used = opt.param_groups[0]["lr"]
            if step_loss is None:
                opt.zero_grad(set_to_none=True)
                out = fwd()
                loss, v, extras = _split_loss(caller, loss_fn(out), e)
                fwd.step(loss, opt)
            else:  # minibatches: S steps, the epoch's loss is their mean
                out, extras, acc = None, {"steps": S}, 0.0
                for i in range(S):
                    if cfg["schedule"] == "cosine":
                        for grp in opt.param_groups:
                            grp["lr"] = cfg["lr"] * 0.5 * (1.0 + math.cos(math.pi * ((e - 1) * S + i) / (E * S)))
                    opt.zero_grad(set_to_none=True)
                    loss, v_i, _ = _split_loss(caller, step_loss(model, e, i), e)
                    fwd.step(loss, opt)
                    acc += v_i
                v, lr_used = acc / S, opt.param_groups[0]["lr"]
            st["losses"].append(v)
            if v < st["best_loss"]:
                st["best_loss"] = v
                if cfg["keep_best"]:
                    st["best_output"] = out.detach().clone()
            if cfg["schedule"] == "plateau":
                sched.step(v)
            st["epoch"] = e
            stop = cfg["schedule"] == "plateau" and opt.param_groups[0]["lr"] < cfg["min_lr"]
            metrics = {"phase": "train", "epoch": e, "lr": lr_used, "best_loss": st["best_loss"], **extras}
            metrics.update(checkpoint_metric(e, stop or e == cfg["max_epochs"]))
            show = stop or _drv.want_preview(e, cfg["max_epochs"], cfg["preview_every"])
            yield Progress(iteration=n_pre + e, total=total, loss=v, metrics=metrics,
                           preview=preview_fn(out) if show else None)
            if stop:
                stop_reason = "min_lr"
                log.info("train: learning rate %.3g below min_lr %.3g after epoch %d: stopping",
                         opt.param_groups[0]["lr"], cfg["min_lr"], e)
                break
    except GeneratorExit:
        if ckpt_path is not None:
            save_checkpoint(make_checkpoint(), ckpt_path)
            log.info("train: closed at %s epoch %d; state written to %s", st["phase"], st["epoch"], ckpt_path)
        raise

    if cfg["keep_best"] and st["best_output"] is not None:
        output = st["best_output"]
    elif step_loss is not None:
        output = None  # a minibatch-trained network: the caller runs its inference
    else:
        with torch.no_grad():
            output = fwd().detach()
    return TrainResult(output=output, model=model, best_loss=st["best_loss"], epochs=st["epoch"],
                       stop_reason=stop_reason, losses=list(st["losses"]))
