"""estimate_runtime: a probe of the method's first steps, extrapolated to its whole batch plan.

No wall-clock assertions: a fake clock (one second per reading) makes every probed step cost
one second, so the estimate is the arithmetic of the plan; the real clock is only checked to give
a finite, positive estimate.
"""
import itertools

import pytest

import xrdwidgets
from xrdwidgets.recon.estimate import RuntimeEstimate, estimate_runtime


@pytest.fixture(scope="module")
def stack():
    return xrdwidgets.demo(size="tiny")["sinogram"]      # 60 channels


def ticking():
    """A clock that advances one second at every reading."""
    c = itertools.count()
    return lambda: float(next(c))


def test_estimate_scales_with_iterations_and_batches(stack):
    assert stack.sizes["tth"] == 60
    kw = dict(n_probe=4, min_probe_s=0.0)
    a = estimate_runtime("tv", stack, {"n_iter": 20, "batch": 30}, clock=ticking(), **kw)
    b = estimate_runtime("tv", stack, {"n_iter": 40, "batch": 30}, clock=ticking(), **kw)
    c = estimate_runtime("tv", stack, {"n_iter": 20, "batch": 15}, clock=ticking(), **kw)
    assert (a.steps, a.batches) == (40, 2) and (b.steps, b.batches) == (80, 2) and (c.steps, c.batches) == (80, 4)
    assert a.per_step_s == pytest.approx(1.0)               # one reading per step
    assert a.seconds == pytest.approx(a.batches * a.setup_s + a.steps * a.per_step_s)
    # doubling the iterations (or the batches) doubles the steps' share; the setup is per batch
    steps_part = a.seconds - a.batches * a.setup_s
    assert b.seconds == pytest.approx(2 * steps_part + b.batches * b.setup_s)
    assert c.seconds == pytest.approx(2 * steps_part + c.batches * c.setup_s)
    for other in (b, c):
        assert other.seconds / a.seconds == pytest.approx(2.0, rel=0.25)
    assert a.probed_steps >= 5 and a.steps > a.probed_steps   # a probe, not the run


def test_estimate_scales_with_epochs_of_a_network(stack):
    kw = dict(n_probe=3, min_probe_s=0.0)
    a = estimate_runtime("sd2i", stack, {"epochs": 50, "batch": 60}, clock=ticking(), **kw)
    b = estimate_runtime("sd2i", stack, {"epochs": 100, "batch": 60}, clock=ticking(), **kw)
    assert (a.steps, b.steps, a.batches) == (50, 100, 1)
    assert b.seconds / a.seconds == pytest.approx(2.0, rel=0.25)
    assert "about" in a.text() and isinstance(a, RuntimeEstimate)


def test_real_clock_gives_a_finite_estimate_and_a_short_run_runs_to_the_end(stack):
    e = estimate_runtime("sirt", stack, {"n_iter": 200, "batch": 30}, n_probe=3, min_probe_s=0.0)
    assert 0 < e.seconds < float("inf") and e.per_step_s > 0 and e.steps == 400 and e.batches == 2
    assert "timed steps" in e.how
    short = estimate_runtime("sirt", stack, {"n_iter": 3, "batch": 60}, n_probe=5, min_probe_s=0.0)
    assert short.how.startswith("ran to the end") and short.steps == 3 and short.seconds > 0
    f = estimate_runtime("fbp", stack, {"batch": 20}, clock=ticking(), min_probe_s=0.0)
    assert (f.steps, f.batches) == (3, 3)


def test_text_rounds_for_people():
    def est(s):
        return RuntimeEstimate("tv", s, 0.1, 0.0, 10, 1, 5, 1.0, "cpu", "x")
    assert est(40).text() == "about 40 s" and est(18 * 60 + 10).text() == "about 18 min"
    assert est(5 * 3600).text() == "about 5.0 h" and est(0.01).text() == "about 1 s"


def test_clear_errors(stack):
    with pytest.raises(ValueError, match="method must be one of"):
        estimate_runtime("nope", stack, {})
    with pytest.raises(ValueError, match="does not take"):
        estimate_runtime("tv", stack, {"epochs": 3})
    with pytest.raises(ValueError, match="n_iter"):
        estimate_runtime("tv", stack, {"n_iter": 0})
    with pytest.raises(ValueError, match="n_probe"):
        estimate_runtime("tv", stack, {}, n_probe=0)
    with pytest.raises(ValueError, match="min_probe_s"):
        estimate_runtime("tv", stack, {}, min_probe_s=-1)
    with pytest.raises(ValueError, match="checkpoint"):
        estimate_runtime("tv", stack, {"checkpoint": {"step": 3}})
