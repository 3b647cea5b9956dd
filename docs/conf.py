"""Sphinx configuration of the xrdwidgets documentation (``make docs`` → docs/_build/html).

At configuration time this file

* copies ``notebooks/*.ipynb`` into ``docs/tutorials/`` (git-ignored), where myst-nb renders them.
  When ``XRDWIDGETS_DOCS_EXECUTED`` names a folder holding executed copies of *every* notebook
  (``benchmarks/binder_check.py --save-executed DIR`` writes them, as CI does), those are used
  and nothing is executed again; otherwise myst-nb executes each notebook during the build at
  ``XRDWIDGETS_NB_SIZE=tiny`` (a failing cell fails the build);
* writes ``docs/_generated/`` (git-ignored): the table of reconstruction methods from
  ``xrdwidgets.recon.registry`` and the ``--help`` of the command line, so the user guide shows
  what the code says.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
# the notebook kernels import this checkout's package too (not another installed copy)
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
os.environ.setdefault("XRDWIDGETS_NB_SIZE", "tiny")
os.environ.setdefault("MPLBACKEND", "Agg")

import xrdwidgets  # noqa: E402

project = "xrdwidgets"
author = "the xrdwidgets developers"
copyright = "the xrdwidgets developers (MIT licence)"
release = version = xrdwidgets.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints", "screenshots/README*"]
html_theme = "furo"
html_title = f"xrdwidgets {release}"
html_static_path: list[str] = []

# MyST (markdown pages and notebooks)
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]   # notebooks start at "# N · title" and may skip levels

# autodoc / autosummary: NumPy-style docstrings
autosummary_generate = True
autosummary_imported_members = False
# each object is documented in the module that defines it (packages re-export; not documented twice)
autodoc_default_options = {"members": True, "ignore-module-all": True}
autodoc_typehints = "none"
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_param = False      # types are free text ("array (n_angles,)"), not cross-references

# myst-nb: notebooks
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_merge_streams = True
nb_execution_show_tb = True


def _copy_notebooks() -> str:
    """Copy the tutorials into docs/tutorials; return the myst-nb execution mode."""
    src = sorted((ROOT / "notebooks").glob("*.ipynb"))
    executed = os.environ.get("XRDWIDGETS_DOCS_EXECUTED")
    # Sphinx runs this file in docs/: a relative folder is taken from the repository root
    done = (Path(executed) if Path(executed).is_absolute() else ROOT / executed) if executed else None
    use_done = done is not None and all((done / p.name).exists() for p in src)
    if done is not None and not use_done:
        missing = [p.name for p in src if not (done / p.name).exists()]
        print(f"docs: {done} lacks {missing}; executing the notebooks here (tiny size)")
    target = DOCS / "tutorials"
    for old in target.glob("*.ipynb"):
        old.unlink()
    for p in src:
        shutil.copyfile((done / p.name) if use_done else p, target / p.name)
    return "off" if use_done else "force"


def _write_generated() -> None:
    import contextlib
    import io

    from xrdwidgets import cli
    from xrdwidgets.recon import registry

    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    common = {"batch", "device", "n", "circle", "centre_offset"}
    rows = ["| method | what | parameters (default) |", "|---|---|---|"]
    for name, spec in registry.methods().items():
        params = ", ".join(f"`{p.name}` ({p.default!r}{' ' + p.units if p.units else ''})"
                           for p in spec.params if p.name not in common and not p.advanced)
        rows.append(f"| `{name}` ({spec.label}) | {spec.help} | {params.replace('|', '/')} |")
    (out / "methods_table.md").write_text("\n".join(rows) + "\n", encoding="utf-8")

    buf = io.StringIO()
    for argv in (["--help"], ["reconstruct", "--help"]):
        with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
            cli.main(argv)
        buf.write("\n")
    (out / "cli_help.txt").write_text(buf.getvalue(), encoding="utf-8")


nb_execution_mode = _copy_notebooks()
_write_generated()
