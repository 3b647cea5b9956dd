"""The zarr store of a distributed run: its volume and its bookkeeping (run record, done flags,
SHA-256 of each batch), created, checked for resume, and read.

See :mod:`xrdwidgets.distributed` (the layout of the store, and how a run resumes from it).
"""
from __future__ import annotations

import hashlib
import logging
import math
import uuid
from pathlib import Path

import numpy as np

from .. import data as _data
from ..base.atomic import remove_path
from ..base.errors import StateError
from ..recon.batching import batch_key
from ..recon.stack import image_coords
from ..recon.stack_checkpoint import check_fingerprint, jsonable, stack_fingerprint

log = logging.getLogger(__name__)

__all__ = ["RUN_GROUP", "RUN_ATTR", "store_status", "open_run", "run_group", "read_batch", "lead_index",
           "sha256"]

#: The store's bookkeeping group and the attribute holding the run record.
RUN_GROUP = "xrdwidgets_run"
RUN_ATTR = "run"
_RUN_KIND = "xrdwidgets.distributed.run"
_RUN_VERSION = 1


def _batch_chunk(batches, n_channels: int) -> int:
    """Channels per zarr chunk such that every batch covers whole chunks."""
    g = 0
    for _, s, e in batches:
        g = math.gcd(g, int(s))
        if e != n_channels:
            g = math.gcd(g, int(e))
    return g or n_channels


def sha256(arr: np.ndarray) -> bytes:
    """SHA-256 digest of ``arr`` as contiguous float32 bytes."""
    return hashlib.sha256(np.ascontiguousarray(arr, np.float32).tobytes()).digest()


def run_group(store: Path, mode: str = "r"):
    """The store's bookkeeping group (None when ``store`` is not a store of a distributed run)."""
    import zarr

    try:
        grp = zarr.open_group(str(store), mode=mode)
        sub = grp[RUN_GROUP]
    except Exception:  # noqa: BLE001 - zarr raises many types for a folder that is not a store
        return None
    return sub if RUN_ATTR in sub.attrs else None


def _read_run(store: Path) -> dict | None:
    sub = run_group(store)
    if sub is None:
        return None
    run = dict(sub.attrs[RUN_ATTR])
    if run.get("kind") != _RUN_KIND:
        raise StateError(f"{store}: not the store of a distributed run (kind {run.get('kind')!r})")
    if run.get("version") != _RUN_VERSION:
        raise StateError(f"{store}: a distributed run of record version {run.get('version')!r}; this xrdwidgets "
                         f"reads version {_RUN_VERSION}; remove the store to start again")
    return run


def store_status(store) -> dict:
    """What a store of :func:`iterate_distributed` holds: ``{"method", "n_batches", "done",
    "complete"}`` (``done``: keys of the batches recorded as finished, not checked)."""
    store = Path(store)
    run = _read_run(store)
    if run is None:
        raise StateError(f"{store}: not the store of a distributed run (no {RUN_GROUP!r} group)")
    flags = np.asarray(run_group(store)["done"][:])
    done = [batch_key(*b) for b, f in zip(run["batches"], flags) if f]
    return {"method": run["method"], "n_batches": len(run["batches"]), "done": done,
            "complete": len(done) == len(run["batches"])}


def _create_store(store: Path, plan, run: dict, chunk: int, lead_chunk: bool) -> None:
    import zarr

    from ..io import create_zarr_stack

    da = plan.stack
    lead = [d for d in da.dims if d in _data.EXTRA_DIMS]
    pos, _units = image_coords(da, plan.op.n)
    spec = _data.spectral_dim(da)
    coords = {d: np.asarray(da[d].values) for d in lead}
    coords.update({_data.Y: pos, _data.X: pos.copy(), spec: np.asarray(da[spec].values)})
    attrs = {k: v for k, v in da.attrs.items() if not k.startswith(("provenance_", "geometry_"))}
    create_zarr_stack(store, coords=coords, kind="volume", block=chunk, name="volume",
                      geometry=_data.get_geometry(da), attrs=attrs, producer=plan.producer,
                      parameters=plan.parameters, lead_block=1 if lead_chunk else None)
    nb = len(run["batches"])
    sub = zarr.open_group(str(store), mode="r+").create_group(RUN_GROUP)
    sub.create_array("done", shape=(nb,), chunks=(1,), dtype="uint8", fill_value=0)
    sub.create_array("sha256", shape=(nb, 32), chunks=(1, 32), dtype="uint8", fill_value=0)
    sub.create_array("seconds", shape=(nb,), chunks=(1,), dtype="float64", fill_value=np.nan)
    sub.attrs[RUN_ATTR] = jsonable(run)  # last: the store is a run from here on


