"""Resumable jobs: checkpoints of stack reconstructions, cancel/crash/restart, safe loading."""
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import OrderedDict

import numpy as np
import pytest
import torch

from xrdwidgets import io, jobs
from xrdwidgets.recon import iterate, run_to_end
from xrdwidgets.base.progress import Progress
from xrdwidgets.sim.demo import demo

from waiting import cancel_after as _cancel_after  # noqa: E402

METHODS = {"fbp": {}, "sirt": {"n_iter": 4}, "cgls": {"n_iter": 4}, "tv": {"n_iter": 4}}


@pytest.fixture(scope="module")
def stack():
    # 24 translations x 30 angles, 12 channels: 4 batches of 3
    return demo(size="tiny").sinogram.isel(tth=slice(20, 32))


def _source(stack, method, batch=3, **kw):
    return functools.partial(iterate, stack, method, batch=batch, device="cpu", **{**METHODS[method], **kw})


def _cancelled_job(stack, method, workdir, n_checkpoints=2, **kw):
    holder = {}
    job = jobs.Job(_cancel_after(_source(stack, method, **kw)(), n_checkpoints, holder),
                   name=f"{method}-run", workdir=workdir)
    holder["job"] = job
    job.start()
    job.wait(timeout=60)
    assert job.state is jobs.State.CANCELLED
    return job


@pytest.mark.parametrize("method", list(METHODS))
def test_cancel_then_resume_equals_uninterrupted(stack, tmp_path, method):
    full = run_to_end(_source(stack, method)())
    wd = tmp_path / method
    job1 = _cancelled_job(stack, method, wd)
    info = jobs.job_info(wd)
    assert info["state"] == "cancelled" and info["checkpoint"]["chunks"] == 2
    ck = jobs.load_checkpoint(wd)
    assert ck["kind"] == "xrdwidgets.recon.stack" and ck["done_batches"] == 2
    assert sorted(ck["chunks"]) == ["0_0_3", "0_3_6"]
    assert sorted(p.name for p in (wd / "chunks").iterdir()) == ["0_0_3.npy", "0_3_6.npy"]
    np.testing.assert_array_equal(ck["chunks"]["0_3_6"], full.values[..., 3:6])
    steps_per_batch = 1 if method == "fbp" else METHODS[method]["n_iter"]
    assert ck["step"] == 2 * steps_per_batch == job1.progress.iteration

    job2 = jobs.resume(wd, _source(stack, method))
    vol = job2.wait(timeout=60)
    assert job2.state is jobs.State.DONE
    if method == "fbp":
        np.testing.assert_array_equal(vol.values, full.values)
    else:
        np.testing.assert_allclose(vol.values, full.values, rtol=1e-5, atol=1e-5 * np.abs(full.values).max())
    assert vol.dims == full.dims and vol.attrs["provenance_producer"] == full.attrs["provenance_producer"]
    assert job2.progress.iteration == job2.progress.total == 4 * steps_per_batch
    if job2.history:  # resumed events continue the step count
        assert job2.history[0][0] == 2 * steps_per_batch + 1
    info = jobs.job_info(wd)
    assert info["state"] == "done" and info["name"] == f"{method}-run"
    assert info["resumed_from"]["iteration"] == 2 * steps_per_batch and info["resumed_from"]["chunks"] == 2
    assert "resuming from the checkpoint at iteration" in (wd / "log.txt").read_text()
    assert io.load(wd / "result.h5").equals(vol)
    assert not (wd / "chunks").exists()  # the parts are dropped once result.h5 holds everything
    assert jobs.load_checkpoint(wd)["chunks"] == {}


def test_kernel_restart_fresh_objects_from_the_workdir(tmp_path):
    wd = tmp_path / "job"
    st = demo(size="tiny").sinogram.isel(tth=slice(0, 10))
    full = run_to_end(_source(st, "sirt")())
    _cancelled_job(st, "sirt", wd, n_checkpoints=1)
    del st
    # "new kernel": a fresh stack from the same file/simulation, a fresh job, nothing else
    st2 = demo(size="tiny").sinogram.isel(tth=slice(0, 10))
    job = jobs.Job(_source(st2, "sirt"), workdir=wd, resume=True)
    assert job.resumed_from["iteration"] == 4 and job.state is jobs.State.QUEUED
    vol = job.start().wait(timeout=60)
    np.testing.assert_allclose(vol.values, full.values, rtol=1e-5, atol=1e-6)


