"""The package's layering, read from the source with ``ast`` (nothing is imported).

Base modules (``xrdwidgets.base``: progress, validators, atomic, checks, errors) import nothing of the package; algorithms
(``recon``, ``ops``, ``sim``, ``analysis``) never import jobs, widgets, the server or the CLI;
``recon`` has no import cycle (lazy imports inside functions count too).
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "xrdwidgets"
BASE = ("xrdwidgets.base",)
UPPER = ("xrdwidgets.jobs", "xrdwidgets.widgets", "xrdwidgets.appserver", "xrdwidgets.cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every xrdwidgets module ``path`` imports, at the top or inside functions."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("xrdwidgets")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("xrdwidgets"):
                continue
            out.add(target)
            for a in node.names:  # `from . import driver` names a module
                if (PKG.parent / (target + "." + a.name).replace(".", "/")).with_suffix(".py").exists():
                    out.add(target + "." + a.name)
    return out


GRAPH = {_module_name(p): _imports(p) for p in PKG.rglob("*.py")}


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_graph_was_read():
    assert "xrdwidgets.recon.driver" in GRAPH["xrdwidgets.recon.sirt"]
    assert "xrdwidgets.recon.fbp" in GRAPH["xrdwidgets.recon.tv"]  # `from .fbp import fbp_array`


def test_base_modules_import_nothing_of_the_package():
    base = [m for m in GRAPH if _under(m, BASE)]
    assert len(base) >= 5, base  # progress, validators, atomic, checks, errors
    for mod in base:
        bad = {d for d in GRAPH[mod] if not _under(d, BASE)}
        assert not bad, (mod, sorted(bad))


def test_algorithms_never_import_jobs_widgets_server_or_cli():
    for mod, deps in GRAPH.items():
        if _under(mod, ("xrdwidgets.recon", "xrdwidgets.ops", "xrdwidgets.sim", "xrdwidgets.analysis")):
            bad = {d for d in deps if _under(d, UPPER)}
            assert not bad, f"{mod} imports {sorted(bad)}"


def test_recon_has_no_import_cycle():
    recon = {m: {d for d in deps if _under(d, ("xrdwidgets.recon",)) and d != "xrdwidgets.recon"}
             for m, deps in GRAPH.items() if _under(m, ("xrdwidgets.recon",)) and m != "xrdwidgets.recon"}
    # the registry loads the method modules by name (importlib) only to list them: not an import edge
    state: dict = {}

    def visit(m, path):
        state[m] = "open"
        for d in sorted(recon.get(m, ())):
            if state.get(d) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(recon):
        if m not in state:
            visit(m, [m])
