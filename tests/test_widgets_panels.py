"""Headless tests of the reconstruction and corrections panels: set values, click, assert."""

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

import xrdwidgets
from xrdwidgets import jobs
from xrdwidgets.widgets.corrections_panel import CorrectionsPanel
from xrdwidgets.widgets.recon_panel import METHOD_PARAMS, ReconPanel
from xrdwidgets.widgets.state import AppState


from waiting import wait_until as _wait  # noqa: E402


@pytest.fixture
def state():
    ds = xrdwidgets.demo(size="tiny")
    st = AppState()
    st.set_data(ds["sinogram"], truth=ds, name="tiny")
    return st


def test_recon_panel_runs_fbp_and_publishes_result(state):
    panel = ReconPanel(state, queue=jobs.JobQueue("t1"))
    assert panel.channels.value == (0, 60)
    panel.channels.value = (10, 30)
    panel.start_button.click()
    job = panel.job
    assert job is not None
    job.wait(timeout=60)
    assert _wait(lambda: "fbp #1" in state.results)
    vol = state.results["fbp #1"]
    assert vol.dims == ("y", "x", "tth") and vol.sizes["tth"] == 20
    np.testing.assert_allclose(vol.tth.values, state.stack.tth.values[10:30])
    assert _wait(lambda: panel.progress.value == 1.0)
    assert "done" in panel.status.value and panel.cancel_button.disabled


def test_recon_panel_shows_parameter_labels_and_help(state):
    from xrdwidgets.recon.registry import methods

    panel = ReconPanel(state, queue=jobs.JobQueue("t-labels"))
    for name, spec in methods().items():
        panel.method.value = name
        for pname, wd in panel.param_widgets.items():
            p = spec.param(pname)
            assert wd.description.startswith(p.label) and wd.description.split(" (")[0] != pname
            assert wd.tooltip.startswith(p.help)
    panel.method.value = "tv"
    assert panel.param_widgets["lam_rel"].description == "TV weight (relative)"
    assert panel.param_widgets["n_iter"].description == "iterations"


def test_recon_panel_loss_curve_breaks_between_channel_batches(state):
    panel = ReconPanel(state, queue=jobs.JobQueue("t-batches"))
    assert "press Start" in panel.fig.layout.annotations[0].text      # empty states say what to do
    assert "press Start" in panel.fig.layout.annotations[1].text
    panel.method.value = "tv"
    panel.param_widgets["n_iter"].value = 4
    panel.channels.value = (10, 30)
    panel.batch.value = 10                                           # 2 channel batches
    job = panel.start()
    job.wait(timeout=60)
    assert job.state is jobs.State.DONE, job.message
    assert _wait(lambda: panel.progress.value == 1.0 and len(panel.loss_trace.x) == 9)
    x, y = list(panel.loss_trace.x), list(panel.loss_trace.y)
    assert x == [1, 2, 3, 4, None, 5, 6, 7, 8]                       # one break, at the second batch
    assert y[4] is None and all(v is not None for v in y[:4] + y[5:])
    assert panel.loss_trace.connectgaps is not True
    # the preview says which channels it shows: the last batch, 20–29 of the stack
    title = panel.fig.layout.annotations[1].text
    tth = state.stack.tth.values
    assert "2θ" in title and "channels 20–29" in title and f"{tth[20]:.4g}" in title, title
    assert "tth" not in title and "tth" not in panel.channel_label.value


def test_loss_segments_one_batch_is_one_line():
    from xrdwidgets.widgets.recon_panel import loss_segments

    assert loss_segments([(1, 3.0), (2, 2.0)], set()) == ([1, 2], [3.0, 2.0])
    assert loss_segments([(1, 3.0), (2, 2.0), (3, 9.0)], {1, 3}) == ([1, 2, None, 3], [3.0, 2.0, None, 9.0])


