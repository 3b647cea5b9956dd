"""Channel batches with overlap: split a spectral axis, run something per batch, merge back.

Methods that couple neighbouring channels (ParallaxNet: parallax moves intensity by a few 2θ
channels) cannot treat a batch's edge channels as well as its middle — intensity that shifts in
from outside the batch is missing. Batches therefore overlap, and the overlaps are merged with
weights that favour each batch's interior.

``plan_batches(M, B, O)``
    Batches of ``B`` channels (all the same size, so one model shape serves all) whose starts are
    spread evenly over ``[0, M − B]``: consecutive batches overlap by at least ``O`` channels
    (more when the spacing does not divide evenly). ``M ≤ B`` gives one batch of ``M``.

``merge_batches(results, slices, M, weights="linear")``
    Each channel is the weighted mean of the batches covering it. ``"linear"`` (default):
    cross-fade — a batch's weight ramps linearly from ``1/(r+1)`` at its edge to 1 over ``r``
    channels, where ``r`` is the overlap with its neighbour on that side (no ramp at the ends of
    the axis), so in an overlap the weights of the two batches go down / up linearly and the
    result is continuous. ``"mean"``: plain average. The weights are normalised per channel, so
    merging identical data returns it exactly.

``map_batches(fn, array, B, O)`` does both: ``fn`` receives each batch (and its slice) and
returns an array with the same spectral length.

:class:`BatchPlan` is the batch plan of one stack run (:mod:`xrdwidgets.recon.driver`): which
``(lead, start, stop)`` batches are left, and where a finished one goes in the volume.
"""
from __future__ import annotations

import math

import numpy as np

from ..base.errors import InputError, StateError
from ..base.validators import check_int
from .stack_checkpoint import chunk_array, chunk_key

__all__ = ["BatchPlan", "MERGE_WEIGHTS", "batch_key", "batch_weights", "even_batches", "map_batches", "merge_batches", "plan_batches"]

#: Accepted ``weights`` of :func:`merge_batches`.
MERGE_WEIGHTS = ("linear", "mean")


def plan_batches(n_channels: int, batch: int, overlap: int = 0) -> list[slice]:
    """Slices of at most ``batch`` channels covering ``range(n_channels)``, overlapping by ``>= overlap``.

    Parameters
    ----------
    n_channels : int
        Length ``M`` of the spectral axis (>= 1).
    batch : int
        Channels per batch ``B`` (>= 1).
    overlap : int
        Minimum overlap ``O`` of consecutive batches (``0 <= O < B``).

    Returns
    -------
    list of slice
        In increasing order; all of length ``min(B, M)``; the first starts at 0, the last stops
        at ``M``.
    """
    c = "plan_batches"
    M = check_int(c, "n_channels", n_channels, 1)
    B = check_int(c, "batch", batch, 1)
    O = check_int(c, "overlap", overlap, 0)
    if O >= B:
        raise InputError(f"{c}: overlap must be smaller than batch (overlap {O}, batch {B})")
    if M <= B:
        return [slice(0, M)]
    k = math.ceil((M - O) / (B - O))                 # batches needed at spacing B − O
    starts = np.floor(np.linspace(0, M - B, k) + 0.5).astype(int)
    return [slice(int(s), int(s) + B) for s in starts]


