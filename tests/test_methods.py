"""The method layer: one registry read by the library, the CLI and the Reconstruct panel; every
method runs through the CLI; a killed CLI run resumes from its work folder."""
import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import xrdwidgets
from xrdwidgets import cli, io
from xrdwidgets.recon import METHODS, iterate
from xrdwidgets.recon.registry import DEFAULT_PRESET, get_method, methods, param, register

ROOT = Path(__file__).resolve().parents[1]

#: Tiny settings per method for the CLI runs (every registered method must be listed).
TINY = {
    "fbp": [],
    "sirt": ["--n-iter", "3"],
    "cgls": ["--n-iter", "3", "--nonneg"],
    "tv": ["--n-iter", "3", "--lam-rel", "0.1"],
    "sd2i": ["--epochs", "2"],
    "parallaxnet": ["--epochs", "2", "--batch", "6", "--overlap", "2"],
    "noise2inverse": ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--patch", "8",
                      "--no-tta"],
}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    ds = xrdwidgets.demo(size="tiny")
    f = tmp_path_factory.mktemp("scan") / "scan.h5"
    io.save(ds[["sinogram"]].isel(tth=slice(20, 30)), f)
    return f


def test_registry_library_cli_and_panel_agree():
    pytest.importorskip("ipywidgets")
    from xrdwidgets.widgets.recon_panel import METHOD_PARAMS, ReconPanel
    from xrdwidgets.widgets.state import AppState

    specs = methods()
    assert list(specs) == list(METHODS)                       # the library's names
    assert set(TINY) == set(specs), "every registered method needs a CLI run in TINY"
    panel = ReconPanel(AppState(), queue=False)
    assert [v for _, v in panel.method.options] == list(specs)  # the panel's menu
    for name, spec in specs.items():
        sig = inspect.signature(spec.iterate).parameters
        # library: every default is the signature's
        for p in spec.params:
            assert p.default == sig[p.name].default, (name, p.name)
        # CLI: the flags generated for the method parse to the same defaults
        args = cli.build_parser(name).parse_args(["reconstruct", "f.h5", "--method", name])
        assert cli.commands._method_kwargs(args, spec) == spec.defaults()
        # panel: the default preset shows the library's values; other presets are named
        panel.method.value = name
        assert set(panel.preset.options) == set(spec.preset_names())
        panel.preset.value = DEFAULT_PRESET
        assert set(panel.param_widgets) == {p.name for p in METHOD_PARAMS[name]}
        shown = panel.parameters()
        for p in METHOD_PARAMS[name]:
            if p.default is None:
                assert p.name not in shown            # "automatic": the library decides
            else:
                assert shown[p.name] == p.default, (name, p.name)
        assert shown["batch"] == spec.defaults()["batch"]


def test_drifted_defaults_are_fixed_and_quick_is_a_named_preset():
    assert get_method("tv").defaults()["lam_rel"] == 0.06
    assert get_method("noise2inverse").defaults()["net"] == "unet"
    assert get_method("sd2i").preset()["epochs"] == 6000
    assert get_method("sd2i").preset("quick")["epochs"] == 1000
    p = get_method("parallaxnet").defaults()
    assert (p["batch"], p["overlap"]) == (250, 40)
    with pytest.raises(ValueError, match="preset must be one of"):
        get_method("sd2i").preset("nope")


def test_every_parameter_has_human_label_and_help():
    for name, spec in methods().items():
        for p in spec.params:
            assert p.label.strip() and p.label != p.name, f"{name}.{p.name}: label {p.label!r}"
            assert "_" not in p.label, f"{name}.{p.name}: label {p.label!r} looks like a Python name"
            assert p.help.strip(), f"{name}.{p.name}: no help"
    assert get_method("tv").param("lam_rel").label == "TV weight (relative)"
    assert get_method("sirt").param("n_iter").label == "iterations"


def test_registering_a_parameter_without_label_is_refused():
    def iterate_demo(stack, *, steps: int = 3, batch: int = 8):  # pragma: no cover - never run
        yield from ()

    with pytest.raises(TypeError, match="'steps' needs a label"):
        register("demo-nolabel", iterate_demo, label="x", help="x", params=[param("steps", "x")])
    with pytest.raises(TypeError, match="'steps' needs a label"):
        register("demo-nolabel", iterate_demo, label="x", help="x", params=[param("steps", "x", label="steps")])
    with pytest.raises(ValueError, match="method must be one of"):
        get_method("demo-nolabel")


