"""The App: one dashboard with a tab per step of the XRD-CT workflow.

Integrate (raw detector frames → stack) → Data (load / upload / simulate) → Live (follow a scan
being written, images while it runs) → Corrections → Reconstruct → Explore → ROI image →
ROI pattern → Peak fitting. Every tab is a thin panel over one shared :class:`~xrdwidgets.widgets.state.AppState`; the App only wires them together.
"""
from __future__ import annotations

import logging
import os

import ipywidgets as w

from .state import AppState
from ..base.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["App"]

TABS = ("Integrate", "Data", "Live", "Corrections", "Reconstruct", "Explore", "ROI image", "ROI pattern", "Peak fitting")


class App:
    """All-in-one XRD-CT dashboard.

    Parameters
    ----------
    state : AppState, optional
        Shared model (a new one by default).
    data_dir : path-like, optional
        Folder visitors may load files from (default: ``$XRDWIDGETS_DATA_DIR``, else none).
    workdir : path-like, optional
        Folder for job checkpoints/results (default: none, results stay in memory).
    """

    def __init__(self, state: AppState | None = None, *, data_dir=None, workdir=None,
                 initial_tab: str = "Data"):
        self.state = state or AppState()
        if data_dir is None:
            data_dir = os.environ.get("XRDWIDGETS_DATA_DIR") or None
        self._data_dir = data_dir
        self._workdir = workdir
        # panels are built (and their modules imported) when their tab is first opened: every
        # plotly figure carries plotly.js (~5 MB) to the browser, and the reconstruction modules
        # import torch, so the first page only pays for the tab it shows
        self.panels: dict = {}
        self._boxes = [w.VBox() for _ in TABS]
        self.status = w.HTML()
        self.tabs = w.Tab(children=self._boxes)
        for i, t in enumerate(TABS):
            self.tabs.set_title(i, t)
        self.tabs.observe(self._on_tab, "selected_index")
        self.state.observe(self._on_status, "status")
        self._on_status()
        self.select(initial_tab)
        title = w.HTML("<h3 style='margin:4px 0'>xrdwidgets — XRD-CT reconstruction and exploration</h3>")
        self.widget = w.VBox([title, self.tabs, self.status])
        self.widget.add_class("xrdwidgets-app")

    def _build(self, name: str):
        if name in self.panels:
            return self.panels[name]
        if name == "Live":
            from .live_panel import LivePanel

            panel = LivePanel(self.state, data_dir=self._data_dir)
            panel.on_explore.append(lambda: self.select("Explore"))   # only when the visitor asks
        elif name == "Integrate":
            from .integrate_panel import IntegratePanel

            panel = IntegratePanel(self.state, data_dir=self._data_dir, workdir=self._workdir)
            panel.on_done.append(lambda _stack: self.select("Data"))   # the stack opens in Data
        elif name == "Data":
            from .data_panel import DataPanel

            panel = DataPanel(self.state, data_dir=self._data_dir)
        elif name == "Corrections":
            from .corrections_panel import CorrectionsPanel

            panel = CorrectionsPanel(self.state)
        elif name == "Reconstruct":
            from .recon_panel import ReconPanel

            panel = ReconPanel(self.state, workdir=self._workdir)
        elif name == "Explore":
            from .explorer import Explorer

            panel = Explorer(None, state=self.state, data_dir=self._data_dir)
        else:
            from . import analysis_panel as _ap

            if name == "ROI image":
                panel = _ap.RoiImagePanel(self.state)
            elif name == "ROI pattern":
                panel = _ap.RoiPatternPanel(self.state)
            else:
                panel = _ap.PeakFitPanel(self.state)
        self.panels[name] = panel
        self._boxes[TABS.index(name)].children = (panel.widget,)
        return panel

    def panel(self, name: str):
        """The panel of tab ``name`` (built now if it was not yet)."""
        if name not in TABS:
            raise InputError(f"App.panel: tab must be one of {TABS}, found {name!r}")
        return self._build(name)

    def select(self, name: str):
        """Show tab ``name`` (building its panel)."""
        self.tabs.selected_index = TABS.index(name)
        self._build(name)

    def _on_tab(self, change):
        if change["new"] is not None:
            self._build(TABS[change["new"]])

    @classmethod
    def demo(cls, size: str = "small", *, reconstruct: bool = True, **kwargs) -> "App":
        """An App on the embedded demo data (with its FBP already in the Explore tab).

        Served by ``xrdwidgets app``, the demo and its FBP come from the server's demo cache
        (:func:`xrdwidgets.sim.demo.demo_with_fbp`), computed once when the server starts.
        """
        from ..sim.demo import demo_with_fbp

        ds, vol = demo_with_fbp(size, reconstruct=reconstruct)
        state = AppState()
        state.set_data(ds["sinogram"], truth=ds, name=f"demo ({size})")
        if vol is not None:
            state.add_result("FBP", vol)
        kwargs.setdefault("initial_tab", "Explore" if reconstruct else "Data")
        return cls(state, **kwargs)

    @classmethod
    def served(cls, size: str = "small", **kwargs) -> "App":
        """The App that ``xrdwidgets app`` serves: the file named by ``$XRDWIDGETS_OPEN`` (a path
        inside the data folder, ``xrdwidgets app --open``) opened in the Explore tab; without it,
        or when it cannot be read (said in the Data tab), the embedded demo (:meth:`demo`).
        """
        rel = os.environ.get("XRDWIDGETS_OPEN", "").strip()
        if not rel:
            return cls.demo(size, **kwargs)
        app = cls(AppState(), **kwargs)
        try:
            app.data.open_now(rel)
        except Exception as exc:  # noqa: BLE001 - shown in the Data tab, logged
            log.warning("app: opening %r failed: %s", rel, exc)
            app.data._show(f"could not open {rel}: {app.data._user_text(exc)}", "error")
            return app
        app.select("Explore" if app.state.results else "Data")
        return app

    @property
    def data(self):
        return self.panel("Data")

    @property
    def corrections(self):
        return self.panel("Corrections")

    @property
    def recon(self):
        return self.panel("Reconstruct")

    @property
    def explorer(self):
        return self.panel("Explore")

    def _on_status(self, *_):
        self.status.value = f"<small>{self.state.status}</small>"

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget)