def even_batches(n_channels: int, batch: int) -> list[slice]:
    """Near-equal consecutive batches of at most ``batch`` channels that tile ``n_channels``.

    ``ceil(M / B)`` batches whose lengths differ by at most one (e.g. 10 channels, ``batch`` 4:
    3, 4, 3), for methods whose cost or quality depends on the batch size (one network per batch).
    """
    c = "even_batches"
    M = check_int(c, "n_channels", n_channels, 1)
    B = check_int(c, "batch", batch, 1)
    k = math.ceil(M / B)
    edges = np.linspace(0, M, k + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _check_slices(caller, slices, n_channels):
    M = check_int(caller, "n_channels", n_channels, 1)
    if not slices:
        raise InputError(f"{caller}: slices is empty")
    out = []
    for i, s in enumerate(slices):
        if not isinstance(s, slice) or s.step not in (None, 1):
            raise InputError(f"{caller}: slices[{i}] must be a slice with step 1, found {s!r}")
        start, stop = s.start or 0, s.stop
        if stop is None or not (0 <= start < stop <= M):
            raise InputError(f"{caller}: slices[{i}] = {s!r} is not a non-empty range within 0..{M}")
        out.append((int(start), int(stop)))
    cover = np.zeros(M, int)
    for a, b in out:
        cover[a:b] += 1
    if (cover == 0).any():
        missing = np.flatnonzero(cover == 0)
        raise InputError(f"{caller}: the slices leave {missing.size} channels uncovered "
                         f"(first {missing[:5].tolist()})")
    return M, out


def batch_weights(slices, n_channels: int, weights: str = "linear") -> list[np.ndarray]:
    """Merge weight of every channel of every batch (before normalisation), one array per slice.

    See the module docstring for ``"linear"`` (cross-fade) and ``"mean"``.
    """
    c = "batch_weights"
    if weights not in MERGE_WEIGHTS:
        raise InputError(f"{c}: weights must be one of {MERGE_WEIGHTS}, found {weights!r}")
    _M, rng = _check_slices(c, slices, n_channels)
    out = []
    for i, (a, b) in enumerate(rng):
        w = np.ones(b - a)
        if weights == "linear":
            # overlap with the neighbours on each side (batches sorted by start)
            left = max([pb - a for j, (pa, pb) in enumerate(rng) if j != i and pa < a and pb > a] or [0])
            right = max([b - pa for j, (pa, pb) in enumerate(rng) if j != i and pb > b and pa < b] or [0])
            left, right = min(left, b - a), min(right, b - a)
            if left:
                w[:left] = np.minimum(w[:left], (np.arange(left) + 1.0) / (left + 1.0))
            if right:
                w[b - a - right:] = np.minimum(w[b - a - right:], (np.arange(right, 0, -1)) / (right + 1.0))
        out.append(w)
    return out


def merge_batches(results, slices, n_channels: int, *, weights: str = "linear", axis: int = -1):
    """Merge per-batch results into the full spectral axis.

    Parameters
    ----------
    results : sequence of arrays
        One per slice, the spectral axis (``axis``) of length ``len(slice)``; other axes equal.
        numpy arrays or torch tensors (converted to numpy).
    slices : sequence of slice
        The batches (e.g. from :func:`plan_batches`); together they must cover every channel.
    n_channels : int
        Length ``M`` of the full spectral axis.
    weights : {"linear", "mean"}
        Cross-fade or plain average in the overlaps (module docstring).
    axis : int
        The spectral axis of the results (default last).

    Returns
    -------
    numpy.ndarray
        Shape of a result with the spectral axis of length ``M`` (float64 unless all results are
        float32).
    """
    c = "merge_batches"
    if len(results) != len(slices):
        raise InputError(f"{c}: {len(results)} results for {len(slices)} slices; give one result per slice")
    ws = batch_weights(slices, n_channels, weights)
    arrs = []
    for i, r in enumerate(results):
        if hasattr(r, "detach"):
            r = r.detach().cpu().numpy()
        arrs.append(np.asarray(r))
    M = int(n_channels)
    shape = None
    for i, (arr, s) in enumerate(zip(arrs, slices)):
        if arr.ndim == 0:
            raise InputError(f"{c}: results[{i}] is a scalar; expected an array with a spectral axis")
        ax = axis % arr.ndim
        n_s = s.stop - (s.start or 0)
        if arr.shape[ax] != n_s:
            raise InputError(f"{c}: results[{i}] has {arr.shape[ax]} channels on axis {axis} but its slice "
                             f"{s!r} has {n_s}")
        rest = arr.shape[:ax] + arr.shape[ax + 1:]
        if shape is None:
            shape = (rest, ax)
        elif shape != (rest, ax):
            raise InputError(f"{c}: results[{i}] has shape {arr.shape}, not matching the others "
                             f"(non-spectral shape {shape[0]})")
    rest, ax = shape
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrs) else np.float64
    acc = np.zeros(rest + (M,), dtype)
    wsum = np.zeros(M, dtype)
    for arr, s, w in zip(arrs, slices, ws):
        a0 = s.start or 0
        acc[..., a0:s.stop] += np.moveaxis(arr, ax, -1) * w.astype(dtype)
        wsum[a0:s.stop] += w
    return np.moveaxis(acc / wsum, -1, ax)


