"""Reconstruction algorithms: generators of :class:`Progress` events over the shared operators."""
from .base import Progress, run_to_end
from .fbp import fbp, fbp_array

__all__ = ["Progress", "run_to_end", "fbp", "fbp_array"]
