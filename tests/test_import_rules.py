"""The package's layering (docs/architecture.md), read from the source with ``ast`` (nothing is imported).

Every module belongs to one room; each room is on a floor, and a room imports only from its own
floor or the floors below (lazy imports inside functions count too):

    base       xrdwidgets.base                                    imports nothing of the package
    schema     data, schema, geometry, conversions, _version
    core       accessor (the .xrd namespace, forwarding to core functions), io, ops, sim, integrate, corrections, recon, analysis, explore, course
    execution  jobs, distributed, live
    surfaces   widgets, serve, cli

The one exception is the documented hand-off of a core call to a cluster: ``recon`` and
``integrate`` import ``xrdwidgets.distributed`` when given ``client=``, lazily (inside a function).
The core also never imports a UI library (ipywidgets, plotly, voila, IPython), ``jobs`` knows no
science (it imports only the base, and io to store a result), widgets never import the server
(``serve``) or the CLI (the path-safety checks they share with the server are in the base), and
``recon`` has no import cycle.
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "xrdwidgets"

FLOORS = {
    "base": ("xrdwidgets.base",),
    "schema": ("xrdwidgets.data", "xrdwidgets.schema", "xrdwidgets.geometry", "xrdwidgets.conversions",
               "xrdwidgets._version"),
    "core": ("xrdwidgets.accessor", "xrdwidgets.io", "xrdwidgets.ops", "xrdwidgets.sim", "xrdwidgets.integrate", "xrdwidgets.corrections",
             "xrdwidgets.recon", "xrdwidgets.analysis", "xrdwidgets.explore", "xrdwidgets.course"),
    "execution": ("xrdwidgets.jobs", "xrdwidgets.distributed", "xrdwidgets.live"),
    "surfaces": ("xrdwidgets.widgets", "xrdwidgets.serve", "xrdwidgets.cli"),
}
ORDER = list(FLOORS)
BASE = FLOORS["base"]
CORE = FLOORS["schema"] + FLOORS["core"]
UI_LIBRARIES = ("ipywidgets", "plotly", "voila", "IPython", "anywidget", "jupyter_server")
#: core rooms that hand a run to a cluster when given ``client=`` (lazy imports only)
CLUSTER_HAND_OFF = ("xrdwidgets.recon", "xrdwidgets.integrate")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level_nodes(tree):
    """Import nodes executed when the module is imported (not inside a def)."""
    out, stack = set(), list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.add(id(node))
        stack.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path):
    """``({xrdwidgets module: lazy?}, {third-party top-level package})`` that ``path`` imports."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = _top_level_nodes(tree)
    out, third = {}, set()

    def add(name, node):
        lazy = id(node) not in top
        out[name] = out.get(name, True) and lazy

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("xrdwidgets"):
                    add(a.name, node)
                else:
                    third.add(a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("xrdwidgets"):
                third.add(target.split(".")[0])
                continue
            add(target, node)
            for a in node.names:  # `from . import driver` names a module (or a package)
                sub = PKG.parent / (target + "." + a.name).replace(".", "/")
                if sub.with_suffix(".py").exists() or (sub / "__init__.py").exists():
                    add(target + "." + a.name, node)
    return out, third


_READ = {_module_name(p): _imports(p) for p in PKG.rglob("*.py")}
GRAPH = {m: set(deps) for m, (deps, _) in _READ.items()}
LAZY = {m: deps for m, (deps, _) in _READ.items()}
THIRD = {m: third for m, (_, third) in _READ.items()}


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _floor(name: str) -> str | None:
    for floor, rooms in FLOORS.items():
        if _under(name, rooms):
            return floor
    return None


def test_the_graph_was_read():
    assert "xrdwidgets.recon.sirt" in GRAPH
    assert any(_under(d, ("xrdwidgets.recon",)) for d in GRAPH["xrdwidgets.recon.sirt"])
    assert "xrdwidgets.base.progress" in GRAPH["xrdwidgets.recon.fbp"]
    assert "ipywidgets" in THIRD["xrdwidgets.widgets.app"]
    assert not LAZY["xrdwidgets.recon.fbp"]["xrdwidgets.base.progress"]  # a top-level import


def test_every_module_is_in_one_room():
    loose = sorted(m for m in GRAPH if m != "xrdwidgets" and _floor(m) is None)
    assert not loose, f"modules outside every room (place them in tests/test_import_rules.py FLOORS): {loose}"
    for rooms in FLOORS.values():
        for room in rooms:
            assert any(_under(m, (room,)) for m in GRAPH), f"room {room} has no module"


def test_base_modules_import_nothing_of_the_package():
    base = [m for m in GRAPH if _under(m, BASE)]
    assert len(base) >= 6, base  # progress, validators, atomic, checks, errors, safety
    for mod in base:
        bad = {d for d in GRAPH[mod] if not _under(d, BASE)}
        assert not bad, (mod, sorted(bad))


def test_no_room_imports_a_floor_above_its_own():
    for mod, deps in GRAPH.items():
        floor = _floor(mod)
        if floor is None:  # the package's __init__ (lazy demo / integrate accessors)
            continue
        for d, lazy in LAZY[mod].items():
            dfloor = _floor(d)
            if dfloor is None or ORDER.index(dfloor) <= ORDER.index(floor):
                continue
            if _under(mod, CLUSTER_HAND_OFF) and _under(d, ("xrdwidgets.distributed",)) and lazy:
                continue  # the documented client= hand-off
            raise AssertionError(f"{mod} ({floor}) imports {d} ({dfloor}){' lazily' if lazy else ''}")


def test_core_never_imports_jobs_widgets_serve_or_cli():
    # the "never" rules, stated on their own (the floor test above implies them)
    never = ("xrdwidgets.jobs", "xrdwidgets.widgets", "xrdwidgets.serve", "xrdwidgets.cli")
    for mod, deps in GRAPH.items():
        if _under(mod, CORE + BASE):
            bad = {d for d in deps if _under(d, never)}
            assert not bad, f"{mod} imports {sorted(bad)}"


def test_core_never_imports_a_ui_library():
    for mod, third in THIRD.items():
        if _under(mod, CORE + BASE):
            bad = {t for t in third if t in UI_LIBRARIES}
            assert not bad, f"{mod} imports {sorted(bad)}"


def test_jobs_know_no_science():
    # a job runs any generator; it stores an xarray result with io, and knows nothing else
    for mod, deps in GRAPH.items():
        if _under(mod, ("xrdwidgets.jobs",)):
            bad = {d for d in deps if not _under(d, BASE + ("xrdwidgets.jobs", "xrdwidgets.io"))
                   and d != "xrdwidgets"}
            assert not bad, f"{mod} imports {sorted(bad)}"


def test_widgets_use_of_serve_is_the_path_safety_only():
    for mod, deps in GRAPH.items():
        if _under(mod, ("xrdwidgets.widgets",)):
            bad = {d for d in deps if _under(d, ("xrdwidgets.serve",)) and d not in ("xrdwidgets.serve", "xrdwidgets.base.safety")}
            assert not bad, f"{mod} imports {sorted(bad)}"
            assert not {d for d in deps if _under(d, ("xrdwidgets.cli",))}, mod


#: module names used twice for the same concept (the cluster version of the integration)
SAME_CONCEPT = {"integrate": {"xrdwidgets.integrate", "xrdwidgets.distributed.integrate"}}


def test_one_module_name_one_meaning():
    # no two public modules (or a module and a package) share a name unless they are the same concept
    by_name: dict = {}
    for mod in GRAPH:
        name = mod.rsplit(".", 1)[-1]
        if mod != "xrdwidgets" and not name.startswith("_"):
            by_name.setdefault(name, set()).add(mod)
    clashes = {n: sorted(m) for n, m in by_name.items() if len(m) > 1 and m != SAME_CONCEPT.get(n)}
    assert not clashes, clashes


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
