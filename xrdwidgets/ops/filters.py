"""Filters for filtered back-projection, applied along the translation axis.

The ramp is built from its band-limited spatial-domain kernel (Kak & Slaney, eq. 3.61), which
avoids the DC offset of a sampled ``|ω|``; windows multiply it in the frequency domain.
"""
from __future__ import annotations

import numpy as np
import torch

from ..base.errors import InputError

__all__ = ["FILTERS", "fbp_filter", "filter_sinogram"]

#: Names accepted by :func:`fbp_filter`.
FILTERS = ("ramp", "ram-lak", "shepp-logan", "cosine", "hamming", "hann", "none")


def _padded_size(n: int) -> int:
    return max(64, int(2 ** np.ceil(np.log2(2 * n))))


def fbp_filter(n: int, name: str = "ramp") -> np.ndarray:
    """Frequency response (length of the padded FFT) of the FBP filter for ``n`` translations.

    Parameters
    ----------
    n : int
        Number of translations (samples along the filtered axis).
    name : str
        One of :data:`FILTERS` (``ram-lak`` is the ramp).

    Returns
    -------
    numpy.ndarray
        Real response, float64, of length ``>= 2n`` (a power of two, zero-padding included).
    """
    key = str(name).lower()
    if key not in FILTERS:
        raise InputError(f"fbp_filter: unknown filter {name!r}; expected one of {FILTERS}")
    size = _padded_size(n)
    k = np.concatenate((np.arange(1, size / 2 + 1, 2, dtype=int), np.arange(size / 2 - 1, 0, -2, dtype=int)))
    h = np.zeros(size)
    h[0] = 0.25
    h[1::2] = -1.0 / (np.pi * k) ** 2
    resp = 2.0 * np.real(np.fft.fft(h))  # ramp, ≈ |f| / 0.5 … scaled so that resp(0.5 cyc) = 1
    if key == "none":
        return np.ones(size)
    omega = np.pi * np.fft.fftfreq(size)[1:]
    if key == "shepp-logan":
        resp[1:] *= np.sin(omega) / omega
    elif key == "cosine":
        resp[1:] *= np.cos(omega)
    elif key == "hamming":
        resp *= np.fft.fftshift(np.hamming(size))
    elif key == "hann":
        resp *= np.fft.fftshift(np.hanning(size))
    return resp


def filter_sinogram(sino: torch.Tensor, name: str = "ramp") -> torch.Tensor:
    """Filter a sinogram batch ``(translation, angle, C)`` along the translation axis.

    Zero-padded to at least twice the length (no wrap-around); returns the same shape and dtype.
    """
    n = sino.shape[0]
    resp = fbp_filter(n, name)
    size = resp.size
    H = torch.as_tensor(resp, dtype=torch.float32, device=sino.device).reshape(size, *([1] * (sino.dim() - 1)))
    f = torch.fft.rfft(sino.to(torch.float32), n=size, dim=0)
    out = torch.fft.irfft(f * H[: f.shape[0]], n=size, dim=0)[:n]
    return out.to(sino.dtype)
