"""Reconstruction panel: choose a method and parameters, run it as a background job, watch it.

The method menu, the parameter form, its defaults and the named presets (a "preset" menu: the
library's defaults, or e.g. "quick" for fewer epochs) all come from the method registry
(:mod:`xrdwidgets.recon.registry`). The panel only builds a parameter dict, calls :func:`xrdwidgets.recon.iterative.iterate` inside a
:mod:`xrdwidgets.jobs` job, and shows the job's events: a live loss curve, a live preview of
the current slice, a progress bar with ETA and the job's log. Events arrive in the job's
dispatcher thread, which only sets widget traits. "Estimate time" runs
:func:`xrdwidgets.recon.estimate.estimate_runtime` (a few timed steps) as a job before Start.
"""
from __future__ import annotations

import functools
import html
import logging
import tempfile
from pathlib import Path

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import data as _data
from .. import jobs as _jobs
from ..base.progress import Progress
from ..recon.estimate import estimate_runtime
from ..recon.iterative import iterate
from ..recon.registry import DEFAULT_PRESET, ParamSpec, get_method, methods
from ..explore import channel_text as _channel_text
from . import plotting as _fig
from .job_view import JobView, error_html
from .state import AppState

log = logging.getLogger(__name__)

__all__ = ["ReconPanel", "METHOD_PARAMS", "Param", "START_PRESET", "loss_segments", "estimate_job"]


#: One method parameter as the panel shows it (the registry's :class:`ParamSpec`).
Param = ParamSpec
#: Parameters shown in the panel's form for each method: the registry's, less the advanced ones
#: and ``batch`` (its own field). The rest keep their library defaults.
METHOD_PARAMS = {name: tuple(p for p in spec.params if not p.advanced and p.name != "batch")
                 for name, spec in methods().items()}
#: The preset the panel starts from: "quick" (fewer iterations/epochs, shown as such) where a
#: method has one, else the library defaults.
START_PRESET = "quick"
#: Figure titles before a job has sent anything (they say what to do).
LOSS_EMPTY = "loss: press Start"
PREVIEW_EMPTY = "preview: press Start"
#: Width of the form's fields (labels 150 px): long method names and values are not cut.
FORM_WIDTH = "415px"
#: Width (px) of the loss | preview figure (the preview's title names its channels in full).
FIG_W = 740


def loss_segments(history, batch_starts) -> tuple[list, list]:
    """``(x, y)`` of a loss curve with a ``None`` gap at every channel-batch start.

    ``history``: ``(step, loss)`` pairs (a job's ``history``, steps counted over all batches);
    ``batch_starts``: the steps at which a batch began. A stack job runs one solve per channel
    batch, each starting again from a high loss: joined, the batches would read as a saw-tooth.
    """
    starts = sorted(int(b) for b in batch_starts)
    xs, ys, k, prev = [], [], 0, None
    for it, loss in history:
        it = int(it)
        while k < len(starts) and starts[k] <= it:
            if prev is not None and prev < starts[k]:
                xs.append(None)
                ys.append(None)
            k += 1
        xs.append(it)
        ys.append(float(loss))
        prev = it
    return xs, ys


def _param_widget(p: Param, value):
    """A widget for one parameter, showing ``value`` (an optional number's ``None`` shows as 0)."""
    style = {"description_width": "150px"}
    layout = w.Layout(width=FORM_WIDTH)
    label = p.label + (f" ({p.units})" if p.units else "")
    lo = -1e12 if p.minimum is None else p.minimum
    hi = 1e12 if p.maximum is None else p.maximum
    if p.kind == "int":
        wd = w.BoundedIntText(value=0 if value is None else value, min=int(lo), max=int(hi), description=label,
                              style=style, layout=layout)
    elif p.kind == "float":
        wd = w.BoundedFloatText(value=0.0 if value is None else value, min=lo, max=hi, step=0.01,
                                description=label, style=style, layout=layout)
    elif p.kind == "bool":
        wd = w.Checkbox(value=value, description=label, indent=False)
    elif p.kind == "choice":
        wd = w.Dropdown(options=list(p.choices), value=value, description=label, style=style, layout=layout)
    else:
        wd = w.Text(value="" if value is None else str(value), description=label, style=style, layout=layout)
    wd.tooltip = p.help + ("; 0: automatic" if p.optional and p.kind in ("int", "float") else "")
    wd.add_class(f"xrdw-param-{p.name}")
    return wd


