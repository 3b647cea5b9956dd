"""The Binder environment: generated from pyproject.toml, and enough for every notebook's imports."""
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import binder_env  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "dashboards").glob("*.ipynb"))


def _notebook(path: Path, *cells: str) -> Path:
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": c} for c in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def test_environment_file_is_up_to_date():
    assert binder_env.check() == [], "\n".join(binder_env.check())
    assert binder_env.main(["--check"]) == 0


def test_check_reports_a_stale_file(tmp_path):
    stale = tmp_path / "environment.yml"
    text = binder_env.ENV_FILE.read_text(encoding="utf-8")
    stale.write_text(text.replace('"plotly>=6.1"', '"plotly>=5.20"'), encoding="utf-8")
    problems = binder_env.check(stale)
    assert problems and "stale" in problems[0]
    assert any("plotly>=5.20" in p for p in problems)
    assert binder_env.main(["--check", "--out", str(stale)]) == 1
    assert binder_env.check(tmp_path / "missing.yml") == [f"{tmp_path / 'missing.yml'} is missing"]


def test_environment_matches_pyproject_pins():
    deps = binder_env.read_environment()
    text = binder_env.ENV_FILE.read_text(encoding="utf-8")
    assert "pytorch-cpu" in deps and "torch" not in deps          # no CUDA build on Binder
    assert "scikit-learn" in deps                                  # notebook 07
    assert '"plotly>=6.1"' in text                                 # the pin of pyproject.toml
    reqs = binder_env.pip_requirements()
    assert "plotly>=6.1" in reqs and "scikit-learn>=1.3" in reqs and "torch>=2.3" in reqs
    assert not any(r.startswith(("pytest", "playwright", "sphinx")) for r in reqs)   # no test/docs extras


def test_unknown_extra_is_refused(tmp_path):
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project]\nname = "xrdwidgets"\ndependencies = ["numpy"]\n'
                   '[project.optional-dependencies]\napps = ["xrdwidgets[nope]"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match="nope"):
        binder_env.pip_requirements(bad, extras=("apps",))


def test_notebook_imports_are_parsed_with_ast(tmp_path):
    nb = _notebook(tmp_path / "a.ipynb", "%matplotlib inline\nimport os, numpy as np\n",
                   "from scipy.ndimage import gaussian_filter\nfrom . import x\n",
                   "def f():\n    import sklearn.cluster\n", "!pip list\nimport xrdwidgets.sim")
    assert binder_env.notebook_imports(nb) == {"os": 0, "numpy": 0, "scipy": 1, "sklearn": 2,
                                               "xrdwidgets": 3}


def test_every_notebook_import_is_in_the_binder_environment():
    assert len(NOTEBOOKS) >= 10
    problems = binder_env.uncovered_imports(NOTEBOOKS)
    assert problems == [], "\n".join(problems)


def test_an_import_outside_the_environment_is_reported(tmp_path):
    pytest.importorskip("skimage")   # installed here (test extra), not in the Binder environment
    nb = _notebook(tmp_path / "fake.ipynb", "import numpy\nimport json\nimport xrdwidgets\n",
                   "from skimage.transform import radon\n")
    problems = binder_env.uncovered_imports([nb])
    assert len(problems) == 1
    assert "'skimage'" in problems[0] and "scikit-image" in problems[0] and "cell 1" in problems[0]
    # not installed anywhere: cannot be matched, also reported
    nb2 = _notebook(tmp_path / "fake2.ipynb", "import surely_not_a_module_xyz\n")
    assert "no installed distribution" in binder_env.uncovered_imports([nb2])[0]


def test_an_environment_without_scikit_learn_fails_notebook_07(tmp_path):
    env = tmp_path / "environment.yml"
    env.write_text(binder_env.ENV_FILE.read_text(encoding="utf-8").replace('  - "scikit-learn>=1.3"\n', ""),
                   encoding="utf-8")
    problems = binder_env.uncovered_imports(NOTEBOOKS, env)
    assert problems and all("sklearn" in p for p in problems)
    assert any("07_unmixing" in p for p in problems)


def test_binder_start_sets_the_notebook_size():
    start = (ROOT / "binder" / "start").read_text(encoding="utf-8")
    assert 'XRDWIDGETS_NB_SIZE="${XRDWIDGETS_NB_SIZE:-small}"' in start
    from xrdwidgets.sim.demo import DEMO_SIZES
    assert "small" in DEMO_SIZES
    post = (ROOT / "binder" / "postBuild").read_text(encoding="utf-8")
    assert "pip install --no-cache-dir --no-deps -e ." in post


def test_binder_check_takes_binders_size_and_cpu_torch(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import binder_check

    assert binder_check.binder_size() == "small"
    reqs = binder_check.venv_requirements("torch==2.13.0")
    assert "torch==2.13.0" in reqs and not any(r.startswith("torch>") for r in reqs)
    assert set(reqs) - {"torch==2.13.0"} == set(binder_env.pip_requirements()) - {"torch>=2.3"}
    bad = tmp_path / "start"
    bad.write_text("#!/bin/bash\nexec \"$@\"\n")
    with pytest.raises(SystemExit, match="XRDWIDGETS_NB_SIZE"):
        binder_check.binder_size(bad)
