"""Shared helpers of the linked image–spectrum widgets: figure styling, payloads, byte meter.

The maths (windows, decimation, colour limits, export) lives in :mod:`xrdwidgets.explore`; this
module only turns its results into plotly figures and measures what is sent to the browser.

Figure sizing
-------------
plotly ``FigureWidget`` views that are created while hidden (a non-selected ``Tab``, a closed
``Accordion``) or inside a flex ``HBox`` measure a zero or wrong container size when they
autosize. Every figure here therefore has an explicit ``width``/``height`` in its plotly layout
and ``autosize=False``, and is wrapped in a :class:`ipywidgets.Box` of the same fixed pixel
size (``flex: 0 0 auto``) so that the container cannot squeeze or stretch it.

Heatmap payload
---------------
plotly serialises a 2-D numpy ``z`` as a JSON list of lists (~19 characters per float32). We
send ``z`` as a list of float32 *rows* instead: each row travels as a binary buffer (4 bytes
per pixel + ~90 bytes of JSON per row: 1.09 MB for 512×512) and arrives in the browser as a
``Float32Array``, which plotly.js accepts as a heatmap row. The update bypasses plotly.py's
validators (``plotly_update``), which would turn the rows back into JSON lists.

A tempting alternative breaks the widget and is avoided on purpose: a plotly.js typed-array
spec (``{"dtype": "f4", "bdata": ..., "shape": ...}``) renders, but the widget's JS then finds
its copy of ``z`` different from plotly's decoded one and sends the whole image back to the
kernel after every update — each row serialised with the *whole* image buffer (measured: 67 MB
per update for 256×256, over 512 MB for 512×512, which crashes the browser connection).
"""
from __future__ import annotations

import base64
import json
import logging
from contextlib import contextmanager
from copy import deepcopy

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go

from ..base.errors import InputError
from ._plotly_widget import FigureWidget

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SIZE",
    "FigureWidget",
    "OVERLAY_COLOURS",
    "PATTERN_SIZE",
    "DownloadBar",
    "DownloadLink",
    "MIME",
    "MessageMeter",
    "TOP_MARGIN",
    "decode_z",
    "fixed_box",
    "image_figure",
    "message_html",
    "mirror_state",
    "pattern_figure",
    "updating",
    "z_rows",
]

#: Default (width, height) in pixels of the image and pattern figures.
IMAGE_SIZE = (470, 430)
PATTERN_SIZE = (600, 430)
#: Line colours: main pattern first, then overlays.
OVERLAY_COLOURS = ("#1f3b73", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
_FONT = {"family": "Helvetica, Arial, sans-serif", "size": 12}
#: Top margin (px): plotly's toolbar (~28 px) above, the title under it, just over the plot area.
TOP_MARGIN = 60
_TITLE = {"text": "", "x": 0.02, "xanchor": "left", "yref": "paper", "y": 1, "yanchor": "bottom",
          "pad": {"b": 6}, "font": {"size": 13}}


def z_rows(image: np.ndarray) -> list:
    """A 2-D image as a list of float32 row arrays (each sent as one binary buffer)."""
    a = np.ascontiguousarray(image, dtype=np.float32)
    if a.ndim != 2:
        raise InputError(f"z_rows: expected a 2-D image, found shape {a.shape}")
    return list(a)


def decode_z(z) -> np.ndarray:
    """The heatmap's ``z`` (rows, nested lists or a typed-array spec) as a 2-D array."""
    if isinstance(z, dict) and "bdata" in z:
        shape = tuple(int(s) for s in str(z["shape"]).split(","))
        dtype = {"f4": np.float32, "f8": np.float64}[z["dtype"]]
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=dtype).reshape(shape)
    return np.asarray([np.asarray(r) for r in z])


def _axis(title: str, **kw) -> dict:
    return dict(title={"text": title, "standoff": 6}, showline=True, mirror=True, linecolor="#444",
                ticks="outside", zeroline=False, showgrid=False, **kw)


def image_figure(*, width: int, height: int, cmap: str, equal_aspect: bool) -> go.FigureWidget:
    """Empty image figure: one heatmap trace; ``layout.shapes[0]`` marks the selected pixel.

    Rows run downwards (row 0 at the top, as in ``imshow``); with ``equal_aspect`` one unit
    on x has the same length as one unit on y. The marker is a shape of fixed pixel size
    anchored at a data point; move it with :func:`replace_shape` (``xanchor``/``yanchor``).
    """
    heat = go.Heatmap(z=[[0.0]], colorscale=cmap, zsmooth=False,
                      colorbar={"thickness": 12, "len": 0.9, "title": {"side": "right"}},
                      hoverongaps=False, name="image")
    marker = {"type": "circle", "xref": "x", "yref": "y", "xsizemode": "pixel", "ysizemode": "pixel",
                  "xanchor": 0, "yanchor": 0, "x0": -7, "x1": 7, "y0": -7, "y1": 7, "visible": False,
                  "line": {"color": "#ffffff", "width": 2}, "layer": "above"}
    yaxis = _axis("", autorange="reversed", constrain="domain")
    xaxis = _axis("", constrain="domain")
    if equal_aspect:
        yaxis.update(scaleanchor="x", scaleratio=1)
    layout = go.Layout(width=width, height=height, autosize=False, font=_FONT,
                       margin={"l": 64, "r": 10, "t": TOP_MARGIN, "b": 52}, xaxis=xaxis, yaxis=yaxis,
                       title=_TITLE, hovermode="closest",
                       plot_bgcolor="white", dragmode="zoom", uirevision="keep",
                       shapes=[marker])
    return FigureWidget(data=[heat], layout=layout)


