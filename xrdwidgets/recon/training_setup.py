"""What a network method sets up around :func:`~xrdwidgets.recon.training.train`: its checked
training arguments, the per-channel scaling of its data, the image gain of normalised sinograms,
and the format of training checkpoints.

Per-channel normalisation (ParallaxNet paper): :class:`ChannelScaling` divides each channel's
sinogram by its maximum and each image channel by the matching factor, so every channel weighs
alike in the loss while the result keeps absolute intensities.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..base.atomic import atomic_torch_save
from ..base.errors import InputError, InputTypeError, StateError
from . import driver as _drv

__all__ = ["CHECKPOINT_FORMAT", "ChannelScaling", "check_train_checkpoint", "cpu_copy", "fbp_gain",
           "pretrain_epochs", "save_checkpoint", "training_config"]

#: ``checkpoint["format"]`` of :func:`~xrdwidgets.recon.training.train`'s checkpoints.
CHECKPOINT_FORMAT = "xrdwidgets.train/1"


@dataclass(frozen=True)
class ChannelScaling:
    """Per-channel normalisation factors (channel axis last).

    A normalised sinogram is ``b / sino`` (each channel's maximum becomes 1); a normalised image
    is ``x / image``. With ``image = sino · gain``, the forward projection of a normalised image
    times ``gain`` is the normalised sinogram: ``A(x)/sino = A(x̃ · gain)``.

    Attributes
    ----------
    sino : torch.Tensor
        ``(C,)`` sinogram factors: each channel's maximum (its maximum absolute value where the
        maximum is ≤ 0; 1 for an all-zero channel).
    image : torch.Tensor
        ``(C,)`` image factors, ``sino · gain``.
    """

    sino: torch.Tensor
    image: torch.Tensor

    @classmethod
    def from_sinogram(cls, sino: torch.Tensor, *, gain=None) -> ChannelScaling:
        """Factors of a sinogram batch ``(n_t, n_angles, C)`` (any leading axes, channel last).

        ``gain`` (a number or ``C`` of them, default 1) sets ``image = sino · gain``.
        """
        if not isinstance(sino, torch.Tensor) or sino.dim() < 1:
            raise InputTypeError("ChannelScaling.from_sinogram: sino must be a torch tensor with the channel "
                             f"axis last, found {type(sino).__name__}")
        flat = sino.detach().reshape(-1, sino.shape[-1]).float()
        mx = flat.max(0).values
        amax = flat.abs().max(0).values
        s = torch.where(mx > 0, mx, torch.where(amax > 0, amax, torch.ones_like(mx)))
        g = torch.ones_like(s) if gain is None else torch.as_tensor(gain, dtype=s.dtype, device=s.device)
        if g.numel() not in (1, s.numel()) or not bool(torch.isfinite(g).all()) or bool((g <= 0).any()):
            raise InputError(f"ChannelScaling.from_sinogram: gain must be a number > 0 or {s.numel()} of "
                             f"them, found {gain!r}")
        return cls(sino=s, image=s * g.reshape(-1).expand_as(s))

    def normalise_sino(self, b: torch.Tensor) -> torch.Tensor:
        """``b / sino`` (channel axis last)."""
        return b / self.sino

    def denormalise_sino(self, b: torch.Tensor) -> torch.Tensor:
        """``b · sino``: normalised sinograms back to absolute units."""
        return b * self.sino

    def normalise_image(self, x: torch.Tensor) -> torch.Tensor:
        """``x / image`` (channel axis last)."""
        return x / self.image

    def denormalise_image(self, x: torch.Tensor) -> torch.Tensor:
        """``x · image``: normalised images back to absolute units."""
        return x * self.image


def cpu_copy(obj):
    """Deep copy with every tensor detached, cloned and on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