def test_recon_panel_streams_loss_and_preview_then_cancel(state):
    panel = ReconPanel(state, queue=jobs.JobQueue("t2"))
    panel.method.value = "tv"
    assert set(panel.param_widgets) == {p.name for p in METHOD_PARAMS["tv"]}
    panel.param_widgets["n_iter"].value = 100000
    panel.batch.value = 60
    job = panel.start()
    assert _wait(lambda: len(panel.loss_trace.y) >= 3)
    assert _wait(lambda: np.asarray(panel.preview_trace.z).shape[0] > 1)
    assert "ETA" in panel.status.value
    panel.cancel_button.click()
    job.wait(timeout=10)                                  # liveness bound only
    assert job.state is jobs.State.CANCELLED
    assert job.history and job.history[-1][0] < 100000    # stopped early, not run to the end
    assert _wait(lambda: "cancelled" in panel.status.value)
    assert "tv #1" not in state.results


def test_recon_panel_jobs_on_disk_never_reuse_an_earlier_folder(state, tmp_path):
    # a folder left by an earlier session (e.g. before a kernel restart) is kept as it is
    old = tmp_path / "job-1-fbp"
    old.mkdir()
    (old / "result.h5").write_bytes(b"earlier result")
    panel = ReconPanel(state, queue=jobs.JobQueue("t4"), workdir=tmp_path)
    panel.channels.value = (0, 4)
    job = panel.start()
    job.wait(timeout=60)
    assert job.state is jobs.State.DONE, job.message
    assert job.workdir == tmp_path / "job-2-fbp"
    assert (tmp_path / "job-2-fbp" / "result.h5").is_file()
    assert (old / "result.h5").read_bytes() == b"earlier result"
    # the job is resumable: its source takes checkpoint= and the finished result is reused
    again = jobs.resume(job.workdir, job._source)
    again.wait(timeout=60)
    assert again.state is jobs.State.DONE
    np.testing.assert_array_equal(again.result.values, job.result.values)


def test_recon_panel_reports_bad_parameters_visibly(state):
    panel = ReconPanel(state, queue=jobs.JobQueue("t3"))
    panel.channels.value = (5, 5)
    assert panel.start() is None
    assert "at least one channel" in panel.error.value


def test_corrections_panel_recovers_centre_and_applies(state):
    from xrdwidgets.sim.scan import acquire

    truth = state.truth
    scan = acquire(truth["volume"], n_angles=40, n_translations=24, centre_offset=1.5, dose=None)
    raw = scan["sinogram"]
    raw = raw.xrd.with_geometry(raw.xrd.geometry.replace(centre_offset=0.0))
    state.set_data(raw, truth=truth)
    panel = CorrectionsPanel(state, queue=jobs.JobQueue("t4"))
    panel.air.value = False
    panel.decay.value = False
    panel.jitter.value = False
    panel.run_button.click()
    panel.job.wait(timeout=60)
    assert _wait(lambda: not panel.use_button.disabled)
    centre = [r for r in panel.reports if type(r).__name__ == "CentreResult"][0]
    assert abs(centre.offset_steps - 1.5) < 0.3
    assert "Centre" in panel.report_html.value or "centre" in panel.report_html.value
    panel.use_button.click()
    assert state.stack is panel.result and state.stack is not state.raw
    panel.reset_button.click()
    assert state.stack is state.raw


def test_recon_panel_runs_sd2i_as_a_job(state):
    panel = ReconPanel(state, queue=jobs.JobQueue("t-sd2i"))
    panel.method.value = "sd2i"
    assert set(panel.param_widgets) == {p.name for p in METHOD_PARAMS["sd2i"]}
    panel.param_widgets["epochs"].value = 15
    panel.channels.value = (20, 24)
    job = panel.start()
    assert job is not None, panel.error.value
    job.wait(timeout=120)
    assert job.state is jobs.State.DONE, job.message
    assert _wait(lambda: "sd2i #1" in state.results)
    vol = state.results["sd2i #1"]
    assert vol.dims == ("y", "x", "tth") and vol.sizes["tth"] == 4
    assert len(panel.loss_trace.y) >= 2


