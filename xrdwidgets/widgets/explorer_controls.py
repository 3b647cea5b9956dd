"""The controls of the Explorer: display options, the window slider, export and download buttons.

:class:`ExplorerControls` is the part of :class:`xrdwidgets.widgets.explorer.Explorer` that builds
its ipywidgets and turns their changes into calls of the Explorer and of its
:class:`~xrdwidgets.explore.model.ExplorerModel` (exports and downloads are the model's).
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import ipywidgets as w

from .. import explore
from ..base import safety
from ..data import DataError
from .plotting import MIME, DownloadLink, fixed_box, image_figure, pattern_figure, updating

log = logging.getLogger(__name__)

__all__ = ["ExplorerControls", "guarded"]


def guarded(method):
    """Run a widget callback; on error show it in the status line instead of raising."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            log.warning("%s: %s", method.__name__, exc, exc_info=not isinstance(exc, (DataError, OSError)))
            self._say(f"⚠ {exc}")
    return wrapper


class ExplorerControls:
    """Controls of the Explorer (a mixin: the Explorer provides ``model``, ``window``,
    ``image_fig``/``pattern_fig`` callbacks and the rendering methods)."""

    def _build_widgets(self, cmap, percentiles, log_on):
        iw, ih = self._image_size
        pw, ph = self._pattern_size
        self.image_fig = image_figure(width=iw, height=ih, cmap=cmap, equal_aspect=self.KIND == "volume")
        self.pattern_fig = pattern_figure(width=pw, height=ph)
        heat = self.image_fig.data[0]
        heat.on_click(self._on_image_click)
        heat.on_hover(self._on_image_hover)
        heat.on_unhover(self._on_image_unhover)
        self._hovering = False           # a hover is being handled: the marker waits
        self._marker_stale = False       # the marker is not on self.pixel yet

        small = {"layout": w.Layout(width="auto"), "indent": False}
        self.w_window = w.IntRangeSlider(value=(0, 0), min=0, max=1, description="window",
                                         continuous_update=False, readout=False,
                                         layout=w.Layout(width=f"{iw + pw - 300}px"))
        self.w_window_label = w.HTML()
        self.w_cmap = w.Dropdown(options=list(explore.COLORMAPS), value=cmap, description="colormap",
                                 layout=w.Layout(width="190px"))
        self.w_log = w.Checkbox(value=bool(log_on), description="log image", **small)
        self.w_percentiles = w.FloatRangeSlider(value=tuple(percentiles), min=0, max=100, step=0.5,
                                                description="limits %", continuous_update=False,
                                                readout_format=".1f", layout=w.Layout(width="300px"))
        self.w_log_pattern = w.Checkbox(value=False, description="log pattern", **small)
        self.w_hover = w.Checkbox(value=True, description="hover → pattern", **small)
        self.w_hover_map = w.Checkbox(value=False, description="hover → image", **small)
        self.w_overlays = w.SelectMultiple(options=[], value=[], description="overlay", rows=3,
                                           layout=w.Layout(width="260px"))
        self.w_export_dir = w.Text(value=str(self.export_dir), description="folder",
                                   placeholder=f"{safety.RESULTS_FOLDER}/…" if self.exports.confined else "",
                                   layout=w.Layout(width="300px"))
        self.w_image_fmt = w.Dropdown(options=list(explore.IMAGE_FORMATS), value="png",
                                      layout=w.Layout(width="70px"))
        self.w_pattern_fmt = w.Dropdown(options=list(explore.PATTERN_FORMATS), value="xy",
                                        layout=w.Layout(width="70px"))
        self.w_overwrite = w.Checkbox(value=False, description="overwrite", **small)
        self.w_save_image = w.Button(description="save image", icon="save",
                                     layout=w.Layout(width="120px"))
        self.w_save_pattern = w.Button(description="save pattern", icon="save",
                                       layout=w.Layout(width="130px"))
        self.w_status = w.HTML(layout=w.Layout(width="auto"))
        self.w_dl_image = w.Button(description="image", icon="download", tooltip="download the image "
                                   "(PNG with axes and colour bar, or HDF5 values) to this browser",
                                   layout=w.Layout(width="90px"))
        self.w_dl_pattern = w.Button(description="pattern", icon="download", tooltip="download the "
                                     "pattern(s) at the pixel (.xy, HDF5 or PNG) to this browser",
                                     layout=w.Layout(width="100px"))
        self.w_dl_result = w.Button(description="result", icon="download", tooltip="download the "
                                    "whole volume shown as HDF5 (with coordinates and provenance)",
                                    layout=w.Layout(width="95px"))
        self.download = DownloadLink()
        for b, what in ((self.w_dl_image, "image"), (self.w_dl_pattern, "pattern"), (self.w_dl_result, "result")):
            b.add_class(f"xrdw-dl-{what}")
            b.on_click(lambda _, what=what: self._download_clicked(what))

        self.w_window.observe(self._on_window_slider, names="value")
        self.w_cmap.observe(self._on_cmap, names="value")
        self.w_log.observe(lambda _: self._render_image(), names="value")
        self.w_percentiles.observe(self._on_percentiles, names="value")
        self.w_log_pattern.observe(self._on_log_pattern, names="value")
        self.w_overlays.observe(self._on_overlays, names="value")
        self.w_export_dir.observe(self._on_export_dir, names="value")
        self.w_save_image.on_click(lambda _: self._export_clicked("image"))
        self.w_save_pattern.on_click(lambda _: self._export_clicked("pattern"))

        figures = w.HBox([fixed_box(self.image_fig, iw, ih), fixed_box(self.pattern_fig, pw, ph)],
                         layout=w.Layout(flex_flow="row nowrap", width="auto"))
        display_row = w.HBox([self.w_cmap, self.w_log, self.w_percentiles, self.w_log_pattern,
                              self.w_hover, self.w_hover_map],
                             layout=w.Layout(flex_flow="row wrap", align_items="center"))
        export_row = w.HBox([self.w_export_dir, self.w_save_image, self.w_image_fmt,
                             self.w_save_pattern, self.w_pattern_fmt, self.w_overwrite],
                            layout=w.Layout(flex_flow="row wrap", align_items="center"))
        download_row = w.HBox([w.HTML("<small>download:</small>"), self.w_dl_image, self.w_dl_pattern,
                               self.w_dl_result, self.download.widget],
                              layout=w.Layout(flex_flow="row wrap", align_items="center"))
        self.widget = w.VBox([
            figures,
            w.HBox([self.w_window, self.w_window_label], layout=w.Layout(align_items="center")),
            w.HBox([w.VBox([display_row, download_row, export_row]), self.w_overlays],
                   layout=w.Layout(flex_flow="row wrap")),
            self.w_status,
        ], layout=w.Layout(width=f"{iw + pw + 30}px", flex="0 0 auto"))
        self.widget.add_class("xrdwidgets-explorer")

    def _say(self, text: str):
        self.w_status.value = f"<span style='font-size:12px;color:#444'>{text}</span>"


    @guarded
    def _on_window_slider(self, change):
        if getattr(self, "_busy_slider", False) or self.model.da is None:
            return
        a, b = change["new"]
        self.window = (int(a), int(b) + 1)

    def _on_overlays(self, change):
        self.model.overlays = tuple(change["new"])
        self._render_pattern()

    @guarded
    def _on_cmap(self, change):
        with updating(self.image_fig):
            self.image_fig.data[0].colorscale = change["new"]

    @guarded
    def _on_percentiles(self, change):
        if self.shown_image is None:
            return
        self._limits = explore.percentile_limits(self.shown_image, change["new"])
        with updating(self.image_fig):
            self.image_fig.data[0].zmin, self.image_fig.data[0].zmax = self._limits

    @guarded
    def _on_log_pattern(self, change):
        with updating(self.pattern_fig):
            self.pattern_fig.layout.yaxis.type = "log" if change["new"] else "linear"

    def _on_export_dir(self, change):
        self.export_dir = str(change["new"])

    def _image_style(self) -> dict:
        limits = self._limits if self.shown_image is not None else None
        return {"cmap": self.w_cmap.value, "limits": limits, "log": self.w_log.value}

    def export_image(self, fmt: str = "png", *, folder=None, overwrite: bool = False) -> Path:
        """Write the current full-resolution image (PNG as shown: colormap, log, limits; or
        HDF5 with coords and units) into ``folder`` (default :attr:`export_dir`).

        The file name says what it holds, e.g. ``fbp_tth_5.1-5.3deg.png``. An existing file
        is never replaced unless ``overwrite`` (``FileExistsError``).
        """
        return self.model.export_image(fmt, folder if folder is not None else self.export_dir,
                                       overwrite=overwrite, **self._image_style())

    def export_pattern(self, fmt: str = "xy", *, folder=None, overwrite: bool = False) -> Path:
        """Write the patterns at the current pixel (main + visible overlays) as ``.xy``,
        HDF5 or PNG into ``folder`` (default :attr:`export_dir`), e.g. ``fbp_y12_x7.xy``.
        Never replaces a file unless ``overwrite``."""
        return self.model.export_pattern(fmt, folder if folder is not None else self.export_dir,
                                         overwrite=overwrite)

    def download_bytes(self, what: str) -> tuple[str, bytes]:
        """``(file name, bytes)`` of a download: ``"image"`` (format of the image dropdown: PNG
        figure with axes, colour bar and title, or HDF5), ``"pattern"`` (format of the pattern
        dropdown) or ``"result"`` (the whole volume shown, HDF5)."""
        fmt = {"image": self.w_image_fmt.value, "pattern": self.w_pattern_fmt.value}.get(what, "h5")
        return self.model.download_bytes(what, fmt, title=self.pattern_fig.layout.title.text,
                                         **self._image_style())

    @guarded
    def _download_clicked(self, what: str):
        self.download.clear()
        name, data = self.download_bytes(what)
        self.download.offer(name, data, MIME.get(name.rsplit(".", 1)[-1], "application/octet-stream"))
        self._say(f"ready: {name} — click the link to save it")

    @guarded
    def _export_clicked(self, what: str):
        self.model.require()
        try:
            if what == "image":
                path = self.export_image(self.w_image_fmt.value, overwrite=self.w_overwrite.value)
            else:
                path = self.export_pattern(self.w_pattern_fmt.value, overwrite=self.w_overwrite.value)
        except FileExistsError as exc:
            if self.w_overwrite.value:     # refused although asked: the message says why
                self._say(f"⚠ {exc}")
            else:
                shown = self.exports.shown(Path(exc.args[0].split(" exists")[0]))
                self._say(f"⚠ {shown} exists: not replaced (tick “overwrite” to replace)")
            return
        self._say(f"saved {self.exports.shown(path)}")
