"""Losses of the generator-network reconstructions, in torch (differentiable).

All take a prediction and a target of the same shape: 2-D ``(h, w)`` or a channel batch
``(h, w, C)`` (channel axis last, the layout of sinogram and image batches). Losses are means over
every element (MAE, MSE) or over channels (SSIM: each channel's mean SSIM, then the mean over
channels).

SSIM (Wang et al. 2004) uses a Gaussian window (11 taps, σ = 1.5, normalised), ``K1 = 0.01``,
``K2 = 0.03``, population (not sample) statistics, and only the positions where the window fits
inside the image ("valid"), as TensorFlow's ``tf.image.ssim`` used by SD2I; it equals
``skimage.metrics.structural_similarity(a, b, data_range=r, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)``. An image smaller than the window along an axis uses the largest
odd window that fits (same σ). ``data_range`` defaults to each channel's ``max − min`` of the
*target* (1 for a constant channel).

Combined losses::

    mae_ssim = (1 − μ)·MAE + μ·(1 − SSIM),  μ = 0.84   (SD2I)
    mse_ssim = λ·MSE + (1 − λ)·(1 − SSIM),  λ = 1e-4   (ParallaxNet)
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..base.errors import InputError, InputTypeError

__all__ = [
    "LAMBDA_PARALLAXNET",
    "LOSSES",
    "MU_SD2I",
    "get_loss",
    "mae",
    "mae_ssim",
    "mse",
    "mse_ssim",
    "ssim",
    "ssim_per_channel",
]

#: Weight of ``1 − SSIM`` in the SD2I loss.
MU_SD2I = 0.84
#: Weight of the MSE in the ParallaxNet loss.
LAMBDA_PARALLAXNET = 1e-4


def _pair(caller, pred, target):
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise InputTypeError(f"{caller}: pred and target must be torch tensors, found "
                         f"{type(pred).__name__} and {type(target).__name__}")
    if pred.shape != target.shape:
        raise InputError(f"{caller}: pred has shape {tuple(pred.shape)} but target has shape "
                         f"{tuple(target.shape)}; they must match")
    if pred.dim() not in (2, 3):
        raise InputError(f"{caller}: expected (h, w) or (h, w, C) tensors, found shape {tuple(pred.shape)}")
    if pred.dim() == 2:
        pred, target = pred[..., None], target[..., None]
    return pred, target


@functools.lru_cache(maxsize=32)
def _gauss(size: int, sigma: float):
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter(x, g):
    """Separable 'valid' filtering of ``(C, 1, h, w)`` by the 1-D window ``g``."""
    x = F.conv2d(x, g.reshape(1, 1, -1, 1))
    return F.conv2d(x, g.reshape(1, 1, 1, -1))


def ssim_per_channel(pred: torch.Tensor, target: torch.Tensor, *, data_range=None, win_size: int = 11,
                     sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM of each channel, ``(C,)`` (see the module docstring).

    Parameters
    ----------
    pred, target : torch.Tensor
        ``(h, w)`` or ``(h, w, C)``, same shape.
    data_range : float or tensor of C floats, optional
        Dynamic range ``L``; default each channel's ``max − min`` of ``target``.
    win_size : int
        Window taps (odd, 11); reduced to fit small images.
    sigma : float
        Standard deviation of the Gaussian window in pixels (1.5).
    """
    p, t = _pair("ssim", pred, target)
    h, w, C = p.shape
    size = min(int(win_size), h, w)
    if size % 2 == 0:
        size -= 1
    if size < 1:
        raise InputError(f"ssim: win_size must be >= 1, found {win_size}")
    dtype = p.dtype if p.dtype in (torch.float32, torch.float64) else torch.float32
    p, t = p.to(dtype), t.to(dtype)
    if data_range is None:
        flat = t.detach().reshape(-1, C)
        rng = flat.max(0).values - flat.min(0).values
        rng = torch.where(rng > 0, rng, torch.ones_like(rng))
    else:
        rng = torch.as_tensor(data_range, dtype=dtype, device=p.device).reshape(-1)
        if rng.numel() not in (1, C) or not bool(torch.isfinite(rng).all()) or bool((rng <= 0).any()):
            raise InputError(f"ssim: data_range must be a number > 0 or {C} of them, found {data_range!r}")
        rng = rng.expand(C)
    g = _gauss(size, float(sigma)).to(device=p.device, dtype=dtype)
    x = p.permute(2, 0, 1)[:, None]
    y = t.permute(2, 0, 1)[:, None]
    mx, my = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mx * mx
    syy = _filter(y * y, g) - my * my
    sxy = _filter(x * y, g) - mx * my
    c1 = ((k1 * rng) ** 2).reshape(C, 1, 1, 1)
    c2 = ((k2 * rng) ** 2).reshape(C, 1, 1, 1)
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.reshape(C, -1).mean(1)


def ssim(pred: torch.Tensor, target: torch.Tensor, *, data_range=None, win_size: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """SSIM averaged over channels, a scalar tensor (see :func:`ssim_per_channel`)."""
    return ssim_per_channel(pred, target, data_range=data_range, win_size=win_size, sigma=sigma).mean()


def mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all elements."""
    p, t = _pair("mae", pred, target)
    return (p - t).abs().mean()


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements."""
    p, t = _pair("mse", pred, target)
    return ((p - t) ** 2).mean()


def mae_ssim(pred: torch.Tensor, target: torch.Tensor, *, mu: float = MU_SD2I, data_range=None) -> torch.Tensor:
    """SD2I loss ``(1 − μ)·MAE + μ·(1 − SSIM)`` (μ = 0.84)."""
    return (1.0 - mu) * mae(pred, target) + mu * (1.0 - ssim(pred, target, data_range=data_range))


def mse_ssim(pred: torch.Tensor, target: torch.Tensor, *, lam: float = LAMBDA_PARALLAXNET,
             data_range=None) -> torch.Tensor:
    """ParallaxNet loss ``λ·MSE + (1 − λ)·(1 − SSIM)`` (λ = 1e-4)."""
    return lam * mse(pred, target) + (1.0 - lam) * (1.0 - ssim(pred, target, data_range=data_range))


def _one_minus_ssim(pred, target, *, data_range=None):
    return 1.0 - ssim(pred, target, data_range=data_range)


#: Losses by name: ``loss(pred, target) -> scalar tensor``.
LOSSES = {"mae": mae, "mse": mse, "ssim": _one_minus_ssim, "mae_ssim": mae_ssim, "mse_ssim": mse_ssim}


def get_loss(name, **options):
    """The loss ``fn(pred, target) -> scalar tensor`` called ``name`` (see :data:`LOSSES`).

    ``name`` may also be a callable (returned as is). ``options`` are bound as keywords, e.g.
    ``get_loss("mae_ssim", mu=0.5)``.
    """
    if callable(name):
        return functools.partial(name, **options) if options else name
    key = str(name).lower()
    if key not in LOSSES:
        raise InputError(f"get_loss: loss must be one of {tuple(LOSSES)} or a callable, found {name!r}")
    fn = LOSSES[key]
    return functools.partial(fn, **options) if options else fn
