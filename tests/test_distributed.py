"""Scale-out on dask.distributed (xrdwidgets.distributed), on a LocalCluster of 2 worker processes.

The reference of every check is the single-process run of the same method and plan
(:func:`xrdwidgets.recon.reconstruct`); the data are scikit-image ``radon`` sinograms of a small
phantom (not our projector).
"""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
from skimage.transform import radon  # noqa: E402

import xrdwidgets as xw  # noqa: E402
from xrdwidgets import distributed as xd  # noqa: E402
from xrdwidgets import io as xio  # noqa: E402
from xrdwidgets import jobs  # noqa: E402
from xrdwidgets.recon import reconstruct  # noqa: E402

N, N_ANG, C = 24, 30, 12


def make_stack(n=N, n_ang=N_ANG, c=C):
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - n / 2 + 0.5, xx - n / 2 + 0.5)
    a = (r < n * 0.35).astype(float)
    b = ((yy - n / 2) ** 2 / 9 + (xx - n / 2 - 3) ** 2 / 16 < 1).astype(float)
    ang = np.linspace(0, 180, n_ang, endpoint=False)
    sa, sb = radon(a, ang, circle=True), radon(b, ang, circle=True)
    w = np.linspace(0, 1, c)
    sinos = np.stack([(1 - t) * sa + 3 * t * sb for t in w], -1).astype(np.float32)
    return xw.data.sinogram_stack(sinos, angle=ang, spectral=np.linspace(2.0, 6.0, c))


STACK = make_stack()


@pytest.fixture(scope="module")
def client():
    before = dict(os.environ)
    cluster = xd.local_cluster(2, threads_per_worker=1, gpus=0, silence_logs=40)
    cl = distributed.Client(cluster)
    yield cl
    cl.close()
    cluster.close()
    # the settings that change later computations (also after the worker restarts of these tests)
    changed = {k for k in (*xd.WORKER_ENV, "MALLOC_TRIM_THRESHOLD_") if os.environ.get(k) != before.get(k)}
    assert not changed, {k: os.environ.get(k) for k in changed}


def _max_rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def test_fbp_equals_the_single_process_run_and_the_store_opens_as_the_volume(client, tmp_path):
    ref = reconstruct(STACK, "fbp", batch=5)
    events = []
    vol = xd.reconstruct_distributed(STACK, "fbp", client=client, store=tmp_path / "fbp.zarr", batch=5,
                                     callback=events.append)
    assert vol.dims == ref.dims and vol.shape == ref.shape
    assert _max_rel(vol, ref) < 1e-6
    np.testing.assert_allclose(vol["y"], ref["y"])
    assert vol.attrs["provenance_producer"] == ref.attrs["provenance_producer"]
    assert vol.attrs["distributed_computed"] == 3 and vol.attrs["distributed_skipped"] == 0
    assert events[-1].metrics["batches_done"] == 3 and events[-1].metrics["distributed"]
    stored = xio.open_zarr(tmp_path / "fbp.zarr")
    assert _max_rel(stored.values, ref.values) < 1e-6
    assert xd.store_status(tmp_path / "fbp.zarr")["complete"]


def test_sd2i_equals_the_single_process_run(client, tmp_path):
    kw = dict(epochs=25, k=4, batch=6, seed=3)
    ref = reconstruct(STACK, "sd2i", **kw)
    vol = xd.reconstruct_distributed(STACK, "sd2i", client=client, store=tmp_path / "sd2i.zarr", **kw)
    err = _max_rel(vol, ref)
    assert err < 1e-3, err   # the same seeded training per batch; only float summation order differs
    # the check can fail: another seed gives another network
    other = reconstruct(STACK, "sd2i", **{**kw, "seed": 4})
    assert _max_rel(other, ref) > 10 * max(err, 1e-6)


def test_overlapping_batches_are_merged_as_the_single_process_runner_merges_them(client, tmp_path):
    kw = dict(epochs=4, batch=6, overlap=2, pixel_mm=0.1, distance_mm=500.0)
    ref = reconstruct(STACK, "parallaxnet", **kw)
    vol = xd.reconstruct_distributed(STACK, "parallaxnet", client=client, store=tmp_path / "px.zarr", **kw)
    assert _max_rel(vol, ref) < 1e-3


