"""How long a reconstruction will take, measured before it starts.

:func:`estimate_runtime` starts the method's own generator (:func:`xrdwidgets.recon.iterate`) on
the actual stack and device, times its first few steps (iterations, epochs, or FBP batches) of the
first channel batch, stops it, and extrapolates to the whole batch plan. The number of steps and
of batches is not computed here: it is what the running method reports in its first
:class:`~xrdwidgets.base.progress.Progress` event (``total`` counts the steps of every batch,
``metrics["n_batches"]`` the batches), so the estimate follows the method's own plan (overlapping
batches of ParallaxNet included).

The model is ``seconds = batches × setup_s + steps × per_step_s``: ``per_step_s`` is the mean time
of the steps in the later half of the probe, ``setup_s`` what the probe took before them beyond
that rate (operator, FBP start, network build, the warm-up of the first steps). One-time costs of the probe (library imports, the first CUDA call) fall into
``setup_s`` and make the estimate err on the long side; so does early stopping (a network
method stops when its learning rate reaches its floor) and pre-training epochs, which are
priced as training steps.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from ..base.errors import InputError
from ..base.progress import Progress
from .iterative import iterate
from .registry import get_method

log = logging.getLogger(__name__)

__all__ = ["RuntimeEstimate", "estimate_runtime"]

#: At most this many steps are run by a probe.
_MAX_PROBE = 10_000


@dataclass(frozen=True)
class RuntimeEstimate:
    """A measured runtime estimate of one reconstruction.

    Attributes
    ----------
    method : str
        Registry name of the method.
    seconds : float
        Estimated wall time of the whole run (s): ``batches * setup_s + steps * per_step_s``.
    per_step_s : float
        Mean time of one step (iteration / epoch / FBP batch), s.
    setup_s : float
        Time before the first step of a batch, s (includes one-time costs of the probe).
    steps : int
        Steps of the whole run, every batch (as the method reports them).
    batches : int
        Channel batches of the run.
    probed_steps : int
        Steps actually run and timed.
    probe_s : float
        Wall time the probe took, s.
    device : str
        Where it was measured (``"default"`` when the method chose).
    how : str
        One line on how it was measured.
    """

    method: str
    seconds: float
    per_step_s: float
    setup_s: float
    steps: int
    batches: int
    probed_steps: int
    probe_s: float
    device: str
    how: str

    def text(self) -> str:
        """Rounded words for a user: ``"about 18 min"``, ``"about 40 s"``, ``"about 2.5 h"``."""
        s = self.seconds
        if s < 90:
            return f"about {max(1, round(s))} s"
        if s < 90 * 60:
            return f"about {round(s / 60)} min"
        return f"about {s / 3600:.1f} h"

    def __str__(self) -> str:
        return (f"{self.method}: {self.text()} ({self.steps} steps in {self.batches} batch"
                f"{'es' if self.batches != 1 else ''}, {self.per_step_s:.3g} s/step, {self.setup_s:.3g} s "
                f"setup per batch; {self.how})")


def estimate_runtime(method: str, stack, params: dict | None = None, *, n_probe: int = 5,
                     min_probe_s: float = 1.0, clock=time.perf_counter) -> RuntimeEstimate:
    """Time the first steps of ``method`` on ``stack`` and extrapolate to the whole run.

    Parameters
    ----------
    method : str
        A registered method (:func:`xrdwidgets.recon.registry.methods`).
    stack : xarray.DataArray or Dataset
        The sinogram stack ``(translation, angle, spectral)`` that will be reconstructed (any dim
        order); only its first channel batch is read.
    params : dict, optional
        The keywords the run will get (``n_iter``, ``epochs``, ``batch``, ``device``, ...);
        checked as :func:`~xrdwidgets.recon.iterate` checks them.
    n_probe : int
        At least this many steps are run after the first; the later half of the probe is timed
        (the steps before it, warm-up included, count as setup).
    min_probe_s : float
        Keep timing steps of the first batch until this many seconds have passed since the first
        step (fast steps on a busy machine need more than a few to time), s.
    clock : callable
        ``clock() -> seconds``; :func:`time.perf_counter` (tests pass a fake clock).

    Returns
    -------
    RuntimeEstimate
        ``per_step_s`` is the mean over the timed steps (a busy machine's pauses included, as
        the run will meet them).

    Raises
    ------
    ValueError
        Unknown method, a parameter the method does not take or a bad value (the method's own
        message), ``n_probe`` < 1, or a method that does not report its number of steps.
    """
    spec = get_method(method)          # ValueError naming the known methods
    params = dict(params or {})
    if not isinstance(n_probe, int) or isinstance(n_probe, bool) or n_probe < 1:
        raise InputError(f"estimate_runtime: n_probe must be an int >= 1, found {n_probe!r}")
    if not isinstance(min_probe_s, (int, float)) or not math.isfinite(min_probe_s) or min_probe_s < 0:
        raise InputError(f"estimate_runtime: min_probe_s must be a finite number >= 0, found {min_probe_s!r}")
    if params.get("checkpoint") is not None:
        raise InputError("estimate_runtime: params must not contain a 'checkpoint' (estimate a fresh run; "
                         "a resumed job shows its own ETA)")
    t0 = clock()
    gen = iterate(stack, spec.name, **params)   # ValueError/TypeError: bad parameters, bad stack
    times: list[float] = []
    its: list[int] = []
    first: Progress | None = None
    finished = False
    try:
        while len(times) < _MAX_PROBE and not (len(times) > n_probe and times[-1] - times[0] >= min_probe_s):
            try:
                ev = next(gen)
            except StopIteration:
                finished = True
                break
            t = clock()
            if not isinstance(ev, Progress):  # pragma: no cover - every registered method yields Progress
                continue
            if first is None:
                first = ev
            elif (ev.metrics or {}).get("batch", 1) != (first.metrics or {}).get("batch", 1):
                break   # the next batch's first step includes its setup: not a step time
            times.append(t)
            its.append(int(ev.iteration))
    finally:
        gen.close()
    t_end = clock()
    if first is None:
        raise InputError(f"estimate_runtime: method {spec.name!r} finished without reporting a step")
    if first.total is None:
        raise InputError(f"estimate_runtime: method {spec.name!r} does not report its number of steps "
                         "(Progress.total); no estimate")
    m = first.metrics or {}
    batches = int(m.get("n_batches", 1))
    steps = int(first.total)
    device = str(params.get("device") or "default")
    if len(times) >= 2 and its[-1] > its[0]:
        # the mean, not the median: on a shared machine the steps are bimodal (run / preempted),
        # and the whole run will see the same mixture
        # the later half of the probe: the first steps warm up (allocations, autograd graphs)
        h = min(len(times) // 2, len(times) - 2)
        while h > 0 and its[-1] == its[h]:
            h -= 1
        per_step = (times[-1] - times[h]) / (its[-1] - its[h])
        setup = max(0.0, (times[h] - t0) - per_step * its[h])
        how = (f"timed steps {its[h] + 1}–{its[-1]} of batch 1 ({times[-1] - times[h]:.2g} s; the steps "
               f"before count as setup), on {device}")
    else:  # one step per batch (FBP) or a run shorter than the probe
        per_step = (times[-1] - t0) / max(its[-1], 1)
        setup = 0.0
        how = f"timed {its[-1]} step(s) from the start, on {device}"
    if m.get("phase") == "pretrain":
        how += "; pre-training epochs priced as training epochs"
    if finished and batches == 1 and its[-1] >= steps:
        how = f"ran to the end, on {device}"
        seconds = times[-1] - t0
    else:
        seconds = batches * setup + steps * per_step
    if not math.isfinite(seconds):  # pragma: no cover - a broken clock
        raise InputError(f"estimate_runtime: the clock gave non-finite times ({seconds!r})")
    est = RuntimeEstimate(method=spec.name, seconds=float(seconds), per_step_s=float(per_step),
                          setup_s=float(setup), steps=steps, batches=batches, probed_steps=len(times),
                          probe_s=float(t_end - t0), device=device, how=how)
    log.info("estimate_runtime: %s", est)
    return est