def save_checkpoint(ckpt: dict, path) -> Path:
    """Write a checkpoint dict with ``torch.save`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_torch_save(ckpt, path)


def fbp_gain(b_norm: torch.Tensor, op) -> tuple:
    """Image scale of per-channel normalised sinograms, for generator networks (SD2I, ParallaxNet).

    Parameters
    ----------
    b_norm : torch.Tensor
        Normalised sinograms ``(translation, angle, C)`` on ``op.device``.
    op : ParallelProjector
        The plain projector of the scan.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(C,)`` 99.5th percentile of the FBP of each channel inside the support (``1/n`` where
        it is not positive), and the FBP ``(y, x, C)``.
    """
    from .fbp import fbp_array

    img = fbp_array(b_norm, op.angles_deg, projector=op)
    vals = img[_drv.support_of(op)[..., 0] > 0]                 # (m, C)
    kth = max(1, min(vals.shape[0], round(0.995 * vals.shape[0])))
    g = torch.kthvalue(vals, kth, dim=0).values
    return torch.where(g > 0, g, torch.full_like(g, 1.0 / max(op.n, 1))), img


_CONFIG_CHECKS = {
    "epochs": lambda c, v: _drv.check_int(c, "epochs", v),
    "lr": lambda c, v: _drv.check_float(c, "lr", v, minimum=0.0, strict=True),
    "seed": lambda c, v: None if v is None else _drv.check_int(c, "seed", v, minimum=0),
    "patience": lambda c, v: None if v is None else _drv.check_int(c, "patience", v, minimum=0),
    "min_lr": lambda c, v: _drv.check_float(c, "min_lr", v, minimum=0.0),
    "preview_every": lambda c, v: _drv.check_int(c, "preview_every", v, minimum=0),
    "checkpoint_every": lambda c, v: _drv.check_int(c, "checkpoint_every", v, minimum=0),
}


def training_config(caller: str, *, pretrain_default: int = 0, **args) -> dict:
    """The checked training arguments of a network method (a ValueError/TypeError naming ``caller``
    and the argument otherwise).

    Accepted keywords: ``epochs``, ``lr``, ``seed`` (None allowed), ``patience`` (None allowed),
    ``min_lr``, ``preview_every``, ``checkpoint_every``, ``pretrain`` (bool or epochs;
    ``pretrain_default`` for True) and ``net_options`` (dict or None). Returns them checked.
    """
    out = {}
    for k, v in args.items():
        if k in _CONFIG_CHECKS:
            out[k] = _CONFIG_CHECKS[k](caller, v)
        elif k == "pretrain":
            out[k] = pretrain_epochs(caller, v, pretrain_default)
        elif k == "net_options":
            if v is not None and not isinstance(v, dict):
                raise InputTypeError(f"{caller}: net_options must be a dict or None, found {type(v).__name__}")
            out[k] = dict(v or {})
        else:
            raise InputTypeError(f"training_config: unknown training argument {k!r}")
    return out


def pretrain_epochs(caller: str, pretrain, default: int) -> int:
    """Epochs of pre-training from a method's ``pretrain`` argument: ``True`` → ``default``,
    ``False`` → 0, an integer ≥ 0 as given (else a ValueError naming ``caller``)."""
    if isinstance(pretrain, (bool, np.bool_)):
        return int(default) if pretrain else 0
    return _drv.check_int(caller, "pretrain", pretrain, minimum=0)


def check_train_checkpoint(caller, ckpt):
    """``ckpt`` if it is a checkpoint of :func:`~xrdwidgets.recon.training.train` (a dict of
    format :data:`CHECKPOINT_FORMAT` with its phase, epoch and states), else an error naming ``caller``."""
    if not isinstance(ckpt, dict):
        raise InputTypeError(f"{caller}: checkpoint must be a dict (as loaded by torch.load) or None, "
                         f"found {type(ckpt).__name__}")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise StateError(f"{caller}: checkpoint is not a training checkpoint (format "
                         f"{ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
    missing = [k for k in ("phase", "epoch", "model", "optimizer", "scheduler") if k not in ckpt]
    if missing:
        raise StateError(f"{caller}: checkpoint lacks {missing}")
    return ckpt
