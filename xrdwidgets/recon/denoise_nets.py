"""Image-to-image denoising networks for Noise2Inverse: a mixed-scale dense network and a small U-Net.

Both map a batch of images ``(B, C_in, H, W)`` to ``(B, C_out, H, W)`` (PyTorch's NCHW layout;
"same" zero padding, any ``H``, ``W``). In Noise2Inverse (:mod:`~xrdwidgets.recon.noise2inverse`)
the channels are the diffraction channels of a reconstruction (and, for 3-D data, the slices
above and below).

``MSDNet`` — mixed-scale dense network (Pelt & Sethian, PNAS 2018, 115, 254)
    ``depth`` layers of ``width`` feature maps each; layer ``i`` is a 3×3 convolution with
    dilation ``dilations[i % len(dilations)]`` (default 1, 2, …, 10 cycling) of the input *and
    all previous layers' maps*, plus a bias and a ReLU. The output is a 1×1 convolution of the
    input and all ``depth·width`` maps (no activation). Default depth 100, width 1: about 45 k
    parameters for one channel in and out (:func:`msd_parameter_count`).

    Memory: every layer reads all earlier maps, so a naive ``torch.cat`` per layer keeps
    ``O(depth²)`` maps for back-propagation. Here the maps are written into **one buffer**
    ``(C_in + depth·width, B, H, W)`` by a custom autograd function whose backward pass walks the
    layers in reverse and accumulates the gradient in one buffer of the same size: two buffers
    in all, ``8·B·(C_in + depth·width)·H·W`` bytes (float32). Plain PyTorch, no compiled
    extension; each layer is one matrix product plus nine shifted additions (see
    ``_MSDLayers``). Cost on a CPU: the products are memory-bound (each layer reads all earlier
    maps), about 0.3–0.5 s per training step of 16 patches of 32² on two cores at depth 100.
    Weights: He-normal (``std = sqrt(2 / (9·c_in))``), biases and the 1×1 output layer zero (the
    output starts at 0, as in ``msd_pytorch``).

``UNet`` — a small U-Net (Ronneberger et al. 2015)
    ``levels`` resolution levels with ``filters·2^l`` maps; at each level two 3×3 convolutions
    with ReLU; 2×2 max-pooling down, bilinear upsampling ×2 followed by a 3×3 convolution up,
    skip connections by concatenation; a final 1×1 convolution. Inputs are zero-padded to a
    multiple of ``2^(levels-1)`` and the output cropped back. No normalisation layers (training
    on small batches of patches and inference on whole slices then behave alike).
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..base.errors import InputError, InputTypeError
from ..base.validators import check_int

__all__ = ["DENOISERS", "MSDNet", "UNet", "build_denoiser", "msd_parameter_count", "unet_parameter_count",
           "parameter_count"]

log = logging.getLogger(__name__)

#: Names accepted by :func:`build_denoiser`.
DENOISERS = ("msd", "unet")


def parameter_count(model: nn.Module) -> int:
    """Number of trainable weights of ``model``."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"parameter_count: model must be a torch.nn.Module, found {type(model).__name__}")
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


