"""One view of a running background job, shared by the panels: a progress bar, a status line,
an error line, the job's log and a Cancel button.

:meth:`JobView.watch` subscribes to a :class:`~xrdwidgets.jobs.Job`; its events arrive in the
job's dispatcher thread, where the view only sets widget traits (never ``display()`` or
``print``). A panel places the widgets it wants and passes ``on_progress`` (its figures) and
``on_done`` (its result) callbacks; whatever they raise (logged by the job's dispatcher), the
view returns to idle at the job's end (buttons back, progress hidden when asked), so a panel is
never left busy.
"""
from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable, Sequence

import ipywidgets as w

from ..base.errors import InputError
from ..jobs import Job, JobEvent, State

log = logging.getLogger(__name__)

__all__ = ["JobView", "error_html", "status_line"]


def error_html(text: str) -> str:
    """``text`` (escaped) as a red error line."""
    return f"<span style='color:#b00'>{html.escape(str(text))}</span>"


def status_line(ev: JobEvent) -> str:
    """The status of a job as one HTML line: name, state, step ``i/n``, loss, seconds, ETA.

    E.g. ``"<b>fbp #1</b> running 3/10, loss 0.012, 1.5 s, ETA 4 s"``.
    """
    job, p = ev.job, ev.progress
    eta = job.eta()
    it = "" if p is None else f" {p.iteration}/{p.total or '?'}"
    loss = "" if getattr(p, "loss", None) is None else f", loss {p.loss:.4g}"
    return (f"<b>{html.escape(job.name)}</b> {ev.state.value}{it}{loss}, {job.elapsed:.1f} s"
            + ("" if eta is None or ev.state.finished else f", ETA {eta:.0f} s"))


class JobView:
    """The widgets that follow one background job at a time.

    Parameters
    ----------
    status : str
        The status line's text before the first job (HTML).
    status_line : bool
        Write :func:`status_line` on every event (``False``: the panel writes the status).
    errors : bool
        On failure, show the job's message in :attr:`error` (``False``: the panel shows it).
    log_lines : int
        Lines of the job's log shown in :attr:`log` (0: the log is not updated).
    hide_progress : bool
        Show the progress bar only while a job runs.
    progress_width : str
        CSS width of the progress bar.
    buttons : sequence of ipywidgets.Button
        Disabled while a job runs (e.g. the panel's Start button).

    Attributes
    ----------
    progress : ipywidgets.FloatProgress
        0–1: ``iteration / total`` of the job's latest progress event; 1 when it is done.
    status, error : ipywidgets.HTML
    log : ipywidgets.Textarea
    cancel_button : ipywidgets.Button
        Cancels the job; enabled while it runs.
    job : Job or None
        The job watched last.
    """

    def __init__(self, *, status: str = "", status_line: bool = True, errors: bool = True, log_lines: int = 0,
                 hide_progress: bool = False, progress_width: str = "60%", buttons: Sequence = ()):
        self.show_status, self.show_errors, self.log_lines = bool(status_line), bool(errors), int(log_lines)
        self.hide_progress = bool(hide_progress)
        self.buttons = list(buttons)
        self.job: Job | None = None
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="",
                                        layout=w.Layout(width=progress_width,
                                                        display="none" if hide_progress else None))
        self.status = w.HTML(status)
        self.error = w.HTML()
        self.log = w.Textarea(value="", disabled=True, layout=w.Layout(width="98%", height="90px"))
        self.cancel_button = w.Button(description="Cancel", button_style="danger", icon="stop", disabled=True)
        self.cancel_button.on_click(lambda _: self.cancel())
        self._idle = threading.Event()
        self._idle.set()

    @property
    def busy(self) -> bool:
        """True from :meth:`watch` until the view has shown the job's end."""
        return not self._idle.is_set()

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until the view has shown the end of the watched job; False on timeout."""
        return self._idle.wait(timeout)

    def cancel(self):
        """Cancel the watched job (it stops within one iteration)."""
        if self.job is not None:
            self.job.cancel()

    def watch(self, job: Job, on_progress: Callable[[JobEvent], None] | None = None,
              on_done: Callable[[JobEvent], None] | None = None) -> Job:
        """Follow ``job``: progress, status, log and Cancel until it ends.

        Parameters
        ----------
        job : Job
            Started or queued.
        on_progress : callable, optional
            ``on_progress(event)`` on every event, after the progress bar (in the job's
            dispatcher thread: set traits only).
        on_done : callable, optional
            ``on_done(event)`` once, when the job has finished (done, failed or cancelled),
            before the view returns to idle.

        Returns
        -------
        Job
            ``job``.
        """
        if not isinstance(job, Job):
            raise InputError(f"JobView.watch: expected a jobs.Job, found {type(job).__name__}")
        self._idle.clear()
        self.job = job
        self.error.value = ""
        self.progress.value = 0.0
        if self.hide_progress:
            self.progress.layout.display = ""
        self.cancel_button.disabled = False
        for b in self.buttons:
            b.disabled = True
        job.subscribe(lambda ev: self._on_event(ev, on_progress, on_done))
        return job

    def _on_event(self, ev: JobEvent, on_progress, on_done):
        """Runs in the job's dispatcher thread: sets traits only."""
        p = ev.progress
        try:
            if p is not None and getattr(p, "total", None):
                self.progress.value = min(1.0, p.iteration / p.total)
            if self.show_status:
                self.status.value = status_line(ev)
            if self.log_lines:
                self.log.value = "\n".join(ev.job.log_lines[-self.log_lines:])
            if on_progress is not None:
                on_progress(ev)
            if not ev.state.finished:
                return
            self.cancel_button.disabled = True
            if ev.state is State.DONE:
                self.progress.value = 1.0
            elif ev.state is State.FAILED and self.show_errors:
                self.error.value = error_html(ev.job.message)
            if on_done is not None:
                on_done(ev)
        finally:
            if ev.state.finished:
                if self.hide_progress:
                    self.progress.layout.display = "none"
                for b in self.buttons:
                    b.disabled = False
                self._idle.set()