_CRASH_SCRIPT = textwrap.dedent("""
    import functools, sys, time
    from xrdwidgets import jobs
    from xrdwidgets.recon import iterate
    from xrdwidgets.sim.demo import demo
    st = demo(size="tiny").sinogram.isel(tth=slice(0, 8))
    job = jobs.run(functools.partial(iterate, st, "tv", n_iter=40, batch=2, device="cpu"),
                   name="crash", workdir=sys.argv[1])
    job.wait()
""")


def test_crash_of_the_process_leaves_a_resumable_state(tmp_path):
    wd = tmp_path / "crash"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _CRASH_SCRIPT, str(wd)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (wd / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # a crash: no finally blocks, no clean-up
    finally:
        proc.wait(timeout=30)
    assert jobs.job_info(wd)["state"] == "crashed"  # a dead kernel could not record it; job_info tells
    ck = jobs.load_checkpoint(wd)
    assert ck["done_batches"] >= 1
    st = demo(size="tiny").sinogram.isel(tth=slice(0, 8))
    src = functools.partial(iterate, st, "tv", n_iter=40, batch=2, device="cpu")
    vol = jobs.resume(wd, src).wait(timeout=120)
    full = run_to_end(src())
    np.testing.assert_allclose(vol.values, full.values, rtol=1e-4, atol=1e-5 * np.abs(full.values).max())


# ---------------------------------------------------------------------------- wrong checkpoints
@pytest.fixture()
def sirt_workdir(stack, tmp_path):
    wd = tmp_path / "sirt"
    _cancelled_job(stack, "sirt", wd)
    return wd


@pytest.mark.parametrize("change, message", [
    ({"method": "fbp"}, "method 'xrdwidgets.recon.sirt' in the checkpoint, 'xrdwidgets.recon.fbp' now"),
    ({"n_iter": 5}, "n_iter=4 in the checkpoint, 5 now"),
    ({"scale": 2.0}, r"sinogram data or angles differ"),
    ({"channels": slice(20, 31)}, r"dims/shape"),
])
def test_checkpoint_of_another_reconstruction_is_refused(stack, sirt_workdir, change, message):
    st = stack * change.get("scale", 1.0)
    if "channels" in change:
        st = demo(size="tiny").sinogram.isel(tth=change["channels"])
    method = change.get("method", "sirt")
    kw = {"n_iter": change["n_iter"]} if "n_iter" in change else {}
    job = jobs.resume(sirt_workdir, _source(st, method, **kw))
    with pytest.raises(ValueError, match=message):
        job.wait(timeout=60)
    assert job.state is jobs.State.FAILED and "belongs to another reconstruction" in job.message
    # the checkpoint is left as it was: resuming with the right arguments still works
    assert jobs.resume(sirt_workdir, _source(stack, "sirt")).wait(timeout=60) is not None


def test_checkpoint_checks_run_at_the_call(stack, sirt_workdir):
    ck = jobs.load_checkpoint(sirt_workdir)
    with pytest.raises(ValueError, match="iterate_cgls: the checkpoint belongs to another"):
        iterate(stack, "cgls", n_iter=4, batch=3, checkpoint=ck)  # before any next()
    with pytest.raises(ValueError, match="not a stack reconstruction checkpoint"):
        iterate(stack, "sirt", n_iter=4, checkpoint={"kind": "xrdwidgets.sd2i", "epoch": 3})
    with pytest.raises(TypeError, match="checkpoint must be a dict"):
        iterate(stack, "sirt", n_iter=4, checkpoint=[1, 2])
    bad = {**ck, "chunks": {**ck["chunks"], "0_6_9": np.zeros((5, 5, 3))}}
    with pytest.raises(ValueError, match=r"chunk '0_6_9' has shape \(5, 5, 3\), expected \(24, 24, 3\)"):
        iterate(stack, "sirt", n_iter=4, batch=3, checkpoint=bad)


def test_corrupted_checkpoint_names_the_file(stack, sirt_workdir):
    path = sirt_workdir / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(jobs.CheckpointError, match=f"cannot read checkpoint {path}.*damaged"):
        jobs.load_checkpoint(sirt_workdir)
    with pytest.raises(jobs.CheckpointError, match=str(path)):
        jobs.resume(sirt_workdir, _source(stack, "sirt"))
    path.write_bytes(os.urandom(300))
    with pytest.raises(jobs.CheckpointError, match=str(path)):
        jobs.Job(_source(stack, "sirt"), workdir=sirt_workdir, resume=True)


def test_missing_or_damaged_part_names_the_file(stack, sirt_workdir):
    part = sirt_workdir / "chunks" / "0_3_6.npy"
    part.write_bytes(b"not a numpy file")
    with pytest.raises(jobs.CheckpointError, match=f"cannot read {part}"):
        jobs.load_checkpoint(sirt_workdir)
    part.unlink()
    with pytest.raises(jobs.CheckpointError, match=f"lists the part {part}, which is missing"):
        jobs.resume(sirt_workdir, _source(stack, "sirt"))


# ---------------------------------------------------------------------------- workdir protection
def test_finished_result_is_never_replaced_silently(stack, tmp_path):
    wd = tmp_path / "done"
    vol = jobs.run(_source(stack, "fbp"), name="first", workdir=wd).wait(timeout=60)
    before = (wd / "result.h5").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="already holds a finished result.*resume=True.*overwrite=True"):
        jobs.run(_source(stack, "fbp"), workdir=wd)
    calls = []

    def never(checkpoint=None):
        calls.append(checkpoint)
        yield Progress(iteration=1)

    again = jobs.resume(wd, never)
    assert again.wait(timeout=30).equals(vol) and again.state is jobs.State.DONE
    assert calls == [] and "already done" in again.message
    assert (wd / "result.h5").stat().st_mtime_ns == before
    other = jobs.run(_source(stack * 2.0, "fbp"), workdir=wd, overwrite=True).wait(timeout=60)
    np.testing.assert_allclose(io.load(wd / "result.h5").values, other.values)
    np.testing.assert_allclose(other.values, 2 * vol.values, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="exclude each other"):
        jobs.Job(never, workdir=wd, resume=True, overwrite=True)
    with pytest.raises(ValueError, match="needs workdir"):
        jobs.Job(never, resume=True)