# ---------------------------------------------------------------------------- MS-D
class _MSDLayers(torch.autograd.Function):
    """All dilated layers of an MS-D network in one buffer (see the module docstring).

    Works channel-major: the input is ``(c0, B, H, W)`` and the buffer ``(c0 + depth·width, B, H,
    W)``, so the maps a layer reads are one contiguous block ``(c, B·H·W)``. A 3×3 convolution
    with ``width`` outputs is then one matrix product ``(9·width, c) @ (c, B·H·W)`` (the nine taps'
    channel sums) followed by nine shifted additions (the dilation): for ``width`` = 1 this is
    several times faster on a CPU than ``conv2d``, whose kernels are not made for one output map.
    The backward pass uses the transposed products and shifts.
    """

    @staticmethod
    def forward(ctx, x, dilations, width, *params):
        c0, B, H, W = x.shape
        N = B * H * W
        buf = x.new_empty((c0 + len(dilations) * width, B, H, W))
        buf[:c0] = x
        flat = buf.view(-1, N)
        for i, d in enumerate(dilations):
            c = c0 + i * width
            w, b = params[2 * i], params[2 * i + 1]
            taps = w.reshape(width, c, 9).permute(2, 0, 1).reshape(9 * width, c)
            z = F.pad((taps @ flat[:c]).view(9 * width, B, H, W), (d, d, d, d))
            z = z.view(9, width, B, H + 2 * d, W + 2 * d)
            y = b.view(width, 1, 1, 1).expand(width, B, H, W).clone()
            for t in range(9):
                ky, kx = divmod(t, 3)
                y += z[t, :, :, ky * d:ky * d + H, kx * d:kx * d + W]
            buf[c:c + width] = torch.relu_(y)
        ctx.dilations, ctx.width, ctx.c0 = dilations, width, c0
        ctx.save_for_backward(buf, *params)
        return buf

    @staticmethod
    def backward(ctx, grad_buf):
        buf, *params = ctx.saved_tensors
        dilations, width, c0 = ctx.dilations, ctx.width, ctx.c0
        C, B, H, W = buf.shape
        N = B * H * W
        g = grad_buf.contiguous().clone()
        gflat, flat = g.view(C, N), buf.view(C, N)
        grads = [None] * len(params)
        gz = buf.new_empty((9, width, B, H, W))
        for i in range(len(dilations) - 1, -1, -1):
            d = dilations[i]
            c = c0 + i * width
            gy = F.pad(g[c:c + width] * (buf[c:c + width] > 0), (d, d, d, d))
            for t in range(9):
                ky, kx = divmod(t, 3)
                gz[t] = gy[:, :, (2 - ky) * d:(2 - ky) * d + H, (2 - kx) * d:(2 - kx) * d + W]
            gzm = gz.view(9 * width, N)
            grads[2 * i] = (gzm @ flat[:c].T).view(9, width, c).permute(1, 2, 0).reshape(width, c, 3, 3)
            grads[2 * i + 1] = gy.sum((1, 2, 3))
            taps = params[2 * i].reshape(width, c, 9).permute(2, 0, 1).reshape(9 * width, c)
            gflat[:c] += taps.T @ gzm
        return (g[:c0] if ctx.needs_input_grad[0] else None, None, None, *grads)


