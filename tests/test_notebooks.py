"""Execute the tutorial notebooks end to end at small size (XRDWIDGETS_NB_SIZE=tiny).

CI (``.ci/run``) sets ``XRDWIDGETS_NOTEBOOKS_IN_BINDER_CHECK=1`` and runs ``make binder-check``
after the tests instead: every notebook at Binder's size in a venv of the Binder requirements
only (``benchmarks/binder_check.py``), so the notebooks are not executed twice.
"""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

if os.environ.get("XRDWIDGETS_NOTEBOOKS_IN_BINDER_CHECK") == "1":
    pytest.skip("XRDWIDGETS_NOTEBOOKS_IN_BINDER_CHECK=1: the notebooks run in `make binder-check` "
                "(benchmarks/binder_check.py, every notebook at Binder size)", allow_module_level=True)

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("XRDWIDGETS_NB_SIZE", "tiny")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    assert "Traceback" not in text