def test_recon_panel_offers_parallaxnet_with_the_datas_distance(state):
    panel = ReconPanel(state, queue=jobs.JobQueue("t-pnet"))
    panel.method.value = "parallaxnet"
    assert panel.param_widgets["distance_mm"].value == 0.0
    assert "distance_mm" not in panel.parameters()        # 0 → the scan geometry's distance
    panel.param_widgets["distance_mm"].value = 500.0
    assert panel.parameters()["distance_mm"] == 500.0


def test_recon_panel_runs_noise2inverse_as_a_job(state):
    panel = ReconPanel(state, queue=jobs.JobQueue("t-n2i"))
    panel.method.value = "noise2inverse"
    panel.param_widgets["epochs"].value = 2
    panel.param_widgets["net"].value = "unet"
    panel.channels.value = (20, 24)
    job = panel.start()
    assert job is not None, panel.error.value
    job.wait(timeout=180)
    assert job.state is jobs.State.DONE, job.message
    assert _wait(lambda: "noise2inverse #1" in state.results)
    assert state.results["noise2inverse #1"].dims == ("y", "x", "tth")


def test_recon_panel_estimate_time_runs_as_a_job(state):
    panel = ReconPanel(state, queue=jobs.JobQueue("t-est"))
    panel.method.value = "sirt"
    panel.param_widgets["n_iter"].value = 40
    panel.batch.value = 30
    job = panel.estimate_button.click() or panel.estimate_job
    assert job is not None and panel.estimate_button.disabled       # a job, not work in the callback
    job.wait(timeout=60)
    assert job.state is jobs.State.DONE, job.message
    est = job.result
    assert (est.steps, est.batches) == (80, 2)
    assert _wait(lambda: "about" in panel.estimate_label.value and not panel.estimate_button.disabled)
    assert "80 steps, 2 batches" in panel.estimate_label.value
    # no channels chosen: a clear message, no job
    panel.method.value = "tv"
    panel.param_widgets["lam_rel"].value = 0.0
    panel.channels.value = (0, 0)
    assert panel.estimate() is None and "choose channels" in panel.estimate_label.value


def test_data_tab_shows_what_was_loaded(state):
    from xrdwidgets.widgets.plotting import decode_z
    from xrdwidgets.explore import stack_overview
    from xrdwidgets.widgets.data_panel import DataPanel

    panel = DataPanel(AppState())
    assert "nothing loaded" in panel.overview_fig.layout.annotations[0].text     # empty: says what to do
    panel = DataPanel(state)                                                      # a stack already loaded
    assert panel.overview_job is not None
    panel.overview_job.wait(timeout=60)
    raw = state.raw
    mean = raw.mean(("translation", "angle")).values
    k = int(np.argmax(mean))
    # the figure's layout and its traces are applied one after the other at the end of a batch
    # update (in the job's dispatcher thread): wait for both
    assert _wait(lambda: "sinogram at 2θ" in panel.overview_fig.layout.annotations[0].text
                 and np.shape(decode_z(panel.overview_fig.data[0].z)) == (raw.sizes["angle"], raw.sizes["translation"])
                 and np.size(panel.overview_fig.data[1].y) == raw.sizes["tth"])
    assert f"(channel {k})" in panel.overview_fig.layout.annotations[0].text
    z = decode_z(panel.overview_fig.data[0].z)
    np.testing.assert_allclose(z, raw.isel(tth=k).transpose("angle", "translation").values, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(panel.overview_fig.data[1].y, float), mean, rtol=1e-5)
    assert panel.overview_fig.layout.xaxis2.title.text.startswith("2θ")
    assert panel.overview_fig.layout.xaxis.title.text and panel.overview_fig.layout.yaxis.title.text
    # a new load replaces it
    other = raw.isel(tth=slice(0, 10))
    state.set_data(other, name="ten")
    assert _wait(lambda: panel.overview_job is not None and panel.overview_job.done
                 and len(panel.overview_fig.data[1].y) == 10)
    sino, pattern, kk = stack_overview(other)
    assert pattern.sizes["tth"] == 10 and kk == int(np.argmax(other.mean(("translation", "angle")).values))