def test_unfinished_checkpoint_needs_resume_or_overwrite(stack, sirt_workdir):
    with pytest.raises(FileExistsError, match="checkpoint of an unfinished job.*resume=True"):
        jobs.Job(_source(stack, "sirt"), workdir=sirt_workdir)
    with pytest.raises(TypeError, match="generator object, which cannot be resumed"):
        jobs.Job(_source(stack, "sirt")(), workdir=sirt_workdir, resume=True)
    with pytest.raises(ValueError, match="does not accept checkpoint="):
        jobs.Job(lambda: _source(stack, "sirt")(), workdir=sirt_workdir, resume=True)
    job = jobs.run(_source(stack, "fbp"), workdir=sirt_workdir, overwrite=True)
    job.wait(timeout=60)
    assert job.state is jobs.State.DONE and job.result.attrs["provenance_producer"] == "xrdwidgets.recon.fbp"
    assert "overwrite: removed checkpoint.pt, chunks" in (sirt_workdir / "log.txt").read_text()


def test_resume_without_checkpoint_starts_afresh(stack, tmp_path):
    calls = []

    def gen(checkpoint=None):
        calls.append(checkpoint)
        yield Progress(iteration=1)
        return 7

    job = jobs.resume(tmp_path / "new", gen)
    assert job.wait(timeout=10) == 7 and calls == [None] and job.resumed_from is None


# ---------------------------------------------------------------------------- the generic protocol
def counter(n=40, dt=0.002, checkpoint=None):
    """A resumable algorithm: a running sum, checkpointed every 5 steps (a training loop's shape)."""
    start, total = (0, 0.0) if checkpoint is None else (checkpoint["i"], checkpoint["total"])
    for i in range(start + 1, n + 1):
        time.sleep(dt)
        total += i
        ck = {"i": i, "total": total, "rng": np.random.default_rng(i).random(3),
              "state": OrderedDict(w=torch.full((2,), float(i)))} if i % 5 == 0 else None
        yield Progress(iteration=i, total=n, loss=1.0 / i, metrics={"checkpoint": ck} if ck else {})
    return total


