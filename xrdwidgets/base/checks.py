"""Checks before work: is the output folder writable, does the data fit in memory.

They run before any long computation or large read, so that a bad output path or an
oversized dataset is reported at once (naming the target), not after an hour of reconstruction.

``check_writable(folder)``
    Creates and removes a probe file in ``folder``; a missing, non-folder or read-only target
    gives an ``OSError`` naming the folder (not a temporary file).
``available_memory()``
    Bytes of memory available to a new allocation (``psutil``), ``None`` when unknown.
``fits_in_memory(nbytes)`` / ``check_fits_in_memory(nbytes, what=...)``
    A :class:`DataTooLargeError` stating the size, the available memory and the lazy path
    (zarr/dask) when ``nbytes`` exceeds :data:`MEMORY_FRACTION` of the available memory.

:func:`xrdwidgets.recon.stack.check_stack_memory` applies it to a stack reconstruction.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from .errors import DataTooLargeError

log = logging.getLogger(__name__)

__all__ = ["MEMORY_FRACTION", "DataTooLargeError", "available_memory", "check_fits_in_memory",
           "check_writable", "fits_in_memory", "format_bytes"]

#: Largest share of the available memory one array may take when loaded whole.
MEMORY_FRACTION = 0.8




def format_bytes(n: float) -> str:
    """``n`` bytes as a short text (``"14.6 TiB"``)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_writable(folder, *, what: str = "output folder") -> Path:
    """Check that files can be created in ``folder`` (create and remove a probe file).

    Parameters
    ----------
    folder : path-like
        The folder a result will be written to (it must exist).
    what : str
        How the folder is named in the error message.

    Returns
    -------
    Path
        ``folder``.

    Raises
    ------
    FileNotFoundError
        The folder does not exist.
    NotADirectoryError
        It is not a folder.
    PermissionError
        No file can be created in it (read-only, no permission, full disk...).
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"{what} {folder} does not exist; create it or choose another")
    if not folder.is_dir():
        raise NotADirectoryError(f"{what} {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".xrdwidgets-write-probe-", dir=folder)
    except OSError as exc:
        raise PermissionError(f"{what} {folder} is not writable ({exc.strerror or exc}); choose a "
                              "folder you can write to") from None
    os.close(fd)
    try:
        os.remove(probe)
    except OSError:  # pragma: no cover - created but not removable: still writable
        log.debug("cannot remove the probe file %s", probe, exc_info=True)
    return folder


def available_memory() -> int | None:
    """Bytes of memory available for new allocations (``psutil.virtual_memory().available``)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - no psutil
        return None


def fits_in_memory(nbytes: int) -> bool:
    """Whether ``nbytes`` may be loaded whole (at most :data:`MEMORY_FRACTION` of what is
    available; ``True`` when the available memory is unknown)."""
    avail = available_memory()
    return avail is None or nbytes <= MEMORY_FRACTION * avail


def check_fits_in_memory(nbytes: int, *, what: str, lazy_hint: str = "") -> None:
    """Raise a :class:`DataTooLargeError` when ``nbytes`` cannot be loaded into memory.

    Parameters
    ----------
    nbytes : int
        Size of the array(s) about to be read whole.
    what : str
        What is read (file and variable, with its shape and dtype), named in the message.
    lazy_hint : str
        How to work on it lazily instead; a default suggestion when empty.
    """
    if fits_in_memory(nbytes):
        return
    avail = available_memory()
    hint = lazy_hint or ("open it lazily instead (xrdwidgets.io.open_zarr on a zarr copy, or "
                         "xarray/dask chunks), or select a part before loading")
    raise DataTooLargeError(
        f"{what} needs {format_bytes(nbytes)} in memory, but only {format_bytes(avail)} is available; {hint}")