def pattern_figure(*, width: int, height: int) -> go.FigureWidget:
    """Empty pattern figure (traces are added by the view); box-select picks a window.

    ``layout.shapes[0]`` shades the channel window (move it with :func:`replace_shape`).
    """
    window = {"type": "rect", "xref": "x", "yref": "paper", "x0": 0, "x1": 0, "y0": 0, "y1": 1, "visible": False,
                  "fillcolor": "rgba(255,165,0,0.22)", "line": {"width": 0}, "layer": "below"}
    layout = go.Layout(width=width, height=height, autosize=False, font=_FONT,
                       margin={"l": 70, "r": 10, "t": TOP_MARGIN, "b": 52}, xaxis=_axis(""), yaxis=_axis(""),
                       title=_TITLE, hovermode="x",
                       plot_bgcolor="white", dragmode="select", selectdirection="h",
                       legend={"x": 1, "xanchor": "right", "y": 1, "bgcolor": "rgba(255,255,255,0.6)"},
                       uirevision="keep", shapes=[window])
    return FigureWidget(layout=layout)


def replace_shape(fig: go.FigureWidget, index: int, **changes) -> None:
    """Set attributes of ``fig.layout.shapes[index]`` by sending the whole ``shapes`` array.

    plotly.js gives a shape's position attributes the edit type ``calc``: a relayout of
    ``shapes[0].xanchor`` recomputes and redraws every trace — 75–85 ms for a 512×512 heatmap in
    headless Chromium, on the main thread, for a marker that moves with every hover. A relayout
    that replaces the array redraws only the shapes (0.1–2 ms, same measurement). Call it inside
    :func:`updating` to merge it with the other changes of the figure.
    """
    shapes = [sh.to_plotly_json() for sh in fig.layout.shapes]
    shapes[index] = {**shapes[index], **changes}
    fig.layout.shapes = shapes


def mirror_state(fig: go.FigureWidget) -> None:
    """Make the figure's *initial-state* traits equal to its current content, silently.

    plotly's ``FigureWidget`` syncs ``_widget_data``/``_widget_layout`` only once, at
    construction; later changes travel as one-off restyle/relayout messages. A front end that
    connects later (Voila renders after the notebook ran, a reloaded JupyterLab page) gets
    the stale construction state: empty traces. Writing the current content into those traits
    without a change notification costs no message but gives late front ends the right
    figure. Call it after every update.
    """
    fig._trait_values["_widget_data"] = deepcopy(fig._data)
    fig._trait_values["_widget_layout"] = deepcopy(fig._layout_obj._props)


@contextmanager
def updating(fig: go.FigureWidget):
    """``fig.batch_update()`` (one message for all changes) followed by :func:`mirror_state`."""
    with fig.batch_update():
        yield fig
    mirror_state(fig)


def fixed_box(child, width: int, height: int) -> w.Box:
    """``child`` in a Box of fixed pixel size that flex containers neither shrink nor grow."""
    return w.Box([child], layout=w.Layout(width=f"{width}px", height=f"{height}px",
                                          min_width=f"{width}px", flex="0 0 auto",
                                          overflow="hidden"))


def message_html(text: str, kind: str = "info") -> str:
    """A panel's one-line status message (``kind``: info, ok or error; CSS class ``xrdw-<kind>``,
    errors announced with ``role="alert"``), text escaped."""
    import html

    color = {"error": "#b00020", "ok": "#1b5e20", "info": "inherit"}[kind]
    role = ' role="alert"' if kind == "error" else ""
    return f'<span class="xrdw-msg xrdw-{kind}"{role} style="color:{color}">{html.escape(text)}</span>'


