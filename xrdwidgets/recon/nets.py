"""Generator networks of the self-supervised reconstructions (SD2I, SD2Iu, SD2Vol), plain PyTorch.

Each network maps a *single constant* (1.0, stored as a buffer) to an image: there is no data
input. Training (:mod:`~xrdwidgets.recon.training`) fits its weights so that the forward
operator of its output matches the measured data (Dong et al., *Digital Discovery* 2023, 2, 967;
Vamvakeros et al., ParallaxNet).

Architectures (``k`` = feature maps after the reshape; all convolutions 3×3(×3), "same" padding)

``SD2I``
    1 → Dense(128, ReLU) ×3 → Dense(npix²·k, ReLU) → reshape (k, npix, npix) →
    Conv(128, ReLU) → Conv(128, ReLU) → Conv(64, ReLU) → Conv(C) → |·| × mask.
``SD2Iu`` (the default for 2-D)
    1 → Dense(64, ReLU) ×3 → Dense(⌈npix/4⌉²·k, ReLU) → reshape (k, m, m) → upsample ×2 →
    Conv(64, ReLU) ×3 → upsample ×2 → Conv(64, ReLU) ×3 → Conv(C) → centre crop to npix →
    |·| × mask.
``SD2Vol`` (3-D, for ParallaxNet: the third axis is the spectral/2θ axis)
    1 → Dense(32, ReLU) ×3 → Dense(n·n·m, LeakyReLU 0.01) → reshape (1, n, n, m) →
    Conv3d(16, ReLU) → Conv3d(16, ReLU) → Conv3d(16, ReLU) → Conv3d(1, linear).
    The widths ``(16, 16, 16)`` are small on purpose: the volume is large (one voxel per pixel
    and 2θ channel) and the dense layer already holds ``32·n²·m`` weights.

Multi-channel: ``channels=C`` makes the last convolution produce ``C`` maps, so a channel batch
of an XRD-CT stack is reconstructed by one model. ``forward()`` returns the image batch with
the channel axis last, ``(npix, npix, C)`` (axes ``(y, x, C)``): the layout of
:class:`~xrdwidgets.ops.projector.ParallelProjector`. ``SD2Vol.forward()`` returns ``(n, n, m)``.

Output non-linearity: the absolute value (not ReLU, which can die at zero) for SD2I/SD2Iu, times
a circular support mask (the inscribed circle, centre ``(npix-1)/2``, as the projector's); SD2Vol
is linear unless ``output=`` says otherwise.

Parameter counts: :func:`parameter_count` counts a model's trainable weights;
:func:`sd2i_parameter_count`, :func:`sd2iu_parameter_count` and :func:`sd2vol_parameter_count`
give the closed forms (the tests compare them).
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from ..base.errors import InputError, InputTypeError
from ..ops.projector import circle_mask, default_device
from ..base.validators import check_int

log = logging.getLogger(__name__)

__all__ = [
    "ARCHITECTURES",
    "SD2I",
    "SD2Iu",
    "SD2Vol",
    "build_generator",
    "parameter_count",
    "sd2i_parameter_count",
    "sd2iu_parameter_count",
    "sd2vol_parameter_count",
]

_OUTPUTS = ("abs", "relu", "linear")


# ---------------------------------------------------------------------------- checks
def _widths(caller, name, value, length=None):
    try:
        out = tuple(value)
    except TypeError:
        raise InputTypeError(f"{caller}: {name} must be a sequence of integers >= 1, found {value!r}") from None
    if length is not None and len(out) != length:
        raise InputError(f"{caller}: {name} must hold {length} integers, found {len(out)}: {value!r}")
    if not out:
        raise InputError(f"{caller}: {name} must hold at least one integer, found {value!r}")
    return tuple(check_int(caller, f"{name}[{i}]", v) for i, v in enumerate(out))


def _output(caller, value):
    if value not in _OUTPUTS:
        raise InputError(f"{caller}: output must be one of {_OUTPUTS}, found {value!r}")
    return value


def _mask_tensor(caller, mask, npix):
    """``(npix, npix, 1)`` float mask, or None."""
    if mask is True:
        arr = circle_mask(npix)
    elif mask is False or mask is None:
        return None
    else:
        arr = np.asarray(mask, bool)
        if arr.shape != (npix, npix):
            raise InputError(f"{caller}: mask must be a bool or an array of shape {(npix, npix)}, "
                             f"found shape {arr.shape}")
    return torch.as_tensor(arr, dtype=torch.float32)[..., None]


def _dense_stack(n_in, units, n_dense):
    layers = []
    for _ in range(n_dense):
        layers += [nn.Linear(n_in, units), nn.ReLU()]
        n_in = units
    return layers, n_in


def _device(device):
    return torch.device(device) if device is not None else default_device()


class _Generator2D(nn.Module):
    """Shared tail of SD2I/SD2Iu: input buffer, output non-linearity, mask, channel-last layout."""

    def _finish_init(self, npix, channels, mask, output, input_value, device):
        self.npix, self.channels, self.output = npix, channels, output
        self.register_buffer("z", torch.full((1, 1), float(input_value)))
        m = _mask_tensor(type(self).__name__, mask, npix)
        self.register_buffer("mask", m if m is not None else torch.ones((npix, npix, 1)))
        self.to(_device(device))

    def _out(self, x):
        """``(1, C, H, W)`` → ``(npix, npix, C)`` with the output non-linearity and the mask."""
        x = x[0].permute(1, 2, 0)
        if self.output == "abs":
            x = x.abs()
        elif self.output == "relu":
            x = torch.relu(x)
        return x * self.mask


# ---------------------------------------------------------------------------- SD2I
class SD2I(_Generator2D):
    """SD2I generator: dense layers to ``npix²·k`` units, then full-resolution convolutions.

    Parameters
    ----------
    npix : int
        Image size (``npix × npix`` pixels).
    channels : int
        Output channels ``C`` (one map per diffraction channel of the batch).
    k : int
        Feature maps after the reshape (the paper uses 4–8; default 8).
    dense_units : int
        Units of the hidden dense layers (128).
    n_dense : int
        Number of hidden dense layers (3).
    conv_filters : sequence of int
        Filters of the hidden 3×3 convolutions (``(128, 128, 64)``).
    output : {"abs", "relu", "linear"}
        Output non-linearity (``abs``).
    mask : bool or array
        ``True``: zero outside the inscribed circle; an ``(npix, npix)`` bool array: that support.
    input_value : float
        The constant input (1.0).
    device : optional
        torch device (default CUDA when present, else CPU).

    Notes
    -----
    ``forward()`` returns ``(npix, npix, C)``, axes ``(y, x, C)``. The dense layer to
    ``npix²·k`` units dominates the size: ``128·npix²·k`` weights (67 M at 256², k = 8).
    """

    def __init__(self, npix: int, channels: int = 1, *, k: int = 8, dense_units: int = 128,
                 n_dense: int = 3, conv_filters=(128, 128, 64), output: str = "abs", mask=True,
                 input_value: float = 1.0, device=None):
        super().__init__()
        c = "SD2I"
        npix, channels, k = check_int(c, "npix", npix), check_int(c, "channels", channels), check_int(c, "k", k)
        dense_units, n_dense = check_int(c, "dense_units", dense_units), check_int(c, "n_dense", n_dense, 0)
        filters = _widths(c, "conv_filters", conv_filters)
        self.k = k
        layers, n_in = _dense_stack(1, dense_units, n_dense)
        self.dense = nn.Sequential(*layers, nn.Linear(n_in, npix * npix * k), nn.ReLU())
        convs, f_in = [], k
        for f in filters:
            convs += [nn.Conv2d(f_in, f, 3, padding=1), nn.ReLU()]
            f_in = f
        convs.append(nn.Conv2d(f_in, channels, 3, padding=1))
        self.convs = nn.Sequential(*convs)
        self._finish_init(npix, channels, mask, _output(c, output), input_value, device)

    def forward(self) -> torch.Tensor:
        """The generated image batch ``(npix, npix, C)``."""
        h = self.dense(self.z).reshape(1, self.k, self.npix, self.npix)
        return self._out(self.convs(h))


# ---------------------------------------------------------------------------- SD2Iu
class SD2Iu(_Generator2D):
    """SD2Iu generator: a small dense seed ``⌈npix/4⌉²·k`` upsampled twice (the 2-D default).

    Parameters
    ----------
    npix : int
        Image size (``npix × npix`` pixels); not a multiple of 4 → the ``4·⌈npix/4⌉`` map is
        cropped about its centre.
    channels : int
        Output channels ``C``.
    k : int
        Feature maps after the reshape (4–8; default 8).
    dense_units : int
        Units of the hidden dense layers (64).
    n_dense : int
        Number of hidden dense layers (3).
    filters : int
        Filters of every hidden 3×3 convolution (64).
    convs_per_stage : int
        Convolutions after each upsampling (3).
    upsample : {"nearest", "bilinear"}
        Upsampling mode (``nearest``, as Keras' ``UpSampling2D``).
    output, mask, input_value, device :
        As in :class:`SD2I`.

    Notes
    -----
    ``forward()`` returns ``(npix, npix, C)``, axes ``(y, x, C)``.
    """

    def __init__(self, npix: int, channels: int = 1, *, k: int = 8, dense_units: int = 64,
                 n_dense: int = 3, filters: int = 64, convs_per_stage: int = 3,
                 upsample: str = "nearest", output: str = "abs", mask=True, input_value: float = 1.0,
                 device=None):
        super().__init__()
        c = "SD2Iu"
        npix, channels, k = check_int(c, "npix", npix), check_int(c, "channels", channels), check_int(c, "k", k)
        dense_units, n_dense = check_int(c, "dense_units", dense_units), check_int(c, "n_dense", n_dense, 0)
        filters, cps = check_int(c, "filters", filters), check_int(c, "convs_per_stage", convs_per_stage)
        if upsample not in ("nearest", "bilinear"):
            raise InputError(f"{c}: upsample must be 'nearest' or 'bilinear', found {upsample!r}")
        self.k, self.seed_size = k, math.ceil(npix / 4)
        layers, n_in = _dense_stack(1, dense_units, n_dense)
        self.dense = nn.Sequential(*layers, nn.Linear(n_in, self.seed_size ** 2 * k), nn.ReLU())
        up = {"scale_factor": 2, "mode": upsample} if upsample == "nearest" else \
            {"scale_factor": 2, "mode": upsample, "align_corners": False}
        convs, f_in = [], k
        for _stage in range(2):
            convs.append(nn.Upsample(**up))
            for _ in range(cps):
                convs += [nn.Conv2d(f_in, filters, 3, padding=1), nn.ReLU()]
                f_in = filters
        convs.append(nn.Conv2d(f_in, channels, 3, padding=1))
        self.convs = nn.Sequential(*convs)
        self._finish_init(npix, channels, mask, _output(c, output), input_value, device)

    def forward(self) -> torch.Tensor:
        """The generated image batch ``(npix, npix, C)``."""
        m = self.seed_size
        h = self.convs(self.dense(self.z).reshape(1, self.k, m, m))
        o = (4 * m - self.npix) // 2
        if 4 * m != self.npix:
            h = h[:, :, o:o + self.npix, o:o + self.npix]
        return self._out(h)


# ---------------------------------------------------------------------------- SD2Vol
class SD2Vol(nn.Module):
    """SD2Vol generator of a 3-D volume ``(n, n, m)``: a dense layer with one unit per voxel.

    Parameters
    ----------
    n : int
        In-plane size (``n × n`` pixels).
    m : int
        Length of the third axis (for ParallaxNet: the spectral/2θ channels).
    dense_units : int
        Units of the hidden dense layers (32).
    n_dense : int
        Number of hidden dense layers (3).
    conv_filters : sequence of int
        Filters of the hidden 3×3×3 convolutions (``(16, 16, 16)``); a last convolution to one
        map follows (linear).
    negative_slope : float
        Slope of the LeakyReLU after the voxel layer (0.01).
    output : {"linear", "abs", "relu"}
        Output non-linearity (``linear``, as the paper's last layer).
    input_value : float
        The constant input (1.0).
    device : optional
        torch device (default CUDA when present, else CPU).

    Notes
    -----
    ``forward()`` returns ``(n, n, m)``, axes ``(y, x, spectral)``. The voxel layer holds
    ``(dense_units + 1)·n²·m`` weights.
    """

    def __init__(self, n: int, m: int, *, dense_units: int = 32, n_dense: int = 3,
                 conv_filters=(16, 16, 16), negative_slope: float = 0.01, output: str = "linear",
                 input_value: float = 1.0, device=None):
        super().__init__()
        c = "SD2Vol"
        n, m = check_int(c, "n", n), check_int(c, "m", m)
        dense_units, n_dense = check_int(c, "dense_units", dense_units), check_int(c, "n_dense", n_dense, 0)
        filters = _widths(c, "conv_filters", conv_filters)
        self.n, self.m, self.output = n, m, _output(c, output)
        layers, n_in = _dense_stack(1, dense_units, n_dense)
        self.dense = nn.Sequential(*layers, nn.Linear(n_in, n * n * m),
                                   nn.LeakyReLU(float(negative_slope)))
        convs, f_in = [], 1
        for f in filters:
            convs += [nn.Conv3d(f_in, f, 3, padding=1), nn.ReLU()]
            f_in = f
        convs.append(nn.Conv3d(f_in, 1, 3, padding=1))
        self.convs = nn.Sequential(*convs)
        self.register_buffer("z", torch.full((1, 1), float(input_value)))
        self.to(_device(device))

    def forward(self) -> torch.Tensor:
        """The generated volume ``(n, n, m)``."""
        h = self.convs(self.dense(self.z).reshape(1, 1, self.n, self.n, self.m))[0, 0]
        if self.output == "abs":
            h = h.abs()
        elif self.output == "relu":
            h = torch.relu(h)
        return h


# ---------------------------------------------------------------------------- counts
def parameter_count(model: nn.Module) -> int:
    """Number of trainable weights (parameters with ``requires_grad``) of ``model``."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"parameter_count: model must be a torch.nn.Module, found {type(model).__name__}")
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def _dense_count(units, n_dense):
    n_in, total = 1, 0
    for _ in range(n_dense):
        total += n_in * units + units
        n_in = units
    return total, n_in


def _conv_count(f_in, f_out, taps):
    return taps * f_in * f_out + f_out


def sd2i_parameter_count(npix: int, channels: int = 1, *, k: int = 8, dense_units: int = 128,
                         n_dense: int = 3, conv_filters=(128, 128, 64)) -> int:
    """Closed-form weight count of :class:`SD2I` (same arguments)."""
    total, n_in = _dense_count(dense_units, n_dense)
    total += (n_in + 1) * npix * npix * k
    f_in = k
    for f in conv_filters:
        total += _conv_count(f_in, f, 9)
        f_in = f
    return total + _conv_count(f_in, channels, 9)


def sd2iu_parameter_count(npix: int, channels: int = 1, *, k: int = 8, dense_units: int = 64,
                          n_dense: int = 3, filters: int = 64, convs_per_stage: int = 3) -> int:
    """Closed-form weight count of :class:`SD2Iu` (same arguments)."""
    total, n_in = _dense_count(dense_units, n_dense)
    total += (n_in + 1) * math.ceil(npix / 4) ** 2 * k
    total += _conv_count(k, filters, 9) + (2 * convs_per_stage - 1) * _conv_count(filters, filters, 9)
    return total + _conv_count(filters, channels, 9)


def sd2vol_parameter_count(n: int, m: int, *, dense_units: int = 32, n_dense: int = 3,
                           conv_filters=(16, 16, 16)) -> int:
    """Closed-form weight count of :class:`SD2Vol` (same arguments)."""
    total, n_in = _dense_count(dense_units, n_dense)
    total += (n_in + 1) * n * n * m
    f_in = 1
    for f in conv_filters:
        total += _conv_count(f_in, f, 27)
        f_in = f
    return total + _conv_count(f_in, 1, 27)


# ---------------------------------------------------------------------------- lookup
#: 2-D generator classes by name.
ARCHITECTURES = {"sd2i": SD2I, "sd2iu": SD2Iu}


def build_generator(arch: str, npix: int, channels: int = 1, *, k: int = 8, device=None,
                    seed: int | None = None, **options) -> nn.Module:
    """A 2-D generator by name (``"sd2i"`` or ``"sd2iu"``), optionally with seeded weights.

    ``seed`` initialises the weights on the CPU under a forked RNG (the caller's RNG state is
    untouched), then moves the model to ``device``: the same seed gives the same start on every
    device. ``options`` go to the class (e.g. ``filters=``, ``mask=``).
    """
    key = str(arch).lower()
    if key not in ARCHITECTURES:
        raise InputError(f"build_generator: arch must be one of {tuple(ARCHITECTURES)}, found {arch!r}")
    cls = ARCHITECTURES[key]
    if seed is None:
        return cls(npix, channels, k=k, device=device, **options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = cls(npix, channels, k=k, device="cpu", **options)
    return model.to(_device(device))