def map_batches(fn, array, batch: int, overlap: int = 0, *, axis: int = -1, weights: str = "linear"):
    """Run ``fn(batch_array, slice)`` on overlapping channel batches of ``array`` and merge.

    ``fn`` returns an array whose ``axis`` has the batch's length (other axes free but equal
    across batches). Returns the merged numpy array (:func:`merge_batches`).
    """
    arr = np.asarray(array)
    if arr.ndim == 0:
        raise InputError("map_batches: array must have a spectral axis, found a scalar")
    ax = axis % arr.ndim
    M = arr.shape[ax]
    slices = plan_batches(M, batch, overlap)
    results = [fn(np.take(arr, np.arange(s.start, s.stop), axis=ax), s) for s in slices]
    return merge_batches(results, slices, M, weights=weights, axis=axis)


class BatchPlan:
    """The channel batches of a run and the results that are in: what is left to do, and where a
    finished batch goes in the volume.

    A batch is ``(lead, start, stop)``: ``lead`` the index of a flattened leading ``time``/``z``
    slice, or -1 for all of them (``whole_lead``). Checkpoints name a finished batch's images
    ``"<lead>_<start>_<stop>"``, one per leading slice (:func:`chunk_key`). Layouts (see
    :class:`StackPlan`): ``"tile"`` covers the channels not done yet, ``batch`` at a time;
    ``"even"`` and ``"overlap"`` are fixed (:func:`~xrdwidgets.recon.batching.even_batches`,
    :func:`~xrdwidgets.recon.batching.plan_batches`), overlapping batches merged once all of a
    leading slice's are in.
    """

    def __init__(self, plan: "xrdwidgets.recon.stack.StackPlan", n_lead: int):
        self.plan, self.n_lead, self.C = plan, n_lead, plan.n_channels
        self.done = np.zeros((n_lead, self.C), bool)       # "tile": channels done
        if plan.layout == "overlap":
            self.slices = [(t.start, t.stop) for t in plan_batches(self.C, plan.batch, plan.overlap)]
        elif plan.layout == "even":
            self.slices = [(t.start, t.stop) for t in even_batches(self.C, plan.batch)]
        else:
            self.slices = None
        self.parts: dict = {}                              # fixed layouts: {lead: {(s, e): image or None}}
        self.n_done = 0

    @property
    def leads(self) -> list:
        return [-1] if self.plan.whole_lead else list(range(self.n_lead))

    def keys(self) -> set | None:
        """Names of every chunk of the run (fixed layouts), or None (any tiling is accepted)."""
        if self.slices is None:
            return None
        return {f"{li}_{s}_{e}" for li in range(self.n_lead) for s, e in self.slices}

    def is_done(self, li: int, s: int, e: int) -> bool:
        if self.slices is None:
            return bool(self.done[li, s:e].any())
        return (s, e) in self.parts.get(li, {})

    def work(self) -> list:
        """``(lead, start, stop)`` of the batches left, in order."""
        if self.slices is None:
            return [(li, s, e) for li in self.leads for s, e in _gaps(self.done[li], self.plan.batch)]
        return [(li, s, e) for li in self.leads for s, e in self.slices if not self.is_done(li, s, e)]

    def chunks(self, li: int, s: int, e: int, img: np.ndarray) -> dict:
        """The checkpoint chunks of a finished batch ``img``."""
        if li < 0:
            return {f"{k}_{s}_{e}": img[k] for k in range(self.n_lead)}
        return {f"{li}_{s}_{e}": img}

    def put(self, flat_out: np.ndarray, li: int, s: int, e: int, img: np.ndarray) -> None:
        """A finished batch ``img`` (``(y, x, e - s)``, or ``(L, y, x, e - s)`` for ``li`` -1):
        into the volume, or kept until its leading slice can be merged."""
        self.n_done += 1
        if self.slices is None:
            flat_out[li, :, :, s:e] = img
            self.done[li, s:e] = True
            return
        for k, im in ([(li, img)] if li >= 0 else enumerate(img)):
            key = -1 if li < 0 else k
            got = self.parts.setdefault(key, {})
            if self.plan.layout == "overlap":
                got[(s, e)] = im if li >= 0 else got.get((s, e), {}) | {k: im}
            else:
                flat_out[k, :, :, s:e] = im
                got[(s, e)] = None
        if self.plan.layout == "overlap":
            self._merge(flat_out, li)

    def _merge(self, flat_out, li):
        got = self.parts.get(li, {})
        if len(got) < len(self.slices) or any(v is None for v in got.values()):
            return
        for k in (range(self.n_lead) if li < 0 else [li]):
            res = [got[t][k] if li < 0 else got[t] for t in self.slices]
            sl = [slice(a, b) for a, b in self.slices]
            flat_out[k] = res[0] if len(res) == 1 else merge_batches(res, sl, self.C, weights=self.plan.merge)
        self.parts[li] = {t: None for t in got}  # merged: the batch images are not needed any more

    def restore(self, flat_out: np.ndarray, chunks: dict, caller: str, n: int) -> int:
        """Put a checkpoint's chunks in; returns how many batches were complete."""
        names = self.keys()
        by_batch: dict = {}
        for key, arr in chunks.items():
            li, s, e = chunk_key(caller, key)
            if not (li < self.n_lead and 0 <= s < e <= self.C):
                raise StateError(f"{caller}: checkpoint chunk {key!r} lies outside the stack "
                                 f"({self.n_lead} leading slice(s), {self.C} channels)")
            if names is not None and key not in names:
                raise StateError(f"{caller}: checkpoint chunk {key!r} is not one of this run's channel batches "
                                 f"(batches {self.slices} over {self.n_lead} leading slice(s))")
            by_batch.setdefault((s, e), {})[li] = np.asarray(chunk_array(caller, key, arr, (n, n, e - s)),
                                                            np.float32)
        for (s, e), per_lead in sorted(by_batch.items()):
            if self.plan.whole_lead:
                if len(per_lead) == self.n_lead:  # a batch of all slices is done only when all are in
                    self.put(flat_out, -1, s, e, np.stack([per_lead[k] for k in range(self.n_lead)]))
            else:
                for li, img in sorted(per_lead.items()):
                    self.put(flat_out, li, s, e, img)
        return self.n_done


def batch_key(li: int, s: int, e: int) -> str:
    """Name of batch ``(li, s, e)`` in checkpoints and run stores, ``"<lead>_<start>_<stop>"``
    (a batch of every leading slice, lead -1: lead 0)."""
    return f"{max(int(li), 0)}_{int(s)}_{int(e)}"


def _gaps(done_row: np.ndarray, batch: int):
    """``(start, stop)`` batches of at most ``batch`` channels covering the not-done channels."""
    C, i = done_row.size, 0
    while i < C:
        if done_row[i]:
            i += 1
            continue
        j = i
        while j < C and not done_row[j]:
            j += 1
        for s in range(i, j, batch):
            yield s, min(j, s + batch)
        i = j
