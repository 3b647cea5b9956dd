"""The one atomic-write helper: write beside the target, then move into place.

A crash, a kill or an exception while writing leaves the former file (or none), never half of a
new one, and no temporary file behind. Every writer of the package (data files, checkpoints,
job records, figures, exports) goes through :func:`atomic_path`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["atomic_path", "remove_path", "atomic_write_text", "atomic_torch_save"]


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree; nothing if it is not there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path, *, overwrite: bool = True, suffix: str = ".tmp", before_replace=None):
    """Yield a temporary path beside ``path``; when the block succeeds, move it to ``path``.

    The block creates the temporary file or folder (a zarr store, say) under the given name.

    Parameters
    ----------
    path : path-like
        The target file or folder.
    overwrite : bool
        Replace an existing ``path`` (True), or raise FileExistsError, also when the target
        appears while the block runs (a file is hard-linked into place, which fails then).
    suffix : str
        Ending of the temporary name (some writers choose the format from it, e.g. ``.tmp.png``).
    before_replace : callable, optional
        Called (no arguments) just before a folder replaces an existing ``path``; it may raise
        to keep ``path`` (e.g. "replace only a zarr store, never another folder").

    On any error the temporary file or folder is removed and ``path`` is left as it was. A
    folder that replaces a folder moves the old one aside first, then removes it.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}"
    try:
        yield tmp
        if not overwrite:
            if path.exists():
                raise FileExistsError(f"{path}: appeared while writing; not replaced "
                                      "(pass overwrite=True to replace it)")
            try:
                if tmp.is_dir():
                    os.replace(tmp, path)
                else:
                    os.link(tmp, path)  # atomic; fails if the target appeared meanwhile
            except FileExistsError:
                raise FileExistsError(f"{path}: appeared while writing; not replaced "
                                      "(pass overwrite=True to replace it)") from None
            except OSError:  # file systems without hard links
                os.replace(tmp, path)
        elif tmp.is_dir() and path.exists():
            if before_replace is not None:
                before_replace()
            aside = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.old"
            os.replace(path, aside)
            os.replace(tmp, path)
            remove_path(aside)
        else:
            os.replace(tmp, path)
    finally:
        remove_path(tmp)


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_torch_save(obj, path) -> Path:
    """``torch.save(obj, path)`` atomically (the former file or the new one, never half of one)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)