def test_generic_resume_protocol(tmp_path):
    wd = tmp_path / "count"
    job = jobs.run(functools.partial(counter, 1000, 0.002), name="count", workdir=wd)
    while job.last_checkpoint is None or job.last_checkpoint["iteration"] < 10:
        time.sleep(0.01)
        assert not job.done
    job.cancel()
    job.wait(timeout=10)
    ck = jobs.load_checkpoint(wd)
    i = ck["i"]
    assert i >= 10 and i % 5 == 0 and ck["total"] == i * (i + 1) / 2
    assert isinstance(ck["rng"], np.ndarray) and isinstance(ck["state"], OrderedDict)
    job2 = jobs.resume(wd, functools.partial(counter, 60, 0.0))
    assert job2.wait(timeout=10) == 60 * 61 / 2 and job2.name == "count"
    assert job2.history[0][0] == i + 1
    assert json.loads((wd / "job.json").read_text())["resumed_from"]["iteration"] == i


def test_checkpoints_load_safely(tmp_path):
    od = OrderedDict(w=torch.ones(2))
    od._metadata = {"": {"version": 2}}
    state = {"a": np.arange(4, dtype=np.int16), "b": np.float32(1.5), "c": (1, "x", None),
             "d": [np.zeros((2, 2), bool)], "e": od, "f": {3: 1 + 2j}, "g": np.arange(3.0).astype(">f8")}

    def gen():
        yield Progress(iteration=1, metrics={"checkpoint": state})

    jobs.run(gen(), workdir=tmp_path / "ok").wait(timeout=10)
    ck = jobs.load_checkpoint(tmp_path / "ok")
    assert ck["a"].dtype == np.int16 and list(ck["a"]) == [0, 1, 2, 3]
    assert ck["b"] == 1.5 and ck["c"] == (1, "x", None) and ck["d"][0].dtype == bool
    assert ck["e"]._metadata == {"": {"version": 2}} and torch.equal(ck["e"]["w"], torch.ones(2))
    assert ck["f"] == {3: 1 + 2j} and list(ck["g"]) == [0.0, 1.0, 2.0]

    class Custom:
        pass

    def bad():
        yield Progress(iteration=1, metrics={"checkpoint": {"obj": Custom()}})

    job = jobs.run(bad(), workdir=tmp_path / "bad")
    with pytest.raises(TypeError, match=r"checkpoint\['obj'\]: a .*Custom cannot be stored"):
        job.wait(timeout=10)
    # a pickle with arbitrary objects (older versions) is not loaded unless trusted
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save({"x": np.arange(3)}, legacy / "checkpoint.pt")
    with pytest.raises(jobs.CheckpointError, match="trusted=True"):
        jobs.load_checkpoint(legacy)
    assert list(jobs.load_checkpoint(legacy, trusted=True)["x"]) == [0, 1, 2]


# ---------------------------------------------------------------------------- without a job
def test_in_memory_resume_with_leading_dims_and_another_batch():
    st = demo(size="tiny").sinogram.isel(tth=slice(0, 6))
    z = (st.expand_dims(z=[0.0, 1.0]) * np.array([1.0, 2.0])[:, None, None, None]).transpose("z", ...)
    full = run_to_end(iterate(z, "cgls", n_iter=3, batch=2, device="cpu"))
    ck = None
    gen = iterate(z, "cgls", n_iter=3, batch=2, device="cpu")
    for ev in gen:
        if "checkpoint" in ev.metrics:
            ck = jobs.merge_checkpoint(ck, ev.metrics["checkpoint"])
            if ck["done_batches"] == 4:  # the first z slice and one batch of the second
                break
    gen.close()
    assert sorted(ck["chunks"]) == ["0_0_2", "0_2_4", "0_4_6", "1_0_2"]
    events = []
    vol = run_to_end(iterate(z, "cgls", n_iter=3, batch=4, device="cpu", checkpoint=ck), events.append)
    assert vol.dims == ("z", "y", "x", "tth")
    np.testing.assert_allclose(vol.values, full.values, rtol=1e-5, atol=1e-5 * np.abs(full.values).max())
    assert [e.metrics["channel_start"] for e in events[::3]] == [2]  # channels 2-6 of z=1 in one batch
    assert events[-1].metrics["batch"] == events[-1].metrics["n_batches"] == 5


