"""Safety checks for what a dashboard visitor chooses: paths and uploaded files.

A Voila dashboard gives strangers (a course, a beamline's users) a kernel that runs on the
server. Everything a visitor picks therefore passes through this module before any file is
opened:

* **Paths** are resolved (symlinks followed, ``..`` collapsed) and must lie inside the one
  configured data folder (:func:`confine`); ``~`` and NUL bytes are refused outright. Listings
  (:func:`list_data_files`) never descend through symlinked folders and leave out files whose
  real location escapes the folder.
* **Uploads** are checked for size and extension, and their first bytes must carry the format's
  real signature (:func:`sniff_format`: the HDF5 superblock signature, the ``.npy`` magic
  string) before they are written, under a sanitised name, into a private temporary folder
  (:func:`write_upload`) from which the ordinary readers of :mod:`xrdwidgets.io` load them. The
  readers never unpickle (``allow_pickle=False``).

No user text is ever evaluated (no ``eval``/``exec``/``pickle``); numbers come from numeric
widgets, choices from fixed option lists.

* **Writes** (the dashboards' export buttons) go through the same confinement: into
  ``<data folder>/results/`` (:func:`results_root`), in a sub-folder a visitor may name
  (:class:`ExportPlace`); an existing file is replaced only if this visitor's kernel wrote it,
  unless the owner allows replacing (``XRDWIDGETS_ALLOW_OVERWRITE=1``,
  ``xrdwidgets app --allow-overwrite``). Without a data folder (the owner's own notebook) exports
  go where the owner says, as before.

The data folder of a served app comes from the ``XRDWIDGETS_DATA_DIR`` environment variable
(set by ``xrdwidgets app --data-dir DIR``; the served app always has one), see :func:`data_root`.

It is part of the base floor: it imports nothing of the package but the error family, so every
room that takes a path from a person (widgets, the Explorer model, the app server) uses it.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from .errors import InputError, InputTypeError, UnsafeError

log = logging.getLogger(__name__)

__all__ = [
    "DATA_DIR_ENV", "MAX_UPLOAD_ENV", "DEFAULT_MAX_UPLOAD_MB", "max_upload_mb", "DATA_FILE_SUFFIXES", "DATA_STORE_SUFFIXES", "UPLOAD_SUFFIXES",
    "UnsafePathError", "UploadError", "data_root", "confine", "list_data_files", "sniff_format",
    "check_upload", "safe_filename", "write_upload",
    "RESULTS_FOLDER", "ALLOW_OVERWRITE_ENV", "SCRATCH_ENV", "results_root", "overwrite_allowed", "ExportPlace",
]

#: Environment variable holding the data folder of a served app.
DATA_DIR_ENV = "XRDWIDGETS_DATA_DIR"
#: Environment variable holding the upload limit (MB) of a served app.
MAX_UPLOAD_ENV = "XRDWIDGETS_MAX_UPLOAD_MB"
#: Environment variable: "1" lets visitors replace files in the results folder that they did not write.
ALLOW_OVERWRITE_ENV = "XRDWIDGETS_ALLOW_OVERWRITE"
#: Environment variable holding the served app's scratch folder (uploads go there).
SCRATCH_ENV = "XRDWIDGETS_SCRATCH_DIR"
#: Sub-folder of the data folder receiving the dashboards' exports.
RESULTS_FOLDER = "results"
#: Upload limit (MB) when none is configured.
DEFAULT_MAX_UPLOAD_MB = 200.0
#: File suffixes listed from a data folder (HDF5 files and ``.npy`` arrays).
DATA_FILE_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".npy")
#: Folder suffixes listed from a data folder (zarr stores; never descended into).
DATA_STORE_SUFFIXES = (".zarr",)
#: Suffixes accepted for uploads, with the format their content must have.
UPLOAD_SUFFIXES = {".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".nxs": "hdf5", ".npy": "npy"}

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_NPY_MAGIC = b"\x93NUMPY"
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class UnsafePathError(UnsafeError):
    """A path that resolves outside the data folder (``..``, symlinks, absolute paths)."""


class UploadError(InputError):
    """An uploaded file that is refused: too large, wrong extension, or not the claimed format."""


# ============================================================================ paths
def data_root(value=None) -> Path | None:
    """The configured data folder, resolved, or ``None`` when none is configured.

    Parameters
    ----------
    value : str or path-like, optional
        The folder; default: the ``XRDWIDGETS_DATA_DIR`` environment variable (empty or unset
        means no data folder).

    Raises
    ------
    NotADirectoryError
        The folder is given but does not exist or is not a folder.
    """
    if value is None:
        value = os.environ.get(DATA_DIR_ENV, "").strip() or None
        if value is None:
            return None
    root = Path(os.fspath(value)).expanduser().resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"data folder {os.fspath(value)!r} does not exist or is not a folder")
    return root


def max_upload_mb(value=None) -> float:
    """The upload limit in MB: ``value``, else ``XRDWIDGETS_MAX_UPLOAD_MB``, else 200.

    Raises ``ValueError`` for a limit that is not a positive number.
    """
    if value is None:
        value = os.environ.get(MAX_UPLOAD_ENV, "").strip() or DEFAULT_MAX_UPLOAD_MB
    try:
        mb = float(value)
    except (TypeError, ValueError):
        raise InputError(f"upload limit: expected a number of MB, found {value!r}") from None
    if not mb > 0 or mb != mb or mb == float("inf"):
        raise InputError(f"upload limit: expected a positive number of MB, found {value!r}")
    return mb


def confine(path, root, *, must_exist: bool = False) -> Path:
    """Resolve ``path`` and check that it lies inside the data folder ``root``.

    Parameters
    ----------
    path : str or path-like
        Relative to ``root`` (the usual case), or absolute. ``..`` and symlinks are allowed as
        long as the *resolved* location stays inside ``root``.
    root : str or path-like
        The data folder (must exist).
    must_exist : bool
        Also require that the resolved path exists.

    Returns
    -------
    pathlib.Path
        The resolved absolute path (symlinks followed).

    Raises
    ------
    UnsafePathError (a PermissionError)
        The resolved path lies outside ``root``, or no data folder is configured.
    ValueError
        An empty path, a NUL byte, or a path starting with ``~`` (home folders are never
        expanded).
    TypeError
        ``path`` is not a str or path-like (bytes paths are refused).
    FileNotFoundError
        ``must_exist`` and nothing is there.
    """
    if root is None:
        raise UnsafePathError("no data folder is configured (start the app with --data-dir DIR)")
    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"expected a path (str or os.PathLike), found {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise InputTypeError("bytes paths are not accepted; give a str")
    if not text.strip():
        raise InputError("empty path; choose a file inside the data folder")
    if "\x00" in text:
        raise InputError("path contains a NUL byte")
    if text.startswith("~"):
        raise InputError(f"{text!r}: '~' (home folder) is not allowed; give a path relative to the "
                         "data folder")
    root_r = Path(os.fspath(root)).resolve()
    if not root_r.is_dir():
        raise NotADirectoryError(f"data folder {os.fspath(root)!r} does not exist or is not a folder")
    p = Path(text)
    resolved = (p if p.is_absolute() else root_r / p).resolve()
    if resolved != root_r and root_r not in resolved.parents:
        log.warning("refused path %r: resolves outside the data folder", text)
        raise UnsafePathError(f"{text!r} is outside the data folder")
    if must_exist and not resolved.exists():
        raise FileNotFoundError(f"{text!r}: no such file in the data folder")
    return resolved


def results_root(root) -> Path:
    """``<root>/results``: the folder dashboard exports go to, created when missing.

    Raises :class:`UnsafePathError` when ``results`` is a symlink (or anything) resolving
    outside ``root``.
    """
    folder = confine(RESULTS_FOLDER, root)
    folder.mkdir(exist_ok=True)
    return confine(RESULTS_FOLDER, root, must_exist=True)


def overwrite_allowed(value=None) -> bool:
    """Whether visitors may replace files they did not write (``XRDWIDGETS_ALLOW_OVERWRITE``)."""
    if value is None:
        value = os.environ.get(ALLOW_OVERWRITE_ENV, "")
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class ExportPlace:
    """Where a dashboard's exports go, and which files this visitor (this kernel) wrote.

    Parameters
    ----------
    root : path-like or None
        The data folder. Given: every export folder is a sub-folder of
        ``<root>/results`` (:func:`results_root`) named by the visitor, confined to it (``..``,
        absolute paths and symlinks out are refused with :class:`UnsafePathError`); an existing
        file is replaced only when this object wrote it, or when ``allow_overwrite``. ``None``
        (the owner's notebook, no data folder): folders are taken as given, relative to the
        working directory, and ``overwrite`` replaces any file, as the owner asks.
    allow_overwrite : bool, optional
        Default :func:`overwrite_allowed` (the server option).

    Attributes
    ----------
    base : pathlib.Path or None
        ``<root>/results`` (created on first use), or ``None`` without a root.
    written : set of pathlib.Path
        Files written through :meth:`target` + :meth:`wrote` (resolved paths).
    """

    def __init__(self, root=None, *, allow_overwrite: bool | None = None):
        self.root = None if root is None else Path(os.fspath(root)).resolve()
        self.allow_overwrite = overwrite_allowed() if allow_overwrite is None else bool(allow_overwrite)
        self.written: set[Path] = set()

    @property
    def confined(self) -> bool:
        return self.root is not None

    @property
    def base(self) -> Path | None:
        return None if self.root is None else results_root(self.root)

    def folder(self, text) -> Path:
        """The export folder for the visitor's text (created): relative to the results folder
        (empty or ``.`` means the results folder itself) when confined."""
        text = "" if text is None else os.fspath(text)
        if not self.confined:
            folder = Path(text.strip() or ".").expanduser()
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        base = self.base
        try:
            folder = confine(text.strip() or ".", base)
            folder.mkdir(parents=True, exist_ok=True)
            return confine(folder, base, must_exist=True)     # nothing swapped in meanwhile
        except UnsafePathError:
            raise UnsafePathError(f"{text!r} is outside the results folder: exports go into "
                                  f"'{RESULTS_FOLDER}/' of the data folder (give a sub-folder name)") from None

    def target(self, folder: Path, name: str, overwrite: bool) -> tuple[Path, bool]:
        """The file ``folder/name`` to write and whether it may replace an existing file.

        Raises
        ------
        UnsafePathError
            Confined and ``folder/name`` resolves outside the results folder (a symlink).
        FileExistsError
            Confined, ``overwrite`` asked for, the file exists, this visitor did not write it
            and the owner does not allow replacing.
        """
        path = Path(folder) / name
        if not self.confined:
            return path, bool(overwrite)
        resolved = confine(path, self.base)
        if overwrite and (path.exists() or path.is_symlink()) and resolved not in self.written \
                and not self.allow_overwrite:
            raise FileExistsError(f"{self.shown(path)} exists and was not written from this page; "
                                  "the server does not allow replacing it: choose another folder")
        return path, bool(overwrite)

    def wrote(self, path) -> None:
        """Record a file written for this visitor."""
        self.written.add(Path(path).resolve())

    def shown(self, path) -> str:
        """``path`` as a visitor may see it: relative to the data folder when confined."""
        if not self.confined:
            return str(path)
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return Path(path).name


def _is_data_file(name: str) -> bool:
    return name.lower().endswith(DATA_FILE_SUFFIXES)


def list_data_files(root, *, max_files: int = 2000, max_depth: int = 6) -> list[str]:
    """Data files under ``root``: HDF5 files, ``.npy`` arrays and zarr stores, sorted.

    Hidden entries (``.name``) are left out; symlinked folders are not descended into; a
    symlinked file or store is listed only if its real location is inside ``root``.

    Parameters
    ----------
    root : str or path-like
        The data folder.
    max_files : int
        Stop after this many entries (a warning is logged).
    max_depth : int
        Folder levels below ``root`` searched.

    Returns
    -------
    list of str
        Paths relative to ``root``, with ``/`` separators (pass them to :func:`confine`).
    """
    root_r = Path(os.fspath(root)).resolve()
    out: list[str] = []
    for here, dirs, files in os.walk(root_r, followlinks=False):
        rel_here = Path(here).relative_to(root_r)
        depth = len(rel_here.parts)
        keep_dirs = []
        for d in sorted(dirs):
            if d.startswith("."):
                continue
            if d.lower().endswith(DATA_STORE_SUFFIXES):
                files.append(d)             # a zarr store is an entry, not a folder to browse
            elif depth < max_depth and not os.path.islink(os.path.join(here, d)):
                keep_dirs.append(d)
        dirs[:] = keep_dirs
        for name in sorted(files):
            if name.startswith(".") or not (_is_data_file(name) or name.lower().endswith(DATA_STORE_SUFFIXES)):
                continue
            rel = (rel_here / name).as_posix()
            try:
                confine(rel, root_r, must_exist=True)
            except (OSError, ValueError):
                log.info("list_data_files: left out %r (outside the data folder or dangling link)", rel)
                continue
            out.append(rel)
            if len(out) >= max_files:
                log.warning("list_data_files: more than %d data files under the data folder; "
                            "listing the first %d", max_files, max_files)
                return sorted(out)
    return sorted(out)


# ============================================================================ uploads
def sniff_format(head: bytes) -> str | None:
    """The real format of a file from its first bytes: ``"hdf5"``, ``"npy"`` or ``None``.

    HDF5's superblock signature may sit at byte 0 or, after a user block, at 512, 1024, 2048,
    … bytes; give enough bytes (the whole upload is fine).
    """
    head = bytes(head[:1 << 20]) if not isinstance(head, bytes) else head
    if head.startswith(_NPY_MAGIC):
        return "npy"
    offset = 0
    while offset + len(_HDF5_SIGNATURE) <= len(head):
        if head[offset:offset + len(_HDF5_SIGNATURE)] == _HDF5_SIGNATURE:
            return "hdf5"
        offset = 512 if offset == 0 else offset * 2
    return None


def safe_filename(name: str) -> str:
    """A harmless file name from an uploaded name: its last component, with only
    ``A-Z a-z 0-9 . _ -`` kept (others become ``_``), no leading dots, at most 100 characters."""
    base = re.split(r"[\\/]", str(name))[-1]
    base = _SAFE_CHARS.sub("_", base).lstrip(".")
    if len(base) > 100:
        stem, dot, suffix = base.rpartition(".")
        base = (stem[: 100 - len(suffix) - 1] + dot + suffix) if dot and len(suffix) < 12 else base[:100]
    return base or "upload"


def too_large_message(name: str, size: int, max_bytes: int) -> str:
    """What to tell a visitor whose file of ``size`` bytes exceeds ``max_bytes``."""
    return (f"{safe_filename(name)}: {size / 2**20:.1f} MB is larger than the upload limit of "
            f"{max_bytes / 2**20:.0f} MB; put large files in the data folder instead")


def check_upload(name: str, content, *, max_bytes: int) -> str:
    """Check an uploaded file before it is written anywhere.

    Parameters
    ----------
    name : str
        The file name the browser sent.
    content : bytes-like
        The file content.
    max_bytes : int
        Largest accepted size.

    Returns
    -------
    str
        The format (``"hdf5"`` or ``"npy"``).

    Raises
    ------
    UploadError
        Empty or too large, an extension not in :data:`UPLOAD_SUFFIXES`, or content whose
        signature is not that of the format the extension names (the message says what the
        bytes look like).
    """
    size = len(content)
    shown = safe_filename(name)
    if size == 0:
        raise UploadError(f"{shown}: the file is empty")
    if size > max_bytes:
        raise UploadError(too_large_message(name, size, max_bytes))
    suffix = Path(shown).suffix.lower()
    expected = UPLOAD_SUFFIXES.get(suffix)
    if expected is None:
        raise UploadError(f"{shown}: files ending in {suffix or '(no extension)'!r} are not accepted; "
                          f"upload one of {', '.join(sorted(UPLOAD_SUFFIXES))}")
    found = sniff_format(memoryview(content)[: 1 << 20].tobytes())
    if found != expected:
        what = f"a {found.upper()} file" if found else _describe_head(memoryview(content)[:16].tobytes())
        raise UploadError(f"{shown}: not a valid {expected.upper()} file (no {expected.upper()} "
                          f"signature; the content looks like {what})")
    return expected


def _describe_head(head: bytes) -> str:
    if head[:2] == b"PK":
        return "a zip archive"
    if head[:2] == b"\x1f\x8b":
        return "a gzip archive"
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return "binary data of an unknown format"
    return "text" if text.isprintable() or text.strip() else "binary data of an unknown format"


def write_upload(name: str, content, *, max_bytes: int, directory=None) -> Path:
    """Check an upload (:func:`check_upload`) and write it to a new private temporary file.

    Parameters
    ----------
    name : str
        The browser's file name (only a sanitised version is used, inside a fresh folder).
    content : bytes-like
    max_bytes : int
    directory : path-like, optional
        Parent of the fresh folder (default: the served app's scratch folder,
        ``XRDWIDGETS_SCRATCH_DIR``, else the system temp folder).

    Returns
    -------
    pathlib.Path
        ``<fresh folder>/<safe name>``; the caller deletes the folder when done
        (``shutil.rmtree(path.parent)``).
    """
    check_upload(name, content, max_bytes=max_bytes)
    if directory is None:
        scratch = os.environ.get(SCRATCH_ENV, "").strip()
        if scratch and os.path.isdir(scratch):
            directory = scratch
    folder = Path(tempfile.mkdtemp(prefix="xrdwidgets-upload-", dir=directory))
    path = folder / safe_filename(name)
    with open(path, "xb") as fh:
        fh.write(memoryview(content))
    return path