def lead_index(plan, li: int) -> tuple:
    """Index of flattened leading slice ``li`` in the leading ``time``/``z`` dims of ``plan.stack`` (``()`` for all / none)."""
    da = plan.stack
    shape = tuple(da.sizes[d] for d in da.dims if d in _data.EXTRA_DIMS)
    return tuple(int(i) for i in np.unravel_index(li, shape)) if shape and li >= 0 else ()


def read_batch(store: Path, plan, batch, parts: bool) -> np.ndarray:
    """The image of batch ``(lead, start, stop)`` as written to the store (a whole part when ``parts``)."""
    import zarr

    li, s, e = batch
    if parts:
        return np.asarray(run_group(store)[f"part_{batch_key(*batch)}"][...])
    arr = zarr.open_group(str(store), mode="r")["volume"]
    return np.asarray(arr[lead_index(plan, li) + (Ellipsis, slice(s, e))])


def _valid_done(store: Path, plan, run: dict) -> set:
    """Keys of the finished batches whose data match their SHA-256; the others are marked undone."""
    sub = run_group(store, "r+")
    flags, sums = np.asarray(sub["done"][:]), np.asarray(sub["sha256"][:])
    ok = set()
    for i, b in enumerate(run["batches"]):
        if not flags[i]:
            continue
        key = batch_key(*b)
        try:
            good = sha256(read_batch(store, plan, tuple(b), run["parts"])) == bytes(sums[i])
        except Exception as exc:  # noqa: BLE001 - a damaged chunk reads with many error types
            log.warning("%s: batch %s cannot be read (%s); it is computed again", store, key, exc)
            good = False
        if good:
            ok.add(key)
        else:
            log.warning("%s: batch %s does not match its SHA-256; it is computed again", store, key)
            sub["done"][i] = 0
    return ok


def open_run(store: Path, plan, batches: list, method: str, overwrite: bool) -> tuple[dict, set]:
    """Create the store of a new run, or check and reopen the one to resume; returns
    ``(run record, keys of the finished batches)``."""
    fingerprint = stack_fingerprint(plan)
    run = {"kind": _RUN_KIND, "version": _RUN_VERSION, "method": method, "producer": plan.producer,
           "fingerprint": fingerprint, "layout": plan.layout, "parts": plan.layout == "overlap",
           "batches": [list(b) for b in batches], "run_id": uuid.uuid4().hex[:12]}
    if store.exists():
        old = _read_run(store)
        if old is None:
            raise FileExistsError(f"{store}: exists and is not the store of a distributed run; it is left "
                                  "untouched: choose another store path")
        if overwrite:
            log.info("%s: overwrite: removing the store of a former run", store)
            remove_path(store)
        else:
            check_fingerprint(f"distributed run in {store}", old.get("fingerprint"), jsonable(fingerprint))
            if [list(b) for b in old["batches"]] != run["batches"]:
                raise StateError(f"{store}: holds a run of other channel batches ({len(old['batches'])} "
                                 f"batches; now {len(batches)}): resume with the batch parameters it was "
                                 "started with, or pass overwrite=True")
            return old, _valid_done(store, plan, old)
    chunk = plan.n_channels if run["parts"] else _batch_chunk(batches, plan.n_channels)
    _create_store(store, plan, run, chunk, lead_chunk=not plan.whole_lead)
    return run, set()
