"""Image-quality figures against a reference (ground truth), for tests, benchmarks and notebooks.

All take arrays of the same shape (any dims); ``data_range`` defaults to the reference's
max − min. NumPy only; SSIM uses scikit-image when it is installed.
"""
from __future__ import annotations

import numpy as np

from ..base.errors import InputError

__all__ = ["rmse", "mae", "psnr", "ssim", "compare"]


def _pair(image, reference):
    a = np.asarray(image, np.float64)
    b = np.asarray(reference, np.float64)
    if a.shape != b.shape:
        raise InputError(f"image has shape {a.shape} but reference has shape {b.shape}; they must match")
    return a, b


def rmse(image, reference) -> float:
    """Root-mean-square error."""
    a, b = _pair(image, reference)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def mae(image, reference) -> float:
    """Mean absolute error."""
    a, b = _pair(image, reference)
    return float(np.mean(np.abs(a - b)))


def psnr(image, reference, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``20·log10(data_range / rmse)``."""
    a, b = _pair(image, reference)
    rng = float(b.max() - b.min()) if data_range is None else float(data_range)
    err = rmse(a, b)
    return float("inf") if err == 0 else float(20 * np.log10(rng / err))


def ssim(image, reference, *, data_range: float | None = None) -> float:
    """Structural similarity of 2-D images (scikit-image's implementation)."""
    from skimage.metrics import structural_similarity

    a, b = _pair(image, reference)
    rng = float(b.max() - b.min()) if data_range is None else float(data_range)
    return float(structural_similarity(a, b, data_range=rng))


def compare(image, reference, *, data_range: float | None = None) -> dict:
    """``{"psnr", "rmse", "mae"}`` (and ``"ssim"`` for 2-D images when scikit-image is present)."""
    out = {"psnr": psnr(image, reference, data_range=data_range), "rmse": rmse(image, reference),
           "mae": mae(image, reference)}
    if np.ndim(image) == 2:
        try:
            out["ssim"] = ssim(image, reference, data_range=data_range)
        except ImportError:  # pragma: no cover
            pass
    return out