def estimate_job(stack, method: str, params: dict):
    """Generator for a job: :func:`xrdwidgets.recon.estimate.estimate_runtime` of ``method`` on
    ``stack`` with ``params``; returns the :class:`~xrdwidgets.recon.estimate.RuntimeEstimate`."""
    yield Progress(iteration=0, total=1, metrics={"step": "timing the first steps"})
    est = estimate_runtime(method, stack, params)
    yield Progress(iteration=1, total=1, metrics={"step": "done"})
    return est


def _devices():
    try:
        import torch

        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    except ImportError:  # pragma: no cover
        return ["cpu"]


class ReconPanel:
    """Start / cancel reconstructions of ``state.stack`` and stream their progress.

    Parameters
    ----------
    state : AppState
        The shared model; finished results go to ``state.add_result``.
    queue : JobQueue or bool
        Where jobs run (default: the process-wide queue, one job after another).
    workdir : path-like, optional
        Folder for job files (checkpoints, results); one sub-folder per job.
    cluster : distributed.Client or str, optional
        A dask cluster (a ``Client`` or a scheduler address, chosen by whoever builds the panel,
        never typed by a visitor): the panel then offers "run on cluster", which runs the
        channel batches there (:func:`xrdwidgets.distributed.iterate_on_cluster`) and links the
        dask dashboard. Its store goes in the job's folder under ``workdir`` (which must then be
        on a file system the workers see), else in a temporary folder (a local cluster only).
    """

    def __init__(self, state: AppState, *, queue=True, workdir=None, cluster=None):
        self.state = state
        self.queue = queue
        self.workdir = workdir
        self.cluster = cluster
        self.job: _jobs.Job | None = None
        self.jobs: list[_jobs.Job] = []
        self._batch_starts: dict = {}   # job id → steps at which a channel batch began
        self._job_channels: dict = {}   # job id → (spectral coordinate, first, stop channel)
        self.method = w.Dropdown(options=[(spec.label, name) for name, spec in methods().items()], value="fbp",
                                 description="method", style={"description_width": "150px"})
        self.preset = w.Dropdown(options=[DEFAULT_PRESET], value=DEFAULT_PRESET, description="preset",
                                 style={"description_width": "150px"})
        self.preset.tooltip = ("starting values: 'default' = the library's defaults; 'quick' = fewer "
                               "iterations/epochs for a quick look")
        self.params_box = w.VBox()
        self.param_widgets: dict = {}
        self.channels = w.IntRangeSlider(description="channels", min=0, max=1, value=(0, 1),
                                         continuous_update=False, style={"description_width": "150px"},
                                         layout=w.Layout(width="95%"))
        self.channel_label = w.HTML()
        self.batch = w.BoundedIntText(value=64, min=1, max=100000, description="channel batch",
                                      style={"description_width": "150px"})
        self.batch.tooltip = "channels reconstructed at once (bounds memory; smaller if the GPU runs out)"
        self.device = w.Dropdown(options=_devices(), value=_devices()[-1], description="device",
                                 style={"description_width": "150px"})
        address = getattr(getattr(cluster, "scheduler", None), "address", None) or (
            str(cluster) if cluster is not None else "")
        self.on_cluster = w.Checkbox(value=False, description="run on cluster", indent=False,
                                     layout=w.Layout(display="" if cluster is not None else "none"))
        self._cluster_address = address
        self.on_cluster.tooltip = f"run the channel batches as tasks on the dask cluster at {address}"
        self.cluster_info = w.HTML(_cluster_html(address, _cluster_dashboard(cluster)) if cluster is not None
                                   else "", layout=w.Layout(display="" if cluster is not None else "none"))
        self.start_button = w.Button(description="Start", button_style="success", icon="play")
        self.view = JobView(status="<i>no job yet</i>", log_lines=50)
        self.cancel_button = self.view.cancel_button
        self.estimate_button = w.Button(description="Estimate time", icon="clock")
        self.estimate_button.tooltip = ("time a few steps of the first channel batch on the chosen device and "
                                        "extrapolate to the whole run (runs in the background)")
        self.estimate_view = JobView(status_line=False, errors=False, buttons=[self.estimate_button])
        self.estimate_label = self.estimate_view.status
        self.estimate_job: _jobs.Job | None = None
        self.progress, self.status, self.error, self.log = (self.view.progress, self.view.status,
                                                            self.view.error, self.view.log)
        self.job_list = w.Select(options=[], rows=4, description="jobs",
                                 layout=w.Layout(width="98%"))
        # one figure (plotly.js travels once per FigureWidget): loss curve | preview image
        base = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.08,
                             subplot_titles=(LOSS_EMPTY, PREVIEW_EMPTY))
        base.add_trace(go.Scatter(x=[], y=[], mode="lines", name="loss", connectgaps=False), row=1, col=1)
        base.add_trace(go.Heatmap(z=[[None]], colorscale="Viridis", showscale=False), row=1, col=2)
        base.update_layout(height=300, width=FIG_W, autosize=False, showlegend=False, plot_bgcolor="white",
                           margin=dict(l=50, r=10, t=30, b=40))
        base.update_annotations(font_size=11)
        base.update_xaxes(title_text="step (all channel batches)", row=1, col=1)
        base.update_yaxes(type="log", dtick="D2", title_text="loss", row=1, col=1)   # 1-2-5 labels
        base.update_xaxes(visible=False, row=1, col=1)   # shown with the first loss (no empty axes)
        base.update_yaxes(visible=False, row=1, col=1)
        base.update_xaxes(visible=False, row=1, col=2)
        base.update_yaxes(visible=False, autorange="reversed", scaleanchor="x2", row=1, col=2)
        self.fig = _fig.FigureWidget(base)
        self.loss_trace, self.preview_trace = self.fig.data
        self.method.observe(self._on_method, "value")
        self.preset.observe(self._on_preset, "value")
        self.channels.observe(self._on_channels, "value")
        self.start_button.on_click(lambda _: self.start())
        self.estimate_button.on_click(lambda _: self.estimate())
        state.observe(self._on_stack, "stack")
        self._on_method()
        self._on_stack()
        controls = w.VBox([self.method, self.preset, self.params_box, self.channels, self.channel_label,
                           self.batch, self.device, self.on_cluster, self.cluster_info,
                           w.HBox([self.start_button, self.cancel_button]),
                           w.HBox([self.estimate_button, self.estimate_label]),
                           self.progress, self.status, self.error, self.job_list],
                          layout=w.Layout(width="430px"))
        self.widget = w.VBox([w.HBox([controls, _fig.fixed_box(self.fig, FIG_W, 300)]),
                              w.HTML("<b>log</b>"), self.log])
        for wd in (self.method, self.preset, self.batch, self.device):
            wd.layout.width = FORM_WIDTH
        self.batch.add_class("xrdw-batch")
        for wd, cls in ((self.widget, "xrdw-recon-panel"), (self.method, "xrdw-method"),
                        (self.preset, "xrdw-preset"),
                        (self.channels, "xrdw-channels"), (self.channel_label, "xrdw-channel-label"),
                        (self.start_button, "xrdw-start"), (self.cancel_button, "xrdw-cancel"),
                        (self.estimate_button, "xrdw-estimate"), (self.estimate_label, "xrdw-estimate-label"),
                        (self.status, "xrdw-recon-status"), (self.error, "xrdw-error")):
            wd.add_class(cls)  # stable hooks for browser tests and custom CSS

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------------ parameters
    def _on_method(self, *_):
        spec = get_method(self.method.value)
        names = spec.preset_names()
        start = START_PRESET if START_PRESET in names else DEFAULT_PRESET
        self._switching = True
        try:
            self.preset.options = names
            self.preset.value = start
        finally:
            self._switching = False
        self._on_preset()

    def _on_preset(self, *_):
        """Fill the form with the values of the chosen preset (library defaults or a named one)."""
        if getattr(self, "_switching", False):
            return
        spec = get_method(self.method.value)
        values = spec.preset(self.preset.value)
        self.param_widgets = {p.name: _param_widget(p, values[p.name]) for p in METHOD_PARAMS[spec.name]}
        self.params_box.children = tuple(self.param_widgets.values())
        self.batch.value = values["batch"]

    def _on_stack(self, *_):
        stack = self.state.stack
        self.start_button.disabled = stack is None
        if stack is None:
            return
        spec = _data.spectral_dim(stack)
        n = stack.sizes[spec]
        self.channels.max = max(n, 1)
        self.channels.min = 0
        self.channels.value = (0, n)
        self._on_channels()

    def _on_channels(self, *_):
        stack = self.state.stack
        if stack is None:
            return
        spec = _data.spectral_dim(stack)
        lo, hi = self.channels.value
        c = stack[spec]
        if hi > lo:
            self.channel_label.value = f"<small>{hi - lo} channels: {_channel_text(c, lo, hi)}</small>"

    def parameters(self) -> dict:
        """The keyword arguments the current form gives to the method."""
        spec = get_method(self.method.value)
        kw = {}
        for name, wd in self.param_widgets.items():
            p = spec.param(name)
            if p.optional and wd.value in (0, 0.0, ""):   # "automatic" (e.g. from the data's geometry)
                continue
            kw[name] = wd.value
        kw["batch"] = int(self.batch.value)
        kw["device"] = self.device.value
        return kw

    # ------------------------------------------------------------------ jobs
    def start(self) -> _jobs.Job | None:
        """Start (queue) a reconstruction of the selected channels; returns its job."""
        stack = self.state.stack
        self.error.value = ""
        if stack is None:
            self.error.value = "<span style='color:#b00'>no data loaded</span>"
            return None
        method = self.method.value
        params = self.parameters()
        lo, hi = self.channels.value
        if hi <= lo:
            self.error.value = "<span style='color:#b00'>choose at least one channel</span>"
            return None
        spec = _data.spectral_dim(stack)
        sub = stack.isel({spec: slice(lo, hi)})
        name = f"{method} #{len(self.jobs) + 1}"
        try:  # validate the parameters now, not in the worker: a visible error, not a dead job
            iterate(sub.isel({spec: slice(0, 1)}), method, **params).close()
        except (ValueError, TypeError) as exc:
            self.error.value = f"<span style='color:#b00'>{exc}</span>"
            return None
        workdir = None if self.workdir is None else _free_job_dir(self.workdir, method)
        if self.cluster is not None and self.on_cluster.value:
            from ..distributed import iterate_on_cluster

            store = (Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="xrdwidgets-"))) \
                / "volume.zarr"
            run_params = {k: v for k, v in params.items() if k != "device"}  # each worker uses its own
            source = functools.partial(iterate_on_cluster, self.cluster, sub, method, store=store, **run_params)
            name += " (cluster)"
        else:
            # a resumable source (see jobs.resume): the job passes checkpoint= when it resumes
            source = functools.partial(iterate, sub, method, **params)
        job = _jobs.run(source, name=name, queue=self.queue,
                        workdir=workdir, params={"method": method, "channels": [lo, hi], **params})
        self.job = job
        self.jobs.append(job)
        self._batch_starts[job.id] = set()
        self._job_channels[job.id] = (stack[spec], lo, hi)
        with _fig.updating(self.fig):
            self.loss_trace.x = []
            self.loss_trace.y = []
            self.fig.layout.annotations[0].text = f"loss: {name}"
        self._refresh_list()
        return self.view.watch(job, on_progress=self._on_event, on_done=self._on_done)

    def _preview_title(self, job, metrics) -> str:
        """Which channels the preview shows (the sum over the running batch's channels)."""
        coord, lo, hi = self._job_channels.get(job.id, (None, 0, 0))
        if coord is None:
            return "preview"
        s, e = metrics.get("channel_start"), metrics.get("channel_stop")
        a, b = (lo + int(s), lo + int(e)) if s is not None and e is not None else (lo, hi)
        try:
            return _channel_text(coord, a, min(b, hi))
        except ValueError:  # pragma: no cover - metrics of a foreign solver
            return "preview"

    def estimate(self) -> _jobs.Job | None:
        """Estimate the run time of the current choice in a background job (a probe of a few
        steps, :func:`~xrdwidgets.recon.estimate.estimate_runtime`); the answer goes to
        ``estimate_label`` ("about 18 min")."""
        stack = self.state.stack
        self.error.value = ""
        lo, hi = self.channels.value
        if stack is None or hi <= lo:
            self.estimate_label.value = "<i>load data and choose channels first</i>"
            return None
        spec = _data.spectral_dim(stack)
        sub = stack.isel({spec: slice(lo, hi)})
        method, params = self.method.value, self.parameters()
        self.estimate_label.value = "<i>timing a few steps…</i>"
        job = _jobs.run(functools.partial(estimate_job, sub, method, params), name=f"estimate {method}",
                        queue=False)
        self.estimate_job = job

        def done(ev):
            if ev.state is _jobs.State.DONE:
                est = ev.job.result
                self.estimate_label.value = (
                    f"<span title='{html.escape(str(est), quote=True)}'><b>{est.text()}</b> "
                    f"<small>({est.steps} steps, {est.batches} batch{'es' if est.batches != 1 else ''})"
                    "</small></span>")
            else:
                self.estimate_label.value = ""
                self.error.value = error_html(f"estimate: {ev.job.message}")

        return self.estimate_view.watch(job, on_done=done)

    def cancel(self):
        """Cancel the current job (it stops within one iteration)."""
        self.view.cancel()

    def _refresh_list(self):
        self.job_list.options = [f"{j.name}: {j.state.value}" + (f" — {j.message}" if j.message else "")
                                 for j in self.jobs]

    def _on_event(self, ev: _jobs.JobEvent):
        """Runs in the job's dispatcher thread (after the view's progress, status and log): the
        loss curve, the preview, the cluster line, the job list. Sets traits only."""
        job, p = ev.job, ev.progress
        if p is not None:
            m = p.metrics or {}
            starts = self._batch_starts.setdefault(job.id, set())
            if m.get("inner_iteration") is not None and m.get("n_batches", 1) > 1 and not m.get("distributed"):
                starts.add(int(p.iteration) - int(m["inner_iteration"]) + 1)
            hist = job.history
            if hist:
                xs, ys = loss_segments(hist[-2000:], starts)
                with _fig.updating(self.fig):
                    # a cluster run's losses are samples of batches running side by side: points,
                    # not a line joining different batches
                    self.loss_trace.mode = "markers" if m.get("distributed") else "lines"
                    self.loss_trace.x = xs
                    self.loss_trace.y = ys
                    self.fig.layout.xaxis.visible = self.fig.layout.yaxis.visible = True
            if p.preview is not None:
                from ..explore import decimate

                img = decimate(np.asarray(p.preview, np.float32), 256)
                with _fig.updating(self.fig):
                    self.preview_trace.z = img
                    self.fig.layout.annotations[1].text = self._preview_title(job, m)
        if p is not None and p.metrics.get("dashboard"):
            self.cluster_info.value = _cluster_html(self._cluster_address, p.metrics["dashboard"],
                                                    p.metrics.get("batches_done"),
                                                    p.metrics.get("n_batches"))
        self._refresh_list()

    def _on_done(self, ev: _jobs.JobEvent):
        if ev.state is _jobs.State.DONE:
            self.state.add_result(ev.job.name, ev.job.result)


def _cluster_dashboard(cluster) -> str:
    if hasattr(cluster, "dashboard_link"):
        from ..distributed import dashboard_link

        return dashboard_link(cluster)
    return ""


def _cluster_html(address: str, dashboard: str, done=None, total=None) -> str:
    """The cluster line: its address, a link to its dask dashboard, batches done."""
    text = f"<small>{html.escape(str(address))}"
    if dashboard and str(dashboard).startswith(("http://", "https://")):
        text += (f" · <a href='{html.escape(str(dashboard), quote=True)}' target='_blank' "
                 "rel='noopener noreferrer'>dask dashboard</a>")
    if total:
        text += f" · {int(done or 0)}/{int(total)} batches"
    return text + "</small>"


def _free_job_dir(root, method: str) -> Path:
    """The first ``root/job-<k>-<method>`` that does not exist yet (earlier jobs' results,
    e.g. from before a kernel restart, are never reused or overwritten)."""
    root = Path(root)
    k = 1
    while (root / f"job-{k}-{method}").exists():
        k += 1
    return root / f"job-{k}-{method}"
