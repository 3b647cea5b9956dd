"""Small volumes and sinogram stacks for the tests of :mod:`xrdwidgets.explore`."""
import numpy as np

from xrdwidgets import data


def make_volume(ny=5, nx=7, nc=11, *, dtype=np.float32, spectral_dim="tth"):
    rng = np.random.default_rng(0)
    arr = rng.random((ny, nx, nc)).astype(dtype)
    spectral = np.linspace(3.0, 8.0, nc) if spectral_dim != "channel" else None
    return data.volume(arr, spectral=spectral, spectral_dim=spectral_dim, name="vol")


def make_stack(nt=6, na=4, nc=9):
    arr = np.arange(nt * na * nc, dtype=np.float32).reshape(nt, na, nc)
    return data.sinogram_stack(arr, spectral=np.linspace(2.0, 4.0, nc))
