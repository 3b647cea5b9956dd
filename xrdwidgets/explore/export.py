"""Export helpers: files and download bytes of what a view shows.

:func:`save_image` (PNG colour-mapped like the view, or HDF5 with coords/units) and
:func:`save_patterns` (``.xy`` columns, HDF5 or PNG plot) never replace an existing file unless
``overwrite=True`` and write atomically. :func:`image_bytes`, :func:`patterns_bytes` and
:func:`result_bytes` give the same files as bytes for a browser download.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from ..base.atomic import atomic_path
from ..data import DataError
from .labels import axis_label
from .slicing import decimate, log_image, percentile_limits

log = logging.getLogger(__name__)

__all__ = [
    "COLORMAPS",
    "IMAGE_FORMATS",
    "MAX_DOWNLOAD_MB",
    "MAX_FIGURE_PIXELS",
    "PATTERN_FORMATS",
    "check_cmap",
    "check_download_size",
    "export_name",
    "image_bytes",
    "patterns_bytes",
    "result_bytes",
    "save_image",
    "save_patterns",
]

#: Colormap names understood by both the widgets (plotly) and the PNG export (matplotlib).
COLORMAPS = ("viridis", "magma", "inferno", "plasma", "cividis", "gray", "turbo")
#: File formats of :func:`save_image` (by suffix).
IMAGE_FORMATS = ("png", "h5")
#: File formats of :func:`save_patterns` (by suffix).
PATTERN_FORMATS = ("xy", "h5", "png")


# ---------------------------------------------------------------------------- export
def _fmt(path: Path, allowed, func) -> str:
    suffix = path.suffix.lower().lstrip(".")
    fmt = "h5" if suffix in ("h5", "hdf5", "hdf") else suffix
    if fmt not in allowed:
        raise DataError(f"{func}: cannot write {path.name!r}: format {suffix!r} not supported; "
                        f"use one of {tuple(allowed)}")
    return fmt


def _write_atomic(path: Path, overwrite: bool, write) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file to ``path`` (no clobbering)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent} is not a folder; create it first")
    with atomic_path(path, overwrite=overwrite) as tmp:
        write(tmp)
    log.info("wrote %s", path)
    return path


def check_cmap(cmap: str, func: str) -> str:
    """``cmap`` when it is one of :data:`COLORMAPS`; :class:`~xrdwidgets.data.DataError` naming
    ``func`` otherwise."""
    if cmap not in COLORMAPS:
        raise DataError(f"{func}: cmap must be one of {COLORMAPS}, found {cmap!r}")
    return cmap


def save_image(image: xr.DataArray, path, *, cmap: str = "viridis", limits=None, log: bool = False,
               overwrite: bool = False) -> Path:
    """Write a 2-D image to PNG (colour-mapped, as shown) or HDF5 (values, coords, units).

    Parameters
    ----------
    image : xarray.DataArray
        ``(row, col)``, e.g. from :func:`roi_image` (full resolution, not decimated).
    path : path-like
        ``*.png`` or ``*.h5``/``*.hdf5``. Not replaced unless ``overwrite``.
    cmap : str
        One of :data:`COLORMAPS` (PNG only).
    limits : (float, float), optional
        Colour limits of the PNG in the displayed units (after ``log``); default 1–99 percentiles.
    log : bool
        PNG shows ``log10`` of the image (HDF5 always stores the linear values).
    overwrite : bool

    Returns
    -------
    pathlib.Path
        The written file. The PNG has one pixel per image pixel, row 0 at the top.
    """
    if not isinstance(image, xr.DataArray) or image.ndim != 2:
        raise DataError(f"save_image: expected a 2-D xarray.DataArray, found "
                        f"{type(image).__name__} with shape {getattr(image, 'shape', None)}")
    path = Path(path)
    fmt = _fmt(path, IMAGE_FORMATS, "save_image")
    if fmt == "h5":
        from .. import io as _io

        out = image.rename(image.name or "image")
        return _write_atomic(path, overwrite, lambda tmp: _io.save(out, tmp, overwrite=True,
                                                                   producer="xrdwidgets.explore.save_image"))
    check_cmap(cmap, "save_image")
    shown = log_image(image) if log else image
    vmin, vmax = limits if limits is not None else percentile_limits(shown)

    def write(tmp):
        import matplotlib.image as mpimg  # no pyplot: no global state, no backend

        mpimg.imsave(tmp, np.asarray(shown.values, dtype=float), cmap=cmap, vmin=vmin, vmax=vmax,
                     origin="upper", format="png")

    return _write_atomic(path, overwrite, write)


def _patterns_dict(patterns) -> dict:
    if isinstance(patterns, xr.DataArray):
        patterns = {str(patterns.name or "pattern"): patterns}
    if not isinstance(patterns, dict) or not patterns:
        raise DataError("save_patterns: expected a 1-D DataArray or a non-empty dict name → DataArray")
    for k, p in patterns.items():
        if not isinstance(p, xr.DataArray) or p.ndim != 1:
            raise DataError(f"save_patterns: pattern {k!r} must be a 1-D xarray.DataArray, found "
                            f"{type(p).__name__} with shape {getattr(p, 'shape', None)}")
    return patterns


def _same_axis(a: xr.DataArray, b: xr.DataArray) -> bool:
    return a.dims == b.dims and np.array_equal(a[a.dims[0]].values, b[b.dims[0]].values)


def save_patterns(patterns, path, *, overwrite: bool = False) -> Path:
    """Write one or several diffraction patterns to ``.xy``, HDF5 or a PNG plot.

    Parameters
    ----------
    patterns : xarray.DataArray or dict
        A 1-D pattern (spectral dim) or ``{name: pattern}``; the first is the reference.
    path : path-like
        ``*.xy`` (text: spectral coordinate then one intensity column per pattern sharing the
        first pattern's axis — others are skipped with a warning; ``#`` header lines name the
        columns and units), ``*.h5`` (a Dataset, one variable per pattern; patterns on another
        axis get their own dim ``<dim>_<name>``), or ``*.png`` (a line plot).
    overwrite : bool
        Replace an existing file (default: raise ``FileExistsError``).

    Returns
    -------
    pathlib.Path
    """
    pats = _patterns_dict(patterns)
    path = Path(path)
    fmt = _fmt(path, PATTERN_FORMATS, "save_patterns")
    names = list(pats)
    ref = pats[names[0]]
    dim = ref.dims[0]
    if fmt == "xy":
        same = [n for n in names if _same_axis(pats[n], ref)]
        skipped = [n for n in names if n not in same]
        if skipped:
            log.warning("save_patterns: %s not written to %s (different %s axis)", skipped, path.name, dim)
        cols = np.column_stack([np.asarray(ref[dim].values, float)]
                               + [np.asarray(pats[n].values, float) for n in same])
        pos = ", ".join(f"{k}={float(v.values):g} {v.attrs.get('units', '')}".rstrip()
                        for k, v in ref.coords.items() if v.ndim == 0)
        header = "\n".join([
            f"xrdwidgets pattern export{(' at ' + pos) if pos else ''}",
            f"columns: {axis_label(ref[dim])}, " + ", ".join(
                f"{n} ({pats[n].attrs.get('units', '')})" for n in same),
        ])
        return _write_atomic(path, overwrite, lambda tmp: np.savetxt(tmp, cols, fmt="%.8g", header=header))
    if fmt == "h5":
        from .. import io as _io

        variables = {}
        for n in names:
            p = pats[n].reset_coords(drop=True)
            if not _same_axis(p, ref):
                p = p.rename({p.dims[0]: f"{p.dims[0]}_{n}"})
            variables[str(n)] = p
        ds = xr.Dataset(variables)
        ds.attrs.update({f"position_{k}": float(v.values) for k, v in ref.coords.items() if v.ndim == 0})
        return _write_atomic(path, overwrite, lambda tmp: _io.save(ds, tmp, overwrite=True,
                                                                   producer="xrdwidgets.explore.save_patterns"))

    def write(tmp):
        from matplotlib.figure import Figure  # no pyplot: no global state, no backend

        fig = Figure(figsize=(7, 4), dpi=110, layout="constrained")
        ax = fig.add_subplot()
        for n in names:
            p = pats[n]
            ax.plot(p[p.dims[0]].values, p.values, lw=1, label=str(n))
        ax.set_xlabel(axis_label(ref[dim]))
        ax.set_ylabel(axis_label(ref))
        if len(names) > 1:
            ax.legend()
        fig.savefig(tmp, format="png")

    return _write_atomic(path, overwrite, write)


# ---------------------------------------------------------------------------- downloads
#: Largest payload (MB) the dashboards send to the browser as a download (base64 inside a page
#: message); larger results go to the server's results folder instead.
MAX_DOWNLOAD_MB = 64.0
#: PNG figures of larger images are block-averaged to this many pixels per axis first.
MAX_FIGURE_PIXELS = 2048


def check_download_size(nbytes: int, what: str, limit_mb: float = MAX_DOWNLOAD_MB) -> None:
    """Raise :class:`~xrdwidgets.data.DataError` when ``nbytes`` exceed the download limit."""
    if nbytes > limit_mb * 2**20:
        raise DataError(f"{what} is {nbytes / 2**20:.0f} MB, over the {limit_mb:g} MB download limit; "
                        "save it to the results folder instead")


def _file_bytes(suffix: str, write) -> bytes:
    """Bytes of the file ``write(path)`` writes (into a private temporary folder, then removed)."""
    with tempfile.TemporaryDirectory(prefix="xrdwidgets-download-") as tmp:
        path = Path(tmp) / f"download{suffix}"
        write(path)
        return path.read_bytes()


def image_bytes(image: xr.DataArray, fmt: str = "png", *, cmap: str = "viridis", limits=None,
                log: bool = False, title: str | None = None) -> bytes:
    """A 2-D image as file bytes for a browser download.

    ``fmt="png"``: a figure with axes, labels with units, colour bar and title
    (:func:`xrdwidgets.explore.figures.image_figure_png`; images over :data:`MAX_FIGURE_PIXELS` per axis
    are block-averaged first). ``fmt="h5"``: the full-resolution values with coordinates and units
    (as :func:`save_image`). Raises :class:`DataError` over :data:`MAX_DOWNLOAD_MB`.
    """
    if not isinstance(image, xr.DataArray) or image.ndim != 2:
        raise DataError(f"image_bytes: expected a 2-D xarray.DataArray, found {type(image).__name__}")
    if fmt not in IMAGE_FORMATS:
        raise DataError(f"image_bytes: fmt must be one of {IMAGE_FORMATS}, found {fmt!r}")
    if fmt == "h5":
        check_download_size(image.nbytes, f"image {image.name or ''}".strip())
        return _file_bytes(".h5", lambda p: save_image(image, p))
    from .figures import image_figure_png

    check_cmap(cmap, "image_bytes")
    return image_figure_png(decimate(image, MAX_FIGURE_PIXELS), cmap=cmap, limits=limits, log=log,
                            title=title)


def patterns_bytes(patterns, fmt: str = "xy", *, title: str | None = None) -> bytes:
    """Patterns (a 1-D DataArray or ``{name: pattern}``) as file bytes for a browser download:
    ``xy`` / ``h5`` as :func:`save_patterns`, ``png`` a plot with labelled axes."""
    pats = _patterns_dict(patterns)
    if fmt not in PATTERN_FORMATS:
        raise DataError(f"patterns_bytes: fmt must be one of {PATTERN_FORMATS}, found {fmt!r}")
    if fmt == "png":
        from .figures import patterns_figure_png

        return patterns_figure_png(pats, title=title)
    return _file_bytes(f".{fmt}", lambda p: save_patterns(pats, p))


def result_bytes(obj, *, producer: str = "xrdwidgets dashboard") -> bytes:
    """A result (DataArray or Dataset, e.g. a reconstructed volume or fitted maps) as the bytes
    of an xrdwidgets HDF5 file (:func:`xrdwidgets.io.save`, with provenance). Raises
    :class:`DataError` over :data:`MAX_DOWNLOAD_MB`."""
    from .. import io as _io

    check_download_size(int(obj.nbytes), f"result {getattr(obj, 'name', '') or ''}".strip())
    return _file_bytes(".h5", lambda p: _io.save(obj, p, producer=producer))


def export_name(*parts) -> str:
    """A file-name stem from parts: spaces and unsafe characters replaced, e.g. ``fbp_tth_5.1-5.3``."""
    safe = []
    for p in parts:
        s = "".join(ch if (ch.isalnum() or ch in ".-+") else "_" for ch in str(p))
        if s:
            safe.append(s)
    return "_".join(safe) or "export"
