"""Jobs never hand back wrong results (issue 13, item 4): one job per work folder, fingerprints
before "already done", checksummed checkpoints and chunks, crashes visible in job.json."""
import functools
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from xrdwidgets import jobs
from xrdwidgets.recon import iterate, run_to_end
from xrdwidgets.base.progress import Progress
from xrdwidgets.sim.demo import demo

from waiting import cancel_after  # noqa: E402


@pytest.fixture(scope="module")
def stack():
    # 24 translations x 30 angles, 9 channels: 3 batches of 3
    return demo(size="tiny").sinogram.isel(tth=slice(20, 29))


def _source(stack, method="sirt", batch=3, **kw):
    kw = {"n_iter": 4, **kw} if method != "fbp" else kw
    return functools.partial(iterate, stack, method, batch=batch, device="cpu", **kw)


def _gated(gate: threading.Event, checkpoint=None):
    """A job that holds its folder until ``gate`` is set."""
    yield Progress(iteration=1, total=2)
    gate.wait(30)
    yield Progress(iteration=2, total=2)
    return 1


# ---------------------------------------------------------------------------- one job per folder
def test_second_job_in_the_same_folder_is_refused_naming_the_holder(tmp_path):
    wd = tmp_path / "wd"
    gate = threading.Event()
    first = jobs.run(functools.partial(_gated, gate), name="first-job", workdir=wd)
    try:
        for kwargs in ({}, {"overwrite": True}, {"resume": True}):
            with pytest.raises(jobs.WorkdirBusyError) as err:
                jobs.Job(functools.partial(_gated, gate), name="second", workdir=wd, **kwargs)
            text = str(err.value)
            assert f"pid {os.getpid()}" in text and socket.gethostname() in text
            assert "'first-job'" in text and "started 20" in text and str(wd) in text
    finally:
        gate.set()
    assert first.wait(timeout=30) == 1 and first.state is jobs.State.DONE
    # once the first job has ended, the folder is free again
    again = jobs.resume(wd, functools.partial(_gated, gate))
    assert again.wait(timeout=30) == 1
    assert not (wd / "job.lock").exists()


def test_a_job_object_that_never_runs_does_not_hold_the_folder_forever(tmp_path):
    wd = tmp_path / "wd"
    job = jobs.Job(functools.partial(_gated, threading.Event()), workdir=wd)
    job.cancel()  # a queued job cancelled before it started releases its folder
    assert jobs.run(lambda: iter(()), workdir=wd, overwrite=True).wait(timeout=10) is None
    forgotten = jobs.Job(lambda: iter(()), workdir=wd, overwrite=True)
    with pytest.raises(jobs.WorkdirBusyError):
        jobs.Job(lambda: iter(()), workdir=wd, overwrite=True)
    del forgotten  # dropped without running: garbage collection frees the folder
    gc.collect()
    assert jobs.run(lambda: iter(()), workdir=wd, overwrite=True).wait(timeout=10) is None


_HOLDER = textwrap.dedent("""
    import sys, time
    from xrdwidgets import jobs
    from xrdwidgets.base.progress import Progress

    def forever(checkpoint=None):
        i = 0 if checkpoint is None else checkpoint["i"]
        while True:
            i += 1
            yield Progress(iteration=i, metrics={"checkpoint": {"i": i}} if i == 1 else {})
            time.sleep(0.05)

    job = jobs.run(forever, name="holder", workdir=sys.argv[1])
    print("started", flush=True)
    job.wait()
""")


def test_job_of_another_process_crash_and_stale_lock(tmp_path, caplog):
    wd = tmp_path / "wd"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(wd)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().decode().strip() == "started", proc.stderr.read().decode()
        deadline = time.time() + 60
        while not (wd / "checkpoint.pt").exists():
            assert time.time() < deadline
            time.sleep(0.02)
        assert jobs.job_info(wd)["state"] == "running"
        with pytest.raises(jobs.WorkdirBusyError, match=rf"job 'holder' \(pid {proc.pid} on host "):
            jobs.Job(lambda checkpoint=None: iter(()), workdir=wd, resume=True)
        proc.send_signal(signal.SIGKILL)  # a crash: no clean-up at all
    finally:
        proc.wait(timeout=30)
    info = jobs.job_info(wd)
    assert info["state"] == "crashed" and info["recorded_state"] == "running"
    assert f"pid {proc.pid}" in info["message"]

    def finish(checkpoint=None):
        yield Progress(iteration=checkpoint["i"] + 1)
        return checkpoint["i"]

    with caplog.at_level(logging.WARNING, logger="xrdwidgets"):
        job = jobs.resume(wd, finish)
        assert job.wait(timeout=30) == 1
    assert any("taking over the lock of job 'holder'" in r.getMessage() for r in caplog.records)
    assert jobs.job_info(wd)["state"] == "done"