class MSDNet(nn.Module):
    """Mixed-scale dense network, ``(B, in_channels, H, W)`` → ``(B, out_channels, H, W)``.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and the output.
    depth : int
        Number of dilated layers (100).
    width : int
        Feature maps per layer (1).
    dilations : sequence of int
        Dilations, used cyclically (default ``1, 2, …, 10``).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *, depth: int = 100, width: int = 1,
                 dilations=tuple(range(1, 11))):
        super().__init__()
        c = "MSDNet"
        self.in_channels = check_int(c, "in_channels", in_channels)
        self.out_channels = check_int(c, "out_channels", out_channels)
        self.depth = check_int(c, "depth", depth)
        self.width = check_int(c, "width", width)
        dil = tuple(dilations)
        if not dil or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dil):
            raise InputError(f"{c}: dilations must be a non-empty sequence of integers >= 1, found {dilations!r}")
        self.dilations = tuple(dil[i % len(dil)] for i in range(self.depth))
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i in range(self.depth):
            c_in = self.in_channels + i * self.width
            w = torch.randn(self.width, c_in, 3, 3) * math.sqrt(2.0 / (9.0 * c_in))
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(self.width)))
        self.final = nn.Conv2d(self.in_channels + self.depth * self.width, self.out_channels, 1)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(f"MSDNet: expected input (B, {self.in_channels}, H, W), found {tuple(x.shape)}")
        params = [p for pair in zip(self.weights, self.biases) for p in pair]
        buf = _MSDLayers.apply(x.transpose(0, 1).contiguous(), self.dilations, self.width, *params)
        C, B, H, W = buf.shape
        out = self.final.weight.view(self.out_channels, C) @ buf.view(C, B * H * W)
        out = out + self.final.bias.view(-1, 1)
        return out.view(self.out_channels, B, H, W).transpose(0, 1)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, depth={self.depth}, "
                f"width={self.width}, dilations={sorted(set(self.dilations))}")


def msd_parameter_count(in_channels: int = 1, out_channels: int = 1, *, depth: int = 100, width: int = 1) -> int:
    """Closed-form parameter count of :class:`MSDNet`."""
    convs = sum(9 * (in_channels + i * width) * width + width for i in range(depth))
    return convs + (in_channels + depth * width) * out_channels + out_channels


# ---------------------------------------------------------------------------- U-Net
def _double_conv(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net, ``(B, in_channels, H, W)`` → ``(B, out_channels, H, W)``.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and the output.
    filters : int
        Feature maps at the finest level (16); doubled at each coarser level.
    levels : int
        Resolution levels (3: two poolings).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *, filters: int = 16, levels: int = 3):
        super().__init__()
        c = "UNet"
        self.in_channels = check_int(c, "in_channels", in_channels)
        self.out_channels = check_int(c, "out_channels", out_channels)
        self.filters = check_int(c, "filters", filters)
        self.levels = check_int(c, "levels", levels)
        f = [self.filters * 2 ** lv for lv in range(self.levels)]
        self.down = nn.ModuleList([_double_conv(self.in_channels if lv == 0 else f[lv - 1], f[lv])
                                   for lv in range(self.levels)])
        self.up = nn.ModuleList([nn.Conv2d(f[lv + 1], f[lv], 3, padding=1) for lv in range(self.levels - 1)])
        self.merge = nn.ModuleList([_double_conv(2 * f[lv], f[lv]) for lv in range(self.levels - 1)])
        self.final = nn.Conv2d(f[0], self.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(f"UNet: expected input (B, {self.in_channels}, H, W), found {tuple(x.shape)}")
        H, W = x.shape[2:]
        m = 2 ** (self.levels - 1)
        ph, pw = (-H) % m, (-W) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        skips = []
        for lv, block in enumerate(self.down):
            x = block(x)
            if lv < self.levels - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for lv in range(self.levels - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = torch.relu(self.up[lv](x))
            x = self.merge[lv](torch.cat([skips[lv], x], 1))
        return self.final(x)[:, :, :H, :W]


def unet_parameter_count(in_channels: int = 1, out_channels: int = 1, *, filters: int = 16, levels: int = 3) -> int:
    """Closed-form parameter count of :class:`UNet`."""
    f = [filters * 2 ** lv for lv in range(levels)]

    def conv(a, b, k=3):
        return a * b * k * k + b

    n = 0
    for lv in range(levels):
        a = in_channels if lv == 0 else f[lv - 1]
        n += conv(a, f[lv]) + conv(f[lv], f[lv])
    for lv in range(levels - 1):
        n += conv(f[lv + 1], f[lv]) + conv(2 * f[lv], f[lv]) + conv(f[lv], f[lv])
    return n + conv(f[0], out_channels, 1)


def build_denoiser(name: str, in_channels: int, out_channels: int, **options) -> nn.Module:
    """The network ``name`` (``"msd"`` or ``"unet"``) with its ``options`` (see the classes)."""
    key = str(name).lower()
    if key == "msd":
        cls = MSDNet
    elif key == "unet":
        cls = UNet
    else:
        raise InputError(f"build_denoiser: net must be one of {DENOISERS}, found {name!r}")
    try:
        return cls(in_channels, out_channels, **options)
    except TypeError as exc:
        raise InputError(f"build_denoiser: bad options for {key!r}: {exc}") from None
