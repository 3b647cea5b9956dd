"""Static summary pictures (PNG) with matplotlib, for the CLI and the README.

This module and the export helpers of :mod:`xrdwidgets.explore.export` import matplotlib (lazily);
the algorithms never do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base.atomic import atomic_path

__all__ = ["phase_channels", "demo_summary_png", "image_figure_png", "patterns_figure_png"]


def phase_channels(patterns, *, halfwidth: int = 2) -> dict:
    """For each phase, the channel window where it stands out most from the other phases.

    Parameters
    ----------
    patterns : xarray.DataArray
        Reference patterns ``(phase, spectral)``.

    Returns
    -------
    dict
        ``{phase: slice}`` of spectral indices.
    """
    p = np.asarray(patterns.values, float)
    p = p / np.maximum(p.max(axis=1, keepdims=True), 1e-30)
    out = {}
    for i, name in enumerate(patterns["phase"].values):
        others = np.delete(p, i, axis=0).max(axis=0) if p.shape[0] > 1 else 0.0
        score = p[i] - 1.5 * others
        c = int(np.argmax(score))
        out[str(name)] = slice(max(0, c - halfwidth), c + halfwidth + 1)
    return out


def _atomic_savefig(fig, path: Path, overwrite: bool):
    with atomic_path(path, overwrite=overwrite, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110)


def demo_summary_png(ds, path, *, overwrite: bool = False) -> Path:
    """Write a PNG summary of a reconstructed demo Dataset.

    Parameters
    ----------
    ds : xarray.Dataset
        With ``sinogram`` (translation, angle, tth), ``fbp`` (y, x, tth), and the ground truth
        ``phase_maps`` (phase, y, x), ``patterns`` (phase, tth), ``volume`` (y, x, tth).
    path : path-like
        Output PNG (not overwritten unless ``overwrite``).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    spec = "tth"
    tth = ds[spec].values
    wins = phase_channels(ds["patterns"])
    names = list(wins)[:3]
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.4), constrained_layout=True)
    sino = ds["sinogram"].sum(spec).values
    ax = axes[0, 0]
    ax.imshow(sino, aspect="auto", cmap="magma",
              extent=[ds.angle.values[0], ds.angle.values[-1], sino.shape[0], 0])
    ax.set(title="sinogram stack (summed over 2θ)", xlabel="angle (deg)", ylabel="translation")
    cmaps = ["Reds", "Greens", "Blues"]
    for k, name in enumerate(names):
        ax = axes[0, 1] if k == 0 else axes[0, 2] if k == 1 else axes[1, 0]
        sl = wins[name]
        img = ds["fbp"].isel({spec: sl}).sum(spec).values
        ax.imshow(np.clip(img, 0, None), cmap=cmaps[k % 3])
        ax.set(title=f"FBP, {name} peak ({tth[sl.start]:.2f}–{tth[min(sl.stop, tth.size) - 1]:.2f}° 2θ)")
        ax.axis("off")
    ax = axes[1, 1]
    pm = ds["phase_maps"].values
    rgb = np.zeros(pm.shape[1:] + (3,))
    for k in range(min(3, pm.shape[0])):
        rgb[..., k] = pm[k] / max(pm[k].max(), 1e-12)
    ax.imshow(rgb)
    ax.set(title="ground truth phase maps (" + ", ".join(names) + " as R, G, B)")
    ax.axis("off")
    ax = axes[1, 2]
    iy, ix = _brightest_pixel(ds["phase_maps"].values)
    ax.plot(tth, ds["volume"].isel(y=iy, x=ix).values, "k-", lw=1.6, label="ground truth")
    scale = float(ds.attrs.get("scale", 1.0)) or 1.0  # counts per unit line integral (simulator)
    ax.plot(tth, ds["fbp"].isel(y=iy, x=ix).values / scale, "-", color="tab:orange", lw=1,
            label="FBP" + (" ÷ dose scale" if scale != 1.0 else ""))
    ax.set(title=f"local pattern at pixel (y={iy}, x={ix})", xlabel="2θ (deg)", ylabel="intensity")
    ax.legend()
    _atomic_savefig(fig, Path(path), overwrite)
    plt.close(fig)
    return Path(path)