def test_registering_a_method_is_one_call_and_checks_its_parameters():
    def iterate_demo(stack, *, steps: int = 3, batch: int = 8):  # pragma: no cover - never run
        yield from ()

    with pytest.raises(TypeError, match="no keyword 'step'"):
        register("demo-bad", iterate_demo, label="x", help="x", params=[param("step", "x")])
    with pytest.raises(ValueError, match="method must be one of"):
        get_method("demo-bad")
    with pytest.raises(ValueError, match="does not take"):
        iterate(None, "fbp", epochs=3)


def test_cli_methods_lists_every_method(capsys):
    assert cli.main(["methods", "--long"]) == 0
    out = capsys.readouterr().out
    for name in methods():
        assert name in out
    assert "--lam-rel" in out and "(default: 0.06)" in out
    assert "TV weight (relative)" in out          # the parameters' human labels, as in the panel


def test_cli_method_help_lists_its_parameters_with_defaults_and_units(capsys):
    with pytest.raises(SystemExit):
        cli.main(["reconstruct", "x.h5", "--method", "parallaxnet", "--help"])
    out = capsys.readouterr().out
    assert "--distance-mm MM" in out and "--overlap" in out and "default: 40" in out
    assert "--epochs" in out and "default: 5000" in out   # the paper's 5000 (was 2000; issue 19)


@pytest.mark.parametrize("method", list(TINY))
def test_every_method_runs_through_the_cli(scan, tmp_path, method):
    out = tmp_path / f"{method}.h5"
    assert cli.main(["reconstruct", str(scan), "--method", method, "-o", str(out), "-q",
                     "--device", "cpu", *TINY[method]]) == 0
    rec = io.load(out)
    assert rec.dims == ("y", "x", "tth") and rec.sizes["tth"] == 10
    assert np.isfinite(rec.values).all() and float(np.abs(rec).max()) > 0
    assert io.read_provenance(out)["parameters"]["device"] == "cpu"


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "xrdwidgets.cli", *args], env


def test_a_killed_cli_run_resumes_from_its_work_folder(scan, tmp_path):
    wd, out, ref = tmp_path / "work", tmp_path / "sirt.h5", tmp_path / "ref.h5"
    settings = ["--method", "sirt", "--n-iter", "400", "--batch", "1", "--device", "cpu", "-q"]
    cmd, env = _cli("reconstruct", str(scan), *settings, "--workdir", str(wd), "-o", str(out))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while not (wd / "checkpoint.pt").exists() and time.time() - t0 < 300:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    n_done = len(list((wd / "chunks").glob("*.npy")))
    assert 1 <= n_done < 10, (n_done, (wd / "log.txt").read_text() if (wd / "log.txt").exists() else "")
    # the same command again refuses to start over the former run, and says how to continue
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "xrdwidgets resume" in again.stderr
    cmd, env = _cli("resume", str(wd), "-q")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming from the checkpoint" in (wd / "log.txt").read_text()
    assert cli.main(["reconstruct", str(scan), *settings, "-o", str(ref)]) == 0
    np.testing.assert_allclose(io.load(out).values, io.load(ref).values, rtol=1e-5, atol=1e-6)


def test_cli_resume_refuses_a_folder_without_a_run(tmp_path, capsys):
    assert cli.main(["resume", str(tmp_path)]) == 2
    assert "not the work folder" in capsys.readouterr().err


def test_checkpoints_of_earlier_versions_get_an_older_version_error():
    from xrdwidgets.recon import iterate_noise2inverse

    stack = xrdwidgets.demo(size="tiny")["sinogram"].isel(tth=slice(0, 4))
    old = {"kind": "xrdwidgets.recon.noise2inverse", "version": 1, "fingerprint": {}, "chunks": {},
           "running": {"group": 0, "epoch": 1}}
    with pytest.raises(ValueError, match="older version of xrdwidgets"):
        iterate_noise2inverse(stack, epochs=1, device="cpu", checkpoint=old)