def test_a_worker_killed_mid_run_loses_only_its_batch(client, tmp_path):
    kw = dict(n_iter=400, batch=2)
    ref = reconstruct(STACK, "sirt", **kw)
    gen = xd.iterate_distributed(STACK, "sirt", client=client, store=tmp_path / "kill.zarr",
                                 progress_every_s=0.05, **kw)
    first = next(gen)
    victim = first.metrics["worker"]
    assert victim in client.scheduler_info()["workers"]
    with pytest.raises(Exception):  # the worker exits before it can answer
        client.run(os._exit, 1, workers=[victim])
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            vol = stop.value
            break
    assert _max_rel(vol, ref) < 1e-5
    assert vol.attrs["distributed_computed"] == C // 2


def test_a_killed_client_leaves_a_store_that_resume_completes_without_redoing_batches(client, tmp_path):
    store = tmp_path / "resume.zarr"
    data = tmp_path / "stack.h5"
    xio.save(STACK, data)
    kw = dict(n_iter=1500, batch=2)
    script = textwrap.dedent(f"""
        import distributed
        from xrdwidgets import distributed as xd
        client = distributed.Client({client.scheduler.address!r})
        xd.reconstruct_distributed({str(data)!r}, "sirt", client=client, store={str(store)!r}, **{kw!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        done = []
        while time.monotonic() < deadline and proc.poll() is None:
            if store.exists():
                try:
                    done = xd.store_status(store)["done"]
                except ValueError:  # the store is being created
                    done = []
                if done:
                    break
            time.sleep(0.05)
        assert done and proc.poll() is None, proc.stderr.read().decode() if proc.poll() is not None else "no batch"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    import zarr

    seconds_before = np.asarray(zarr.open_group(str(store))[xd.RUN_GROUP]["seconds"][:])
    done_before = ~np.isnan(seconds_before)
    assert done_before.sum() >= 1 and not done_before.all()
    time.sleep(0.5)  # the dead client's tasks are released by the scheduler
    vol = xd.reconstruct_distributed(data, "sirt", client=client, store=store, **kw)
    seconds_after = np.asarray(zarr.open_group(str(store))[xd.RUN_GROUP]["seconds"][:])
    # what was finished before the resume was not computed again
    np.testing.assert_array_equal(seconds_after[done_before], seconds_before[done_before])
    n_batches = C // 2
    assert vol.attrs["distributed_computed"] + vol.attrs["distributed_skipped"] == n_batches
    assert vol.attrs["distributed_skipped"] >= done_before.sum()
    ref = reconstruct(STACK, "sirt", **kw)
    assert _max_rel(vol, ref) < 1e-5


def test_a_damaged_batch_is_computed_again_never_returned(client, tmp_path):
    store = tmp_path / "dmg.zarr"
    ref = reconstruct(STACK, "fbp", batch=4)
    xd.reconstruct_distributed(STACK, "fbp", client=client, store=store, batch=4)
    chunk_files = sorted(p for p in (store / "volume").rglob("*") if p.is_file() and p.name != "zarr.json")
    assert len(chunk_files) == 3
    raw = bytearray(chunk_files[1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk_files[1].write_bytes(bytes(raw))
    vol = xd.reconstruct_distributed(STACK, "fbp", client=client, store=store, batch=4)
    assert vol.attrs["distributed_computed"] == 1 and vol.attrs["distributed_skipped"] == 2
    assert _max_rel(vol, ref) < 1e-6


def test_a_store_of_another_run_or_a_foreign_folder_is_refused(client, tmp_path):
    store = tmp_path / "a.zarr"
    xd.reconstruct_distributed(STACK, "fbp", client=client, store=store, batch=4)
    with pytest.raises(ValueError, match="filter='ramp' in the checkpoint, 'hann' now"):
        xd.reconstruct_distributed(STACK, "fbp", client=client, store=store, batch=4, filter="hann")
    vol = xd.reconstruct_distributed(STACK, "fbp", client=client, store=store, batch=4, filter="hann",
                                     overwrite=True)
    assert vol.attrs["distributed_computed"] == 3
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not the store of a distributed run"):
        xd.reconstruct_distributed(STACK, "fbp", client=client, store=mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_bad_arguments_fail_before_anything_is_submitted(client, tmp_path):
    with pytest.raises(ValueError, match="device"):
        xd.iterate_distributed(STACK, "fbp", client=client, store=tmp_path / "x.zarr", device="cpu")
    with pytest.raises(ValueError, match="method must be one of"):
        xd.iterate_distributed(STACK, "nope", client=client, store=tmp_path / "x.zarr")
    with pytest.raises(ValueError, match="n_iter"):
        xd.iterate_distributed(STACK, "sirt", client=client, store=tmp_path / "x.zarr", n_iter=0)
    assert not (tmp_path / "x.zarr").exists()
    with pytest.raises(ValueError, match="both client= .* and store="):
        reconstruct(STACK, "fbp", client=client)


def test_reconstruct_and_jobs_run_on_a_client(client, tmp_path):
    ref = reconstruct(STACK, "cgls", n_iter=10, batch=4)
    vol = reconstruct(STACK, "cgls", n_iter=10, batch=4, client=client, store=tmp_path / "r.zarr")
    assert _max_rel(vol, ref) < 1e-5
    source = functools.partial(xw.recon.iterate, STACK, "cgls", n_iter=10, batch=4)
    job = jobs.run(source, client=client, workdir=tmp_path / "job", name="cluster cgls")
    job.wait(timeout=120)
    assert job.state == jobs.State.DONE, job.message
    assert _max_rel(job.result, ref) < 1e-5
    assert (tmp_path / "job" / "volume.zarr").exists()
    with pytest.raises(ValueError, match="store= or workdir="):
        jobs.run(source, client=client)


def test_slurm_recipe_writes_a_gpu_job_script():
    pytest.importorskip("dask_jobqueue")
    cluster = xd.slurm_cluster(queue="gpu", account="xrdct", walltime="02:00:00", gpus_per_job=2, cores=16,
                               memory="128GB", job_script_prologue=["source /opt/xrdwidgets/venv/bin/activate"])
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:2" in script
    assert "#SBATCH -p gpu" in script and "#SBATCH -A xrdct" in script and "#SBATCH -t 02:00:00" in script
    assert "--resources GPU=1" in script and "--nworkers 2" in script
    assert "source /opt/xrdwidgets/venv/bin/activate" in script


def test_cli_reconstruct_on_a_scheduler_and_again_resumes(client, tmp_path, capsys):
    from xrdwidgets.cli import main

    data = tmp_path / "scan.h5"
    xio.save(STACK, data)
    out = tmp_path / "out.h5"
    rc = main(["reconstruct", str(data), "--method", "sirt", "--n-iter", "20", "--batch", "4",
               "--scheduler", client.scheduler.address, "-o", str(out), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert "running on the dask cluster" in capsys.readouterr().err
    ref = reconstruct(STACK, "sirt", n_iter=20, batch=4)
    assert _max_rel(xio.load(out), ref) < 1e-5
    assert xd.store_status(tmp_path / "out.zarr")["complete"]
    with pytest.raises(SystemExit, match="--store is for cluster runs"):
        main(["reconstruct", str(data), "--store", str(tmp_path / "s.zarr"), "-o", str(tmp_path / "o.h5")])
    with pytest.raises(SystemExit, match="not both"):
        main(["reconstruct", str(data), "--scheduler", "tcp://x:1", "--local-cluster", "2"])


def test_recon_panel_runs_on_the_cluster_it_was_given(client, tmp_path):
    pytest.importorskip("ipywidgets")
    from xrdwidgets.widgets.recon_panel import ReconPanel
    from xrdwidgets.widgets.state import AppState

    state = AppState()
    state.set_data(STACK, name="radon")
    plain = ReconPanel(AppState(), queue=False)
    assert plain.on_cluster.layout.display == "none"          # no cluster given: nothing offered
    panel = ReconPanel(state, queue=False, workdir=tmp_path / "jobs", cluster=client)
    assert panel.on_cluster.layout.display != "none"
    assert client.scheduler.address in panel.cluster_info.value and "dask dashboard" in panel.cluster_info.value
    panel.method.value = "sirt"
    panel.param_widgets["n_iter"].value = 20
    panel.batch.value = 4
    panel.on_cluster.value = True
    job = panel.start()
    job.wait(timeout=120)
    assert job.state is jobs.State.DONE, job.message
    assert "(cluster)" in job.name
    ref = reconstruct(STACK, "sirt", **panel.parameters())   # the form's values, run here
    assert _max_rel(job.result, ref) < 1e-5
    assert xd.store_status(Path(job.workdir) / "volume.zarr")["complete"]
    deadline = time.monotonic() + 10
    while "3/3 batches" not in panel.cluster_info.value and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "3/3 batches" in panel.cluster_info.value
    assert client.scheduler.address in panel.cluster_info.value


def test_integration_of_raw_frames_runs_as_chunk_tasks_and_resumes(client, tmp_path):
    pytest.importorskip("pyFAI")
    pytest.importorskip("hdf5plugin")
    from xrdwidgets.integrate import integrate, iterate_integration, work_store
    from xrdwidgets.sim.frames import simulate_raw_scan

    scan = simulate_raw_scan(tmp_path / "raw", n_translations=6, n_angles=4, order="zigzag", n_spot_frames=2,
                             dose=2000.0, frames_per_file=10, seed=2)
    kw = dict(bins=120, chunk=2, radial_range=(2.0, 10.0))
    fresh = integrate(scan.master, scan.poni, **kw)
    out = tmp_path / "stack.zarr"
    # a local run stopped after 3 of 12 chunks: the cluster run takes over its work store
    gen = iterate_integration(scan.master, scan.poni, out=out, prefetch=0, **kw)
    for _ in range(3):
        next(gen)
    gen.close()
    assert len(list((work_store(out) / "done").iterdir())) == 3
    events = []
    stack = integrate(scan.master, scan.poni, out=out, client=client, task_chunks=2, callback=events.append, **kw)
    assert events[-1].metrics["frames"] == 24 and len(events) == 5     # 9 chunks left, 2 per task
    np.testing.assert_array_equal(np.asarray(stack.values), fresh.values)
    assert stack.dims == fresh.dims and not work_store(out).exists()
    with pytest.raises(ValueError, match="out= is needed"):
        integrate(scan.master, scan.poni, client=client, **kw)
    # a local run to HDF5 while a Client is this process's default dask scheduler (the h5py file
    # must not travel to the cluster)
    local = integrate(scan.master, scan.poni, out=tmp_path / "local.h5", **kw)
    np.testing.assert_array_equal(np.asarray(local.values), fresh.values)
    from xrdwidgets.cli import main

    out2 = tmp_path / "cli.h5"
    assert main(["integrate", str(scan.master), "--poni", str(scan.poni), "--bins", "120", "--range", "2", "10",
                 "--chunk", "2", "--scheduler", client.scheduler.address, "-o", str(out2), "-q"]) == 0
    np.testing.assert_allclose(np.asarray(xio.load(out2).values), fresh.values, rtol=1e-6)


def test_gpu_workers_get_one_device_each_and_the_batches_ask_for_it(tmp_path):
    """The GPU plumbing without a GPU: local_cluster(gpus=2) starts workers with the resource
    GPU=1 and their own CUDA_VISIBLE_DEVICES; a run finds them and submits with that resource
    (on a machine without CUDA the tasks fall back to the CPU)."""
    with xd.local_cluster(2, gpus=2, threads_per_worker=1, silence_logs=40) as cluster, \
            distributed.Client(cluster, set_as_default=False) as gclient:
        gclient.wait_for_workers(2)
        env = gclient.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(env.values()) == ["0", "1"]
        assert xd.gpu_workers(gclient) == 2
        asked = []
        submit = gclient.submit

        def recording_submit(*args, **kwargs):
            asked.append(kwargs.get("resources"))
            return submit(*args, **kwargs)

        gclient.submit = recording_submit
        ref = reconstruct(STACK, "fbp", batch=4)
        vol = xd.reconstruct_distributed(STACK, "fbp", client=gclient, store=tmp_path / "g.zarr", batch=4)
        assert _max_rel(vol, ref) < 1e-6
        assert asked == [{"GPU": 1}] * 3


def test_a_local_cluster_leaves_the_callers_environment_alone():
    keys = (*xd.WORKER_ENV, "MALLOC_TRIM_THRESHOLD_")
    before = {k: os.environ.get(k) for k in keys}
    with xd.local_cluster(1, threads_per_worker=1, gpus=0, silence_logs=40) as cluster:
        assert {k: os.environ.get(k) for k in keys} == before
        with distributed.Client(cluster, set_as_default=False) as c:
            c.restart()   # a nanny starting a worker again does not write into this process either
            assert {k: os.environ.get(k) for k in keys} == before
            env = c.run(lambda: (os.environ.get("OMP_NUM_THREADS"), os.environ.get("MALLOC_TRIM_THRESHOLD_")))
            assert list(env.values()) == [("1", None)]   # the workers have their own settings
    assert {k: os.environ.get(k) for k in keys} == before


def test_worker_device_choice():
    class W:
        def __init__(self, name):
            self.name = name

    import torch

    assert xd.worker_device(False, W("x-1")) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert xd.worker_device(True, W("x-1")) == torch.device("cpu")   # no CUDA: the CPU, not a crash