# ---------------------------------------------------------------------------- fingerprints
def test_resuming_a_finished_folder_with_other_data_or_parameters(stack, tmp_path):
    wd = tmp_path / "wd"
    a = jobs.run(_source(stack, "fbp"), name="A", workdir=wd).wait(timeout=60)
    # job B replaces A's result in the same folder (the only way now: overwrite)
    b = jobs.run(_source(stack * 3.0, "fbp"), name="B", workdir=wd, overwrite=True).wait(timeout=60)
    assert float(abs(b - a).max()) > 1
    job = jobs.resume(wd, _source(stack, "fbp"))  # A again: must not get B's volume
    with pytest.raises(ValueError, match="sinogram data or angles differ"):
        job.wait(timeout=60)
    assert job.state is jobs.State.FAILED and job.result is None
    assert "overwrite=True" in job.message and str(wd) in job.message
    job = jobs.resume(wd, _source(stack * 3.0, "fbp", filter="hann"))
    with pytest.raises(ValueError, match="filter='ramp' in the checkpoint, 'hann' now"):
        job.wait(timeout=60)
    # the right source still gets the finished result, without recomputing it
    same = jobs.resume(wd, _source(stack * 3.0, "fbp"))
    assert same.wait(timeout=60).equals(b) and "already done" in same.message
    # recompute when asked
    redo = jobs.run(_source(stack, "fbp"), workdir=wd, overwrite=True).wait(timeout=60)
    assert redo.equals(a)


def test_explicit_fingerprint_of_a_generic_source(tmp_path):
    wd = tmp_path / "wd"

    def gen(value, checkpoint=None):
        yield Progress(iteration=1)
        return value

    assert jobs.run(functools.partial(gen, 1), workdir=wd, fingerprint={"value": 1}, save_result=lambda r, p:
                    p.write_text(str(r))).wait(timeout=10) == 1
    with pytest.raises(ValueError, match=r"value=1 in .*job.json, 2 now"):
        jobs.resume(wd, functools.partial(gen, 2), fingerprint={"value": 2})
    ok = jobs.resume(wd, functools.partial(gen, 1), fingerprint={"value": 1}, save_result=lambda r, p: None)
    ok.wait(timeout=10)
    assert ok.state is jobs.State.DONE and "already done" in ok.message


# ---------------------------------------------------------------------------- checksums
def _interrupted(stack, wd, n_checkpoints=2):
    holder = {}
    job = jobs.Job(cancel_after(_source(stack)(), n_checkpoints, holder), name="sirt", workdir=wd)
    holder["job"] = job
    job.start().wait(timeout=60)
    assert job.state is jobs.State.CANCELLED


def _flip_a_data_byte(path):
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0x40  # inside the array data (the header is at the start)
    path.write_bytes(bytes(raw))


def test_a_flipped_byte_in_a_chunk_is_recomputed_never_merged(stack, tmp_path, caplog):
    full = run_to_end(_source(stack)())
    wd = tmp_path / "wd"
    _interrupted(stack, wd)
    part = wd / "chunks" / "0_3_6.npy"
    _flip_a_data_byte(part)
    with pytest.raises(jobs.CheckpointError, match=rf"{part}.*checksum"):
        jobs.load_checkpoint(wd)
    with caplog.at_level(logging.WARNING, logger="xrdwidgets"):
        job = jobs.resume(wd, _source(stack))
        vol = job.wait(timeout=60)
    assert any(str(part) in r.getMessage() and "recomputed" in r.getMessage() for r in caplog.records)
    assert job.resumed_from["damaged"] == ["0_3_6"] and job.resumed_from["chunks"] == 1
    assert "damaged" in (wd / "log.txt").read_text()
    np.testing.assert_allclose(vol.values, full.values, rtol=1e-5, atol=1e-5 * np.abs(full.values).max())


def test_a_flipped_byte_in_the_checkpoint_is_reported(stack, tmp_path):
    wd = tmp_path / "wd"
    _interrupted(stack, wd)
    path = wd / "checkpoint.pt"
    raw = bytearray(path.read_bytes())
    # flip a byte in the middle of the file's stored payload
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(jobs.CheckpointError, match=str(path)):
        jobs.load_checkpoint(wd)
    with pytest.raises(jobs.CheckpointError, match=str(path)):
        jobs.resume(wd, _source(stack))
