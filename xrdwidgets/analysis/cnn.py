"""The PeakFitCNN network: three convolutional blocks from a down-sampled volume to parameter maps.

:class:`PeakFitCNN` (input: the selected channels of the volume, normalised to a maximum of 1 and
averaged down ``factor`` times in ``y`` and ``x`` by :func:`downsample`; output: one normalised
map ``u ∈ (0, 1)`` per peak-model parameter at full ``(y, x)`` size), :func:`build_cnn` (seeded
weights) and :class:`CNNGenerator` (the network on a fixed input, as the no-input generator of
:func:`xrdwidgets.recon.training.train`). Used by :mod:`~xrdwidgets.analysis.peakfitcnn` and
:mod:`~xrdwidgets.analysis.dlsr`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..base.errors import InputError
from ..recon import driver as _drv

__all__ = ["PeakFitCNN", "CNNGenerator", "build_cnn", "downsample", "NORMS"]

#: Normalisation layers of :class:`PeakFitCNN`.
NORMS = ("instance", "group", "none")


def _norm(kind: str, filters: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(filters, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, filters), filters)
    return nn.Identity()


class PeakFitCNN(nn.Module):
    """Three convolutional blocks that turn a down-sampled volume into normalised parameter maps.

    Parameters
    ----------
    n_in : int
        Input channels (the spectral channels of the volume).
    n_out : int
        Output channels (the number of peak-model parameters).
    filters : int
        Filters of every block (32).
    factor : int
        Up-sampling factor of the third block (4); the input is the volume averaged down by it.
    norm : {"instance", "group", "none"}
        Normalisation of each block.

    Notes
    -----
    ``forward(x, size=None)``: ``x`` is ``(batch, n_in, h, w)``; the output is
    ``(batch, n_out, H, W)`` in (0, 1), with ``(H, W) = size`` or ``(factor·h, factor·w)``.
    """

    def __init__(self, n_in: int, n_out: int, *, filters: int = 32, factor: int = 4, norm: str = "instance"):
        super().__init__()
        n_in = _drv.check_int("PeakFitCNN", "n_in", n_in)
        n_out = _drv.check_int("PeakFitCNN", "n_out", n_out)
        filters = _drv.check_int("PeakFitCNN", "filters", filters)
        self.factor = _drv.check_int("PeakFitCNN", "factor", factor)
        if norm not in NORMS:
            raise InputError(f"PeakFitCNN: norm must be one of {NORMS}, found {norm!r}")
        self.n_in, self.n_out, self.filters, self.norm = n_in, n_out, filters, norm

        def block(cin):
            return nn.Sequential(nn.Conv2d(cin, filters, 3, padding=1), _norm(norm, filters), nn.ReLU())

        self.block1 = block(n_in)
        self.block2 = block(filters)
        self.block3 = block(filters)  # after the up-sampling
        self.head = nn.Conv2d(filters, n_out, 3, padding=1)

    def forward(self, x: torch.Tensor, size=None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.n_in:
            raise InputError(f"PeakFitCNN: expected input (batch, {self.n_in}, h, w), found {tuple(x.shape)}")
        h = self.block2(self.block1(x))
        if size is None:
            size = (h.shape[-2] * self.factor, h.shape[-1] * self.factor)
        h = F.interpolate(h, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.head(self.block3(h)))

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, n_out={self.n_out}, filters={self.filters}, factor={self.factor}, norm={self.norm!r}"


def downsample(volume: torch.Tensor, factor: int) -> torch.Tensor:
    """Average a volume ``(y, x, C)`` down ``factor`` times in ``y`` and ``x`` → ``(1, C, h, w)``.

    ``h = ceil(y / factor)`` (adaptive average pooling: sizes need not be multiples of ``factor``).
    """
    ny, nx = volume.shape[:2]
    t = volume.permute(2, 0, 1)[None]
    return F.adaptive_avg_pool2d(t, (math.ceil(ny / factor), math.ceil(nx / factor)))


def build_cnn(n_in: int, n_out: int, *, filters: int, factor: int, norm: str, seed, device) -> PeakFitCNN:
    """A :class:`PeakFitCNN` with weights drawn on the CPU from ``seed`` (caller's RNG untouched)."""
    if seed is None:
        return PeakFitCNN(n_in, n_out, filters=filters, factor=factor, norm=norm).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = PeakFitCNN(n_in, n_out, filters=filters, factor=factor, norm=norm)
    return net.to(device)


class CNNGenerator(nn.Module):
    """No-input generator for :func:`~xrdwidgets.recon.training.train`: maps ``(y, x, n_params)``.

    ``cnn`` applied to the fixed input ``inp`` ``(1, n_in, h, w)`` (a buffer, not saved in
    checkpoints), up-sampled to ``size`` ``(y, x)``; ``forward()`` gives ``(y, x, n_out)`` in (0, 1).
    """

    def __init__(self, cnn: PeakFitCNN, inp: torch.Tensor, size):
        super().__init__()
        self.cnn = cnn
        self.register_buffer("inp", inp, persistent=False)  # the data: not part of the checkpoint
        self.size = tuple(size)

    def forward(self):
        return self.cnn(self.inp, self.size)[0].permute(1, 2, 0)

