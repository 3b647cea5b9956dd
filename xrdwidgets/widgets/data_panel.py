"""The data panel: load a sinogram stack from the data folder, an upload, or a simulation.

Three tabs feed one :class:`~xrdwidgets.widgets.state.AppState`:

* **Folder** — the HDF5 / ``.npy`` / zarr files under the configured data folder (paths are
  confined to it by :mod:`xrdwidgets.base.safety`); an SD2I file lists its sinograms to choose from,
  a ``.npy`` file asks for its axis order.
* **Upload** — a :class:`~xrdwidgets.widgets.upload.SizeLimitedUpload` button (a file over the
  limit is refused in the browser, before it is sent); the bytes are checked
  (extension, real format signature) and written to a private temporary file, which the ordinary
  readers of :mod:`xrdwidgets.io` load (the tab's code: :mod:`xrdwidgets.widgets.data_upload`).
* **Simulate** — a Voronoi-grain phantom of the chosen phases scanned with Poisson noise, with
  thick-sample parallax on request (:func:`xrdwidgets.sim.grain_scan.iterate_grain_scan`).

Below the tabs, an overview of what was loaded: the sinogram of the strongest channel and the
mean pattern (:func:`xrdwidgets.explore.stack_overview`, computed in a job whenever ``state.raw`` changes).

Every load or simulation runs as a background job (:func:`xrdwidgets.jobs.run`); callbacks only
start jobs, and the job thread only sets traits (the state, the status line, the progress bar).
Bad files give a one-line error in the panel (never a traceback), and the panel stays usable.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import ipywidgets as w
import numpy as np

from .. import data as _data
from .. import explore as _v
from .. import io, jobs
from ..base import safety
from ..base.progress import Progress
from . import plotting as _fig
from .job_view import JobView
from .state import AppState
from .data_upload import NPY_AXIS_ORDERS, UploadTab

log = logging.getLogger(__name__)

__all__ = ["DataPanel", "iterate_simulation", "NPY_AXIS_ORDERS"]

#: Size (px) of the overview figure and its titles before anything is loaded.
OVERVIEW_SIZE = (900, 320)
OVERVIEW_EMPTY = ("nothing loaded: choose a file, upload or simulate", "mean pattern: load data first")


#: Defaults of the simulation tab.
SIM_DEFAULT_PHASES = ("Ni", "CeO2", "TiO2")

#: Errors whose message is meant for the user (bad files, bad choices); any other exception is a
#: bug: the visitor sees its type and the traceback goes to the server log.
_EXPECTED_ERRORS = (OSError, ValueError)


def iterate_simulation(phases, **kwargs):
    """The Simulate tab's job: :func:`xrdwidgets.sim.grain_scan.iterate_grain_scan` (a generator
    of progress events returning the Dataset), imported when first used."""
    from ..sim.grain_scan import iterate_grain_scan

    return iterate_grain_scan(phases, **kwargs)


def _probe(path: Path):
    """``("sd2i", [names])``, ``("npy", None)`` or ``(None, None)``: :func:`xrdwidgets.io.probe_stack`."""
    return io.probe_stack(path)


def _read_stack(path: Path, *, sinogram: str | None, npy_dims):
    """``(stack, truth, stored)`` from a file: :func:`xrdwidgets.io.load_stack`."""
    return io.load_stack(path, variable=sinogram, npy_dims=npy_dims)


# ============================================================================ the panel
class DataPanel(UploadTab):
    """Load data into an :class:`AppState`: from the data folder, an upload, or a simulation.

    Parameters
    ----------
    state : AppState
        Receives the data (:meth:`AppState.set_data`).
    data_dir : str or path-like, optional
        The data folder visitors may read (default: the ``XRDWIDGETS_DATA_DIR`` environment
        variable; none: the Folder tab says how to configure one).
    max_upload_mb : float, optional
        Largest accepted upload (MB); default the ``XRDWIDGETS_MAX_UPLOAD_MB`` environment
        variable, else 200. A served app must allow larger websocket messages (``xrdwidgets
        app --max-upload-mb`` sets both; see :func:`xrdwidgets.serve.appserver.websocket_limit`).

    Attributes
    ----------
    widget : ipywidgets.Widget
        The panel.
    status : ipywidgets.HTML
        One-line message: what happened, or the error (CSS class ``xrdw-error`` on errors).
    progress : ipywidgets.FloatProgress
        0–1 while a job runs.
    job : xrdwidgets.jobs.Job or None
        The latest load / simulation job.
    """

    def __init__(self, state: AppState, *, data_dir=None, max_upload_mb: float | None = None):
        self.state = state
        self.max_upload_bytes = int(safety.max_upload_mb(max_upload_mb) * 2**20)
        self.job: jobs.Job | None = None
        self._hide: dict = {}
        self._upload_path: Path | None = None
        self._upload_name = ""
        try:
            self.root = safety.data_root(data_dir)
        except OSError as exc:
            log.warning("data panel: %s", exc)
            self.root = None
            self._root_error = "the configured data folder does not exist"  # no server path shown
        else:
            self._root_error = ""

        self.view = JobView(status_line=False, errors=False, hide_progress=True, progress_width="12em")
        self.status, self.progress = self.view.status, self.view.progress
        self.status.layout.min_height = "1.6em"
        self.status.add_class("xrdw-status")
        self.tabs = w.Tab(children=[self._build_folder(), self._build_upload(), self._build_simulate()],
                          titles=("Folder", "Upload", "Simulate"))
        self.tabs.observe(self._on_tab, "selected_index")
        self.overview_fig = self._overview_figure()
        self.overview_job: jobs.Job | None = None
        self.widget = w.VBox([self.tabs, w.HBox([self.progress, self.status]),
                              _fig.fixed_box(self.overview_fig, *OVERVIEW_SIZE)])
        self.widget.add_class("xrdw-data-panel")
        state.observe(self._on_raw, "raw")
        self._on_raw()
        self.refresh()

    # ------------------------------------------------------------------ overview
    @staticmethod
    def _overview_figure():
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        base = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.24,
                             subplot_titles=OVERVIEW_EMPTY)
        base.add_trace(go.Heatmap(z=[[None]], colorscale="Viridis", showscale=False,
                                  colorbar={"thickness": 10, "x": 0.36, "title": {"side": "right"}}), row=1, col=1)
        base.add_trace(go.Scatter(x=[], y=[], mode="lines", line={"color": "#1f3b73"}, name="mean"), row=1, col=2)
        base.add_trace(go.Scatter(x=[], y=[], mode="markers", marker={"color": "#d62728", "size": 9},
                                  name="strongest channel"), row=1, col=2)
        w_, h_ = OVERVIEW_SIZE
        base.update_layout(width=w_, height=h_, autosize=False, showlegend=False, plot_bgcolor="white",
                           margin=dict(l=60, r=10, t=50, b=46), font={"size": 12})
        base.update_annotations(font_size=13)
        base.update_yaxes(autorange="reversed", row=1, col=1)
        base.update_xaxes(visible=False)
        base.update_yaxes(visible=False)
        return _fig.FigureWidget(base)

    def _on_raw(self, *_):
        """A new stack was loaded: draw its overview in a job (never in this callback)."""
        stack = self.state.raw
        if stack is None:
            return
        self.overview_job = jobs.run(functools.partial(_v.iterate_stack_overview, stack), name="data overview", queue=False)
        self.overview_job.subscribe(self._on_overview)

    def _on_overview(self, ev):
        if not ev.state.finished or ev.job is not self.overview_job:
            return
        if ev.state is not jobs.State.DONE:
            log.warning("data panel: overview failed: %s", ev.job.message)
            return
        sino, pattern, k = ev.job.result
        from ..explore import axis_label, channel_text

        spec = pattern.dims[0]
        fig = self.overview_fig
        heat, line, mark = fig.data
        x = np.asarray(pattern[spec].values, float)
        with _fig.updating(fig):
            heat.z = np.asarray(sino.values, np.float32)
            heat.x = np.asarray(sino[_data.TRANSLATION].values, float)
            heat.y = np.asarray(sino[_data.ANGLE].values, float)
            heat.showscale = True
            heat.colorbar.title.text = axis_label(sino) or "intensity"
            line.x, line.y = x, np.asarray(pattern.values, float)
            mark.x, mark.y = [x[k]], [float(pattern.values[k])]
            fig.update_xaxes(visible=True)
            fig.update_yaxes(visible=True)
            fig.layout.xaxis.title.text = axis_label(sino[_data.TRANSLATION]) or "translation"
            fig.layout.yaxis.title.text = axis_label(sino[_data.ANGLE]) or "angle"
            fig.layout.xaxis2.title.text = axis_label(pattern[spec])
            fig.layout.yaxis2.title.text = axis_label(pattern)
            fig.layout.annotations[0].text = "sinogram at " + channel_text(pattern[spec], k, k + 1)
            fig.layout.annotations[1].text = (f"mean pattern of {self.state.raw.sizes[_data.TRANSLATION]} × "
                                              f"{self.state.raw.sizes[_data.ANGLE]} points (dot: strongest)")

    # ------------------------------------------------------------------ layout
    def _build_folder(self):
        self.files = w.Select(options=[], rows=8, layout=w.Layout(width="32em"),
                              description="File", style={"description_width": "5em"})
        self.sinogram = w.Dropdown(options=[], description="Sinogram", style={"description_width": "5em"},
                                   layout=w.Layout(display="none", width="32em"))
        self.npy_order = w.Dropdown(options=[(" × ".join(o), o) for o in NPY_AXIS_ORDERS],
                                    description="Axes", style={"description_width": "5em"},
                                    layout=w.Layout(display="none", width="32em"))
        self.load_button = w.Button(description="Load", icon="folder-open", button_style="primary",
                                    disabled=True)
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.folder_note = w.HTML()
        self.files.add_class("xrdw-files")
        self.load_button.add_class("xrdw-load")
        self.files.observe(self._on_file, "value")
        self.load_button.on_click(lambda _: self.load_selected())
        self.refresh_button.on_click(lambda _: self.refresh())
        return w.VBox([self.folder_note, self.files, self.sinogram, self.npy_order,
                       w.HBox([self.load_button, self.refresh_button])])

    def _build_simulate(self):
        from ..sim.grain_scan import GRAIN_SCAN_ENERGY_KEV, GRAIN_SCAN_STEP_MM, GRAIN_SCAN_TTH_RANGE
        from ..sim.structures import list_phases

        st = {"description_width": "8em"}
        self.sim_phases = w.SelectMultiple(options=list_phases(), value=SIM_DEFAULT_PHASES, rows=12,
                                           description="Phases", style=st)
        self.sim_size = w.IntSlider(value=48, min=16, max=128, step=8, description="Size (px)", style=st)
        self.sim_channels = w.IntSlider(value=200, min=50, max=500, step=50, description="2θ channels",
                                        style=st)
        self.sim_dose = w.FloatLogSlider(value=1e4, base=10, min=2, max=6, step=0.25,
                                         description="Dose (counts)", style=st, readout_format=".3g")
        self.sim_noise_free = w.Checkbox(value=False, description="noise-free", indent=False)
        self.sim_parallax = w.Checkbox(value=False, description="parallax", indent=False)
        self.sim_distance = w.FloatSlider(value=100.0, min=20.0, max=1000.0, step=10.0,
                                          description="Detector (mm)", style=st, disabled=True)
        self.sim_seed = w.BoundedIntText(value=0, min=0, max=2**31 - 1, description="Seed", style=st,
                                         layout=w.Layout(width="16em"))
        self.simulate_button = w.Button(description="Simulate", icon="flask", button_style="primary")
        self.simulate_button.add_class("xrdw-simulate")
        self.sim_noise_free.observe(lambda ch: setattr(self.sim_dose, "disabled", ch["new"]), "value")
        self.sim_parallax.observe(lambda ch: setattr(self.sim_distance, "disabled", not ch["new"]), "value")
        self.simulate_button.on_click(lambda _: self.simulate())
        note = w.HTML(f"<small>Voronoi grains of the chosen phases at {GRAIN_SCAN_ENERGY_KEV:g} keV, "
                      f"2θ {GRAIN_SCAN_TTH_RANGE[0]}–{GRAIN_SCAN_TTH_RANGE[1]}°, {GRAIN_SCAN_STEP_MM * 1000:g} µm steps, "
                      "0–180°.</small>")
        return w.VBox([note, self.sim_phases, self.sim_size, self.sim_channels,
                       w.HBox([self.sim_dose, self.sim_noise_free]),
                       w.HBox([self.sim_distance, self.sim_parallax]), self.sim_seed, self.simulate_button])

    # ------------------------------------------------------------------ messages
    def _show(self, text: str, kind: str = "info"):
        from .plotting import message_html

        self.status.value = message_html(text, kind)

    def _user_text(self, exc: BaseException) -> str:
        """The message of ``exc`` with server paths replaced by what the visitor knows."""
        text = str(exc) if isinstance(exc, _EXPECTED_ERRORS) else jobs.describe_error(exc)
        if not isinstance(exc, _EXPECTED_ERRORS):
            text = f"unexpected error ({text}); details are in the server log"
        for secret, shown in sorted(self._hide.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(secret, shown)
        return text.splitlines()[0] if text else type(exc).__name__

    # ------------------------------------------------------------------ jobs
    @property
    def busy(self) -> bool:
        """True while a load or simulation job runs."""
        return self.view.busy

    def _start(self, label: str, source, hide: dict | None = None):
        if self.busy:
            self._show("busy: wait for the current load to finish", "error")
            return None
        self._hide = {k: v for k, v in (hide or {}).items() if k}
        self._set_buttons(disabled=True)
        self._show(f"{label} …")
        self.job = jobs.run(source, name=f"data: {label}")
        return self.view.watch(self.job, on_done=self._on_done)

    def _set_buttons(self, *, disabled: bool):
        self.simulate_button.disabled = disabled
        self.load_button.disabled = disabled or self.files.value is None
        self.upload_load_button.disabled = disabled or self._upload_path is None
        self.upload.disabled = disabled

    def _on_done(self, ev):
        job = ev.job
        if ev.state == jobs.State.DONE:
            self._show(str(job.result or job.message), "ok")
        elif ev.state == jobs.State.FAILED:
            if not isinstance(job.error, _EXPECTED_ERRORS):
                log.error("data panel: %s failed", job.name, exc_info=job.error)
            self._show(self._user_text(job.error), "error")
        else:
            self._show(job.message, "info")
        self._set_buttons(disabled=False)

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until the current job has finished and the panel shows its outcome (tests)."""
        return self.view.wait(timeout)

    def _publish(self, stack, truth, name: str, stored: dict | None = None) -> str:
        self.state.set_data(stack, truth=truth, name=name)
        for var, vol in (stored or {}).items():   # reconstructions saved with the stack
            self.state.add_result(f"{var.upper() if var == 'fbp' else var} (file)", vol)
        sizes = " × ".join(f"{v} {k}" for k, v in self.state.stack.sizes.items())
        extra = f"; with {', '.join(stored)} from the file (in Explore)" if stored else ""
        return f"loaded {name}: {sizes}{extra}"

    # ------------------------------------------------------------------ folder
    def refresh(self):
        """Re-list the data folder."""
        if self.root is None:
            self.files.options = []
            why = self._root_error or "no data folder is configured"
            self.folder_note.value = (f"<small>{why}; start the app with <code>xrdwidgets app "
                                      "--data-dir DIR</code> or pass <code>data_dir=</code>.</small>")
            self.refresh_button.disabled = True
            return
        names = safety.list_data_files(self.root)
        self.files.options = names
        self.folder_note.value = (f"<small>{len(names)} data file(s) in the data folder.</small>" if names
                                  else "<small>No HDF5, .npy or zarr files in the data folder.</small>")

    def _on_file(self, change):
        self.sinogram.layout.display = self.npy_order.layout.display = "none"
        self.load_button.disabled = change["new"] is None or self.busy
        if change["new"] is None:
            return
        try:
            kind, names = _probe(safety.confine(change["new"], self.root, must_exist=True))
        except Exception as exc:  # noqa: BLE001 - shown to the visitor, logged
            log.info("data panel: probing %r failed: %s", change["new"], exc)
            self._hide = {str(self.root) + "/": "", str(self.root): "data folder"}
            self._show(self._user_text(exc), "error")
            return
        if kind == "sd2i":
            self.sinogram.options = names
            self.sinogram.value = names[0]
            self.sinogram.layout.display = ""
        elif kind == "npy":
            self.npy_order.layout.display = ""

    def load_selected(self):
        """Load the file selected in the Folder tab (as a job); returns the job."""
        rel = self.files.value
        if rel is None:
            self._show("choose a file first", "error")
            return None
        hide = {str(self.root) + "/": "", str(self.root): "data folder"}
        try:
            path = safety.confine(rel, self.root, must_exist=True)
        except (OSError, ValueError) as exc:
            self._hide = hide
            self._show(self._user_text(exc), "error")
            return None
        sino = self.sinogram.value if self.sinogram.layout.display != "none" else None
        dims = self.npy_order.value

        def work():
            stack, truth, stored = _read_stack(path, sinogram=sino, npy_dims=dims)
            yield Progress(1, 1)
            return self._publish(stack, truth, rel + (f" [{sino}]" if sino else ""), stored)

        return self._start(f"loading {rel}", work, hide)

    def open_now(self, rel: str) -> str:
        """Load ``rel`` (a path inside the data folder) now, without a job, and select it in the
        file list (the file the app opens on start, :meth:`App.served`).

        A reconstruction stored in the file next to the sinogram stack (the ``fbp`` variable
        ``xrdwidgets demo`` writes) is added as the result "FBP (file)".

        Returns
        -------
        str
            The status line shown ("loaded …").

        Raises
        ------
        OSError, ValueError
            No data folder, a path outside it, a missing or unreadable file (the message names it).
        """
        if self.root is None:
            raise FileNotFoundError(f"cannot open {rel!r}: no data folder is configured")
        path = safety.confine(rel, self.root, must_exist=True)
        rel = path.relative_to(self.root).as_posix()
        stack, truth, stored = _read_stack(path, sinogram=None, npy_dims=self.npy_order.value)
        text = self._publish(stack, truth, rel, stored)
        self.refresh()
        if rel in self.files.options:
            self.files.value = rel
        self._show(text, "ok")
        return text

    def close(self):
        """Delete the temporary upload and close the widgets."""
        self._discard_upload()
        self.widget.close()

    # ------------------------------------------------------------------ simulate
    def simulate(self):
        """Simulate with the Simulate tab's settings (as a job); returns the job."""
        phases = list(self.sim_phases.value)
        if not phases:
            self._show("choose at least one phase", "error")
            return None
        kw = dict(size=self.sim_size.value, n_channels=self.sim_channels.value,
                  dose=None if self.sim_noise_free.value else float(self.sim_dose.value),
                  parallax_mm=float(self.sim_distance.value) if self.sim_parallax.value else None,
                  seed=int(self.sim_seed.value))

        def work():
            ds = yield from iterate_simulation(phases, **kw)
            return self._publish(ds["sinogram"], ds, "simulation")

        return self._start(f"simulating {', '.join(phases)}", work)