class DownloadLink:
    """A link that downloads bytes prepared in the kernel to the visitor's browser.

    :meth:`offer` puts the file into an HTML widget as a ``data:`` URL (base64) behind an
    ``<a download=NAME>`` link; clicking it saves the file in the browser (no server path, no file
    on the server). Payloads over ``max_mb`` are refused with a message (the page message would be
    too large); :func:`xrdwidgets.explore.check_download_size` says the same before the work.
    """

    def __init__(self, *, max_mb: float | None = None):
        from .. import explore

        self.max_mb = float(max_mb if max_mb is not None else explore.MAX_DOWNLOAD_MB)
        self.widget = w.HTML("", layout=w.Layout(width="auto"))
        self.widget.add_class("xrdw-download")
        self.name = ""
        self.size = 0

    def offer(self, name: str, data: bytes, mime: str = "application/octet-stream") -> None:
        """Show a download link for ``data`` saved as ``name``."""
        from .. import explore

        explore.check_download_size(len(data), name, self.max_mb)
        import html as _html

        safe = _html.escape(str(name), quote=True)
        b64 = base64.b64encode(bytes(data)).decode("ascii")
        size = f"{len(data) / 1024:.0f} kB" if len(data) < 2**20 else f"{len(data) / 2**20:.1f} MB"
        self.name, self.size = str(name), len(data)
        self.widget.value = (f'<a class="xrdw-download-link" download="{safe}" href="data:{mime};base64,{b64}" '
                             f'style="font-weight:600">⬇ {safe}</a> <small>({size}; click to save)</small>')

    def clear(self) -> None:
        self.widget.value = ""
        self.name, self.size = "", 0


class DownloadBar:
    """Download buttons and one :class:`DownloadLink`: ``items`` maps a button label to a function
    returning ``(file name, bytes)`` (computed on click; errors are shown, not raised)."""

    def __init__(self, items: dict, *, css: str = "xrdw-download-bar"):
        self.items = dict(items)
        self.link = DownloadLink()
        self.message = w.HTML(layout=w.Layout(width="auto"))
        self.buttons = {}
        for label in self.items:
            b = w.Button(description=label, icon="download", layout=w.Layout(width="auto"),
                         tooltip=f"download the {label} to this browser")
            b.add_class("xrdw-dl-" + "".join(ch if ch.isalnum() else "-" for ch in label.lower()))
            b.on_click(lambda _, label=label: self.click(label))
            self.buttons[label] = b
        self.widget = w.VBox([w.HBox([w.HTML("<small>download:</small>"), *self.buttons.values()],
                                     layout=w.Layout(flex_flow="row wrap", align_items="center")),
                              self.link.widget, self.message])
        self.widget.add_class(css)

    def click(self, label: str) -> bool:
        """Prepare the download of ``label``; True when the link is shown."""
        from ..data import DataError

        self.link.clear()
        self.message.value = ""
        try:
            name, data = self.items[label]()
            self.link.offer(name, data, MIME.get(str(name).rsplit(".", 1)[-1], "application/octet-stream"))
        except (DataError, ValueError, OSError, KeyError, TypeError) as exc:
            log.info("download %s: %s", label, exc)
            import html as _html

            self.message.value = f"<small style='color:#b00020'>⚠ {_html.escape(str(exc))}</small>"
            return False
        return True


#: MIME types of the download formats.
MIME = {"png": "image/png", "h5": "application/x-hdf5", "xy": "text/plain", "csv": "text/csv"}


class MessageMeter:
    """Counts the bytes that widgets send to the browser (JSON text + binary buffers).

    Wraps each widget's ``_send`` (the single exit of ipywidgets' ``send_state``/``send``), so
    it sees exactly what goes on the wire: the JSON of the message and its binary buffers (the
    float32 arrays plotly extracts). Works headless (the messages then go to a dummy comm).

    Examples
    --------
    >>> meter = MessageMeter(explorer.image_fig, explorer.pattern_fig)   # doctest: +SKIP
    >>> with meter.measure() as m:                                         # doctest: +SKIP
    ...     explorer.select_pixel(3, 4)
    >>> m.bytes, m.messages                                                # doctest: +SKIP
    """

    class _Count:
        def __init__(self):
            self.bytes = 0
            self.json_bytes = 0
            self.buffer_bytes = 0
            self.messages = 0

    def __init__(self, *widgets):
        self._widgets = widgets
        self._current: MessageMeter._Count | None = None
        self._orig = []

    def _wrap(self, widget):
        had_own = "_send" in widget.__dict__
        orig = widget._send

        def _send(msg, buffers=None):
            c = self._current
            if c is not None:
                nj = len(json.dumps(msg, separators=(",", ":"), default=str))
                nb = sum(memoryview(b).nbytes for b in (buffers or ()))
                c.json_bytes += nj
                c.buffer_bytes += nb
                c.bytes += nj + nb
                c.messages += 1
            return orig(msg, buffers)

        widget._send = _send
        return orig if had_own else None

    @contextmanager
    def measure(self):
        """Context in which every sent message is counted; yields the running count."""
        count = MessageMeter._Count()
        origs = [self._wrap(wd) for wd in self._widgets]
        self._current = count
        try:
            yield count
        finally:
            self._current = None
            for wd, orig in zip(self._widgets, origs):
                if orig is None:
                    del wd._send            # back to the class method
                else:
                    wd._send = orig
