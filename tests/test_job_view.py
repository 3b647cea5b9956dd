"""Headless tests of the shared job view: progress, status, log, Cancel, buttons, callbacks."""
import threading

import pytest

pytest.importorskip("ipywidgets")

from xrdwidgets import jobs
from xrdwidgets.base.progress import Progress
from xrdwidgets.widgets.job_view import JobView, error_html

from waiting import wait_until  # noqa: E402


def _steps(n, gate=None):
    for i in range(1, n + 1):
        if gate is not None:
            gate.wait(30)
        yield Progress(iteration=i, total=n, loss=1.0 / i)
    return "result"


def test_a_finished_job_fills_the_bar_and_gives_the_buttons_back():
    start = pytest.importorskip("ipywidgets").Button()
    view = JobView(log_lines=5, buttons=[start])
    seen, done = [], []
    job = view.watch(jobs.run(_steps(4), name="four"), on_progress=seen.append, on_done=done.append)
    assert job.wait(timeout=30) == "result"
    assert view.wait(30) and not view.busy
    assert view.progress.value == 1.0 and view.cancel_button.disabled and not start.disabled
    assert "<b>four</b> done 4/4" in view.status.value and view.error.value == ""
    assert "done in" in view.log.value
    assert len(done) == 1 and done[0].state is jobs.State.DONE and seen[-1].state is jobs.State.DONE


def test_cancel_and_failure_are_shown():
    gate = threading.Event()
    view = JobView(hide_progress=True)
    assert view.progress.layout.display == "none"
    job = view.watch(jobs.run(_steps(100, gate), name="slow"))
    assert view.busy and not view.cancel_button.disabled and view.progress.layout.display == ""
    view.cancel_button.click()
    gate.set()
    job.wait(timeout=30)
    assert view.wait(30) and job.state is jobs.State.CANCELLED
    assert "cancelled" in view.status.value and view.progress.layout.display == "none"

    def broken():
        yield Progress(iteration=1, total=2)
        raise ValueError("bad <value>")

    view.watch(jobs.run(broken, name="broken")).wait(timeout=30, raise_on_error=False)
    assert view.wait(30)
    assert view.error.value == error_html("ValueError: bad <value>") and "&lt;value&gt;" in view.error.value


def test_a_failing_callback_still_returns_the_view_to_idle():
    start = pytest.importorskip("ipywidgets").Button()
    view = JobView(status_line=False, errors=False, buttons=[start])

    def on_done(ev):
        raise RuntimeError("drawing failed")

    gate = threading.Event()
    job = view.watch(jobs.run(_steps(2, gate), name="x"), on_done=on_done)
    gate.set()
    job.wait(timeout=30)
    assert view.wait(30) and not start.disabled and view.status.value == ""
    assert wait_until(lambda: not view.busy)
    with pytest.raises(ValueError, match="expected a jobs.Job"):
        view.watch(_steps(1))