# ---------------------------------------------------------------------------- within a batch
@pytest.mark.parametrize("method", ["sirt", "cgls", "tv"])
def test_resume_within_a_running_batch(stack, tmp_path, method):
    full = run_to_end(_source(stack, method)())
    wd = tmp_path / method
    # checkpoints: batch 1 at iteration 2, batch 1 done, batch 2 at iteration 2 -> cancel
    _cancelled_job(stack, method, wd, n_checkpoints=3, checkpoint_every=2)
    ck = jobs.load_checkpoint(wd)
    assert sorted(ck["chunks"]) == ["0_0_3"] and ck["step"] == 6 and ck["done_batches"] == 1
    assert ck["running"]["key"] == "0_3_6" and ck["running"]["state"]["iteration"] == 2
    job = jobs.resume(wd, _source(stack, method, checkpoint_every=2))
    vol = job.wait(timeout=60)
    assert job.history[0][0] == 7  # continues at iteration 3 of batch 2
    assert "resuming from the checkpoint at iteration 6 (1 finished part(s))" in (wd / "log.txt").read_text()
    np.testing.assert_allclose(vol.values, full.values, rtol=1e-5, atol=1e-6 * np.abs(full.values).max())


def test_solver_state_checks():
    from xrdwidgets.ops import ParallelProjector
    from xrdwidgets.recon import iterative as it

    op = ParallelProjector(16, np.linspace(0, 180, 12, endpoint=False), device="cpu")
    sino = op(torch.rand(16, 16, 2)).numpy()
    evs = []
    run_to_end(it.iterate_cgls_array(sino, op, 6, checkpoint_every=4), evs.append)
    state = evs[3].metrics["checkpoint"]
    assert [("checkpoint" in e.metrics) for e in evs] == [False] * 3 + [True] + [False] * 2
    np.testing.assert_array_equal(it.cgls_array(sino, op, 6, checkpoint=state), it.cgls_array(sino, op, 6))
    with pytest.raises(ValueError, match="kind 'xrdwidgets.recon.cgls.batch', expected 'xrdwidgets.recon.sirt.batch'"):
        it.iterate_sirt_array(sino, op, 6, checkpoint=state)
    with pytest.raises(ValueError, match=r"iteration must be an integer in \[0, 3\), found 4"):
        it.iterate_cgls_array(sino, op, 3, checkpoint=state)
    with pytest.raises(ValueError, match=r"'x' has shape \(16, 16, 2\), expected \(16, 16, 1\)"):
        it.iterate_cgls_array(sino[..., :1], op, 6, checkpoint=state)


def test_solver_with_its_own_checkpoints_is_left_alone(stack):
    from xrdwidgets.recon import driver

    plan = driver.prepare_stack(stack, caller="t", producer="t", parameters={}, batch=6, device="cpu")

    def solve(sino, op, channels):  # manages its checkpoints itself (no checkpoint= argument)
        yield Progress(iteration=1, total=2, metrics={"checkpoint": {"mine": channels.start}})
        yield Progress(iteration=2, total=2)
        return torch.zeros(op.n, op.n, sino.shape[2])

    events = []
    run_to_end(driver.run_stack(plan, solve), events.append)
    assert [e.metrics.get("checkpoint") for e in events] == [{"mine": 0}, None, {"mine": 6}, None]


def test_resume_when_every_batch_was_already_done(stack, tmp_path):
    wd = tmp_path / "all"
    full = run_to_end(_source(stack, "fbp")())
    _cancelled_job(stack, "fbp", wd, n_checkpoints=4)  # cancelled after the last batch's checkpoint
    job = jobs.resume(wd, _source(stack, "fbp"))
    np.testing.assert_array_equal(job.wait(timeout=60).values, full.values)
    assert job.history == [] and not (wd / "chunks").exists()
    assert jobs.load_checkpoint(wd)["chunks"] == {}
