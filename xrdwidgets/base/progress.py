"""Progress events and the driver that runs an algorithm generator to its end.

The base of the method layer: algorithms (:mod:`xrdwidgets.recon`, :mod:`xrdwidgets.analysis`)
yield :class:`Progress`; jobs, the CLI and the widgets consume it. Imports nothing of the package.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generator

__all__ = ["Progress", "run_to_end"]


@dataclass(frozen=True)
class Progress:
    """One step of a running algorithm.

    Attributes
    ----------
    iteration : int
        Step number (iteration, epoch or channel batch), from 1.
    total : int or None
        Number of steps when known.
    loss : float or None
        Objective / residual at this step.
    metrics : dict
        Extra named numbers (e.g. learning rate, channels done).
    preview : numpy.ndarray or None
        Optional 2-D ``(y, x)`` preview slice.
    """

    iteration: int
    total: int | None = None
    loss: float | None = None
    metrics: dict = field(default_factory=dict)
    preview: Any = None


def run_to_end(gen: Generator, callback=None):
    """Run an algorithm generator to the end; return its result (the generator's return value).

    ``callback(progress)`` is called for every :class:`Progress` event when given.
    """
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(ev)
