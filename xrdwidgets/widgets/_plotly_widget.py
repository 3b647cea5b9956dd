"""A plotly ``FigureWidget`` that loads plotly's widget code once per page.

plotly (≥ 6) ships its figure widget to the browser as an ``anywidget`` module: the whole 5 MB
bundle (plotly.js included) is the module source of *every* figure, and anywidget evaluates it
once per figure and gives each model's ``initialize`` 2 seconds. On a page with many figures on
a busy machine (an App with its tabs, a Binder session) some figures miss the 2 s: they draw, but
every later update from the kernel is dropped — clicks and hovers do nothing (measured in Voila:
with 10–12 figures on a page 5–7 failed on this 2-core machine under load). Each extra figure also
costs the page a full evaluation of the bundle (0.5–0.8 s here).

:class:`FigureWidget` keeps plotly's Python API and its browser code, but its anywidget module is
a small stand-in that

* imports plotly's bundle once per page (cached on ``globalThis`` under a key naming plotly's
  version and the bundle's hash) — the bundle still travels with each figure's state;
* does not make ``initialize`` wait for it, so anywidget's time limit covers only the stand-in;
* queues the kernel→browser messages plotly's model listens to (``_widget_data``,
  ``_widget_layout``, ``_py2js_*``) while the bundle loads, then runs plotly's own ``initialize``
  and replays them in order (nothing is sent back to the kernel);
* lets views render once the bundle is there;
* sends discrete pointer events (click, box/lasso selection, deselect) to the kernel as custom
  messages instead of through plotly's one ``_js2py_pointsCallback`` trait. ipywidgets buffers
  state changes while an earlier one is unanswered and keeps only the latest value per trait, so
  the hover that follows a mouse-up used to overwrite the selection before it was sent: in Voila,
  8–9 of 10 box-selects on a pattern never reached the kernel. Hovers still go through the trait
  (only the latest one matters); the unhover plotly emits just before each of them is dropped,
  which halves the messages a moving mouse sends.

It relies on the names of plotly's internal traits listed in ``WATCHED``; re-check them when
upgrading plotly. Without plotly's widget bundle (plotly < 6) it is plain ``go.FigureWidget``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import plotly
import plotly.graph_objects as go
import traitlets as tl

__all__ = ["FigureWidget", "BUNDLE_KEY", "POINTS_MSG"]

_BUNDLE_PATH = Path(plotly.__file__).parent / "package_data" / "widgetbundle.js"

_BUNDLE = _BUNDLE_PATH.read_text(encoding="utf-8") if _BUNDLE_PATH.is_file() else ""
#: globalThis key of the page-wide import of plotly's bundle.
BUNDLE_KEY = (f"xrdwidgets.plotly-widget.{plotly.__version__}."
              f"{hashlib.sha1(_BUNDLE.encode()).hexdigest()[:12]}")
_KEY = BUNDLE_KEY
_SHIM = r"""
const KEY = Symbol.for(__KEY__);
// kernel -> browser traits that plotly's FigureModel listens to
const WATCHED = ["_widget_data", "_widget_layout", "_py2js_addTraces", "_py2js_deleteTraces",
  "_py2js_moveTraces", "_py2js_restyle", "_py2js_relayout", "_py2js_update", "_py2js_animate",
  "_py2js_removeLayoutProps", "_py2js_removeTraceProps"];

// pointer events that must each reach the kernel (a hover may be superseded by the next one)
const DISCRETE = ["plotly_click", "plotly_selected", "plotly_deselect"];
const MSG = __MSG__;

function bundle(code) {            // one evaluation of plotly's widget bundle per page
  if (!globalThis[KEY]) {
    const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
    globalThis[KEY] = import(url).finally(() => URL.revokeObjectURL(url));
  }
  return globalThis[KEY];
}

export default () => {
  let inner = null;
  let loaded = null;
  return {
    initialize(ctx) {
      const model = ctx.model;
      const queue = [];
      const queued = WATCHED.map((k) => {
        const cb = () => queue.push([k, model.get(k)]);
        model.on("change:" + k, cb);
        return [k, cb];
      });
      const handlers = {};
      const override = new Map();
      let pendingUnhover = null;
      const proxy = {
        get: (k) => (override.has(k) ? override.get(k) : model.get(k)),
        set: (k, v, ...rest) => {
          if (k === "_js2py_pointsCallback" && v) {
            if (DISCRETE.includes(v.event_type)) {
              model.send({ type: MSG, data: v });   // never merged with a later hover
              return;
            }
            if (v.event_type === "plotly_unhover") {
              // plotly emits an unhover before every hover on a new point; sent alone it costs
              // a kernel round trip that the hover behind it waits for. Send it only if no
              // hover follows in the same task.
              pendingUnhover = v;
              queueMicrotask(() => {
                if (pendingUnhover !== v) return;
                pendingUnhover = null;
                model.set(k, v, ...rest);
                model.save_changes();
              });
              return;
            }
            pendingUnhover = null;
          }
          return model.set(k, v, ...rest);
        },
        save_changes: () => model.save_changes(),
        send: (...a) => model.send(...a),
        on: (name, cb) => { (handlers[name] = handlers[name] || []).push(cb); model.on(name, cb); },
        off: (name, cb) => model.off(name, cb),
        widget_manager: model.widget_manager,
      };
      loaded = bundle(model.get("_plotly_bundle")).then(async (mod) => {
        inner = await mod.default();
        if (inner.initialize) await inner.initialize({ ...ctx, model: proxy });
        for (const [k, cb] of queued) model.off("change:" + k, cb);
        for (const [k, v] of queue) {              // replay, in order, what came meanwhile
          override.set(k, v);
          try { for (const cb of handlers["change:" + k] || []) cb(); } finally { override.delete(k); }
        }
      });
      loaded.catch((e) => console.error("[xrdwidgets] plotly widget bundle failed to load", e));
      // not awaited: anywidget gives initialize 2 s, the bundle may need longer
    },
    async render(ctx) {
      await loaded;
      return inner.render(ctx);
    },
  };
};
""".replace("__KEY__", json.dumps(_KEY)).replace("__MSG__", json.dumps("xrdwidgets.points"))
#: ``type`` of the custom message that carries a discrete pointer event from the browser.
POINTS_MSG = "xrdwidgets.points"


def _on_points_msg(widget, content, buffers=None):
    """Dispatch a click/selection sent as a custom message exactly as plotly dispatches the trait."""
    if isinstance(content, dict) and content.get("type") == POINTS_MSG and isinstance(content.get("data"), dict):
        widget._handler_js2py_pointsCallback({"new": content["data"]})


if _BUNDLE:
    class FigureWidget(go.FigureWidget):
        """:class:`plotly.graph_objects.FigureWidget` whose browser code loads once per page."""

        _esm = _SHIM
        _plotly_bundle = tl.Unicode(_BUNDLE).tag(sync=True)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.on_msg(_on_points_msg)

else:  # pragma: no cover - plotly < 6 (not an anywidget)
    FigureWidget = go.FigureWidget