def _brightest_pixel(phase_maps):
    """A pixel where two or more phases mix (or the strongest single one)."""
    pm = np.asarray(phase_maps, float)
    score = np.sort(pm, axis=0)[-2] if pm.shape[0] > 1 else pm[0]
    if score.max() <= 0:
        score = pm.sum(0)
    iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(iy), int(ix)


def _png_bytes(fig) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def image_figure_png(image, *, cmap: str = "viridis", limits=None, log: bool = False,
                     title: str | None = None, dpi: int = 110) -> bytes:
    """A 2-D image as a PNG figure with axes, axis labels (with units), a labelled colour bar and
    a title: what a paper or a logbook needs, unlike the bare array of
    :func:`xrdwidgets.explore.export.save_image`.

    Parameters
    ----------
    image : xarray.DataArray
        ``(row, col)`` with coordinates (e.g. ``(y, x)`` in mm); ``long_name``/``units`` attrs of
        the coordinates and of the image label the axes and the colour bar.
    cmap : str
        Matplotlib colormap name.
    limits : (float, float), optional
        Colour limits in the displayed units (after ``log``); default 1–99 percentiles.
    log : bool
        Show ``log10`` of the image.
    title : str, optional
        Figure title (default: the image's name).
    dpi : int

    Returns
    -------
    bytes
        The PNG file.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend

    from .labels import axis_label
    from .slicing import log_image, percentile_limits

    shown = log_image(image) if log else image
    vmin, vmax = limits if limits is not None else percentile_limits(shown)
    row, col = shown.dims
    r = np.asarray(shown[row].values, float) if row in shown.coords else np.arange(shown.shape[0], dtype=float)
    c = np.asarray(shown[col].values, float) if col in shown.coords else np.arange(shown.shape[1], dtype=float)
    dr = abs(r[1] - r[0]) / 2 if r.size > 1 else 0.5
    dc = abs(c[1] - c[0]) / 2 if c.size > 1 else 0.5
    extent = [c[0] - dc, c[-1] + dc, r[-1] + dr, r[0] - dr]
    fig = Figure(figsize=(6.0, 5.0), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(np.asarray(shown.values, float), cmap=cmap, vmin=vmin, vmax=vmax, origin="upper",
                   extent=extent, aspect="equal" if {row, col} <= {"x", "y"} else "auto",
                   interpolation="nearest")
    ax.set_xlabel(axis_label(shown[col]) if col in shown.coords else col)
    ax.set_ylabel(axis_label(shown[row]) if row in shown.coords else row)
    label = axis_label(shown) or "intensity"
    fig.colorbar(im, ax=ax, label=("log10 " + label) if log else label)
    ax.set_title(title if title is not None else str(shown.name or ""), fontsize=10)
    return _png_bytes(fig)


def patterns_figure_png(patterns: dict, *, title: str | None = None, dpi: int = 110) -> bytes:
    """Diffraction patterns ``{name: 1-D DataArray}`` as a PNG line plot with labelled axes."""
    from matplotlib.figure import Figure

    from .labels import axis_label

    names = list(patterns)
    ref = patterns[names[0]]
    dim = ref.dims[0]
    fig = Figure(figsize=(7, 4), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    for n in names:
        p = patterns[n]
        ax.plot(p[p.dims[0]].values, p.values, lw=1, label=str(n))
    ax.set_xlabel(axis_label(ref[dim]) if dim in ref.coords else dim)
    ax.set_ylabel(axis_label(ref) or "intensity")
    if len(names) > 1:
        ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    return _png_bytes(fig)
