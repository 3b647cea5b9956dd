"""Exploring volumes and sinogram stacks without widgets: slices, channel windows, ROIs, labels,
exports, image-quality metrics and PNG figures.

The functions behind :class:`xrdwidgets.widgets.Explorer` (and its model
:class:`xrdwidgets.explore.model.ExplorerModel`); notebook users call them directly.

=====================  ==========================================================================
module                 job
=====================  ==========================================================================
:mod:`.slicing`        images and patterns of the canonical ``(row, col, spectral)`` data,
                       decimation, colour limits, ``log10`` display
:mod:`.windows`        channel windows (by value or index), their plain sums, :class:`WindowIndex`
:mod:`.roi`            ROI images with background subtraction, masks, ROI patterns, peak guesses
:mod:`.labels`         axis titles and window descriptions from ``long_name``/``units``
:mod:`.export`         files and download bytes of images and patterns
:mod:`.figures`        PNG figures with matplotlib (CLI, README, downloads)
:mod:`.metrics`        PSNR, RMSE, MAE, SSIM against a reference
=====================  ==========================================================================
"""
from .export import (
    COLORMAPS,
    IMAGE_FORMATS,
    MAX_DOWNLOAD_MB,
    MAX_FIGURE_PIXELS,
    PATTERN_FORMATS,
    check_cmap,
    check_download_size,
    export_name,
    image_bytes,
    patterns_bytes,
    result_bytes,
    save_image,
    save_patterns,
)
from .labels import axis_label, axis_name, channel_text
from .roi import BACKGROUNDS, roi_image, roi_mask, roi_pattern, suggest_peaks
from .slicing import (
    canonical_3d,
    channel_index,
    check_index,
    decimate,
    decimation_factors,
    image_at,
    image_dims,
    image_from_values,
    iterate_stack_overview,
    log_image,
    nearest_index,
    pattern_at,
    percentile_limits,
    stack_overview,
    window_attrs,
)
from .windows import WindowIndex, sum_channels, window_indices, window_sum

__all__ = [
    "BACKGROUNDS", "COLORMAPS", "IMAGE_FORMATS", "MAX_DOWNLOAD_MB", "MAX_FIGURE_PIXELS",
    "PATTERN_FORMATS", "WindowIndex", "axis_label", "axis_name", "canonical_3d", "channel_index",
    "channel_text", "check_cmap", "check_download_size", "check_index", "decimate",
    "decimation_factors", "export_name", "image_at", "image_bytes", "image_dims",
    "image_from_values", "iterate_stack_overview", "log_image", "nearest_index", "pattern_at", "patterns_bytes",
    "percentile_limits", "result_bytes", "roi_image", "roi_mask", "roi_pattern", "save_image", "stack_overview",
    "save_patterns", "suggest_peaks", "sum_channels", "window_attrs", "window_indices", "window_sum",
]
