"""Torch operators shared by every reconstruction algorithm."""
from .projector import ParallelProjector, circle_mask, default_device
from .filters import FILTERS, fbp_filter, filter_sinogram
from .parallax import ParallaxProjector

__all__ = ["ParallelProjector", "circle_mask", "default_device", "FILTERS", "fbp_filter", "filter_sinogram"]
__all__ += ["ParallaxProjector"]
