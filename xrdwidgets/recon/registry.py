"""The method registry: what each reconstruction method is called, does and takes.

Every method file registers one :class:`MethodSpec` (``register(...)`` at its end); the command
line (``xrdwidgets reconstruct --method M``, ``xrdwidgets methods``), the Reconstruct panel,
:func:`xrdwidgets.recon.iterate` and the docs read it. Adding a method = one file + one
registration.

A spec names the method's stack-level generator (``iterate_<method>(stack, **kw)``, yielding
:class:`~xrdwidgets.base.progress.Progress` and returning the volume) and the parameters a user sets,
each with a type, a range, a help line and units. The *defaults are read from the generator's
signature*, so the registry, the CLI, the panel and the library cannot disagree. Where a user
interface wants another starting point (fewer epochs for a quick look, a paper's settings) the
spec holds a named *preset* (``{"quick": {"epochs": 1000}}``), which the UI shows by name.

Keywords a spec does not list (``checkpoint``, ``net_options``, ...) are still accepted by the
Python functions; they are not offered on the command line or in the panel.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Callable

from ..base.errors import InputError, InputTypeError

__all__ = ["ParamSpec", "MethodSpec", "param", "register", "get_method", "methods", "common_params",
           "training_params",
           "DEFAULT_PRESET"]

#: Name of the preset that is the library's own defaults (every method has it).
DEFAULT_PRESET = "default"
#: Built-in method modules, imported (in this order) before the registry is read.
_BUILTIN = ("fbp", "sirt", "cgls", "tv", "sd2i", "parallaxnet", "noise2inverse")
_KINDS = ("int", "float", "bool", "choice", "str")
_REGISTRY: dict[str, "MethodSpec"] = {}


@dataclass(frozen=True)
class ParamSpec:
    """One user-settable parameter of a method.

    Attributes
    ----------
    name : str
        Keyword of the method's ``iterate`` function.
    label : str
        Human words for the panel and other user interfaces (``"iterations"`` for ``n_iter``);
        never the Python name.
    kind : {"int", "float", "bool", "choice", "str"}
    default :
        From the function's signature (``None``: "automatic", see ``help``).
    help : str
        One line: what it does.
    minimum, maximum : float, optional
        Allowed range (inclusive) of an int/float.
    choices : tuple
        Allowed values of a ``"choice"``.
    units : str
        Physical units of the value ("" for none).
    advanced : bool
        Offered on the command line but not in the panel's short form.
    flag : str
        Command-line flag (default ``--name-with-dashes``).
    """

    name: str
    kind: str
    default: object
    help: str
    label: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    units: str = ""
    advanced: bool = False
    flag: str = ""

    @property
    def optional(self) -> bool:
        """``None`` is a valid value (the method then decides, e.g. from the data)."""
        return self.default is None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class MethodSpec:
    """A reconstruction method as the CLI, the panel and the jobs see it.

    Attributes
    ----------
    name : str
        Registry key (``--method`` value).
    label : str
        Human name (menus).
    help : str
        One line.
    iterate : callable
        ``iterate(stack, **params)``: a generator of Progress returning the volume
        ``(y, x, spectral)``.
    params : tuple of ParamSpec
        The user-settable parameters, defaults from ``iterate``'s signature.
    presets : dict
        ``{name: {param: value}}``; :data:`DEFAULT_PRESET` (the library defaults) is implied.
    """

    name: str
    label: str
    help: str
    iterate: Callable
    params: tuple
    presets: dict = field(default_factory=dict)

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"method {self.name!r} has no parameter {name!r}")

    def defaults(self) -> dict:
        """``{name: default}`` of every parameter (the library's values)."""
        return {p.name: p.default for p in self.params}

    def preset_names(self) -> tuple:
        return (DEFAULT_PRESET,) + tuple(k for k in self.presets if k != DEFAULT_PRESET)

    def preset(self, name: str = DEFAULT_PRESET) -> dict:
        """Every parameter's value under preset ``name`` (the defaults, updated by the preset)."""
        if name != DEFAULT_PRESET and name not in self.presets:
            raise InputError(f"method {self.name!r}: preset must be one of {self.preset_names()}, found {name!r}")
        return {**self.defaults(), **self.presets.get(name, {})}


def param(name: str, help: str, *, label: str = "", kind: str | None = None, minimum=None, maximum=None,
          choices=(), units: str = "", advanced: bool = False, flag: str = "") -> dict:
    """What a method file says about one parameter (the default comes from the signature).

    ``label`` (human words, e.g. ``"iterations"`` for ``n_iter``) is required by :func:`register`.
    """
    return dict(name=name, help=help, label=label, kind=kind, minimum=minimum, maximum=maximum,
                choices=tuple(choices), units=units, advanced=advanced, flag=flag)


def common_params(*, batch_help: str = "channels reconstructed at once (bounds memory)") -> list[dict]:
    """The parameters every stack method shares (``batch``, ``n``, ``circle``, ``centre_offset``, ``device``)."""
    return [
        param("batch", batch_help, label="channel batch", minimum=1),
        param("n", "image size in pixels (default: the number of translations)", label="image size", kind="int",
              minimum=1, units="px", advanced=True),
        param("circle", "restrict the image to the inscribed circle", label="inscribed circle only",
              advanced=True),
        param("centre_offset", "rotation-axis offset (default: the stored geometry's, else 0)",
              label="centre offset", kind="float", units="translation steps", advanced=True),
        param("device", "torch device, e.g. cpu or cuda (default: cuda if present)", label="compute device",
              kind="str", advanced=True),
    ]


def training_params(*, epochs_help: str = "training epochs", checkpoint_help: str =
                    "checkpoint the running batch every this many epochs (0: only finished batches)") -> list[dict]:
    """The parameters every network method shares (``epochs``, ``lr``, ``seed``, ``patience``,
    ``min_lr``, ``checkpoint_every``, ``amp``)."""
    return [
        param("epochs", epochs_help, label="training epochs", minimum=1),
        param("lr", "Adam learning rate", label="learning rate", minimum=1e-7, maximum=0.1),
        param("seed", "seed of the network initialisation", label="random seed", minimum=0, advanced=True),
        param("patience", "epochs without improvement before the learning rate halves", label="patience (epochs)",
              minimum=0, advanced=True),
        param("min_lr", "learning-rate floor (training stops there)", label="lowest learning rate", minimum=0.0,
              advanced=True),
        param("checkpoint_every", checkpoint_help, label="checkpoint every", minimum=0, advanced=True),
        param("amp", "mixed precision (CUDA)", label="mixed precision", advanced=True),
    ]


def _kind_of(default, declared: str | None, choices) -> str:
    if declared is not None:
        return declared
    if choices:
        return "choice"
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    raise InputTypeError(f"cannot infer the kind of a parameter with default {default!r}; declare kind=")


def register(name: str, iterate: Callable, *, label: str, help: str, params: list, presets: dict | None = None
             ) -> MethodSpec:
    """Register a method; returns its :class:`MethodSpec`.

    Parameters
    ----------
    name : str
        Registry key.
    iterate : callable
        The stack-level generator function; its signature gives every default.
    label, help : str
        Human name and one-line description.
    params : list of dict
        From :func:`param` (and :func:`common_params`).
    presets : dict, optional
        Named sets of values a UI may start from; each value is checked against the parameter.
    """
    sig = inspect.signature(iterate).parameters
    specs = []
    for d in params:
        d = dict(d)
        if d["name"] not in sig or sig[d["name"]].default is inspect.Parameter.empty:
            raise InputTypeError(f"register({name!r}): {iterate.__name__} has no keyword {d['name']!r} with a default")
        default = sig[d["name"]].default
        kind = _kind_of(default, d.pop("kind"), d["choices"])
        if not str(d.get("label", "")).strip() or d["label"] == d["name"]:
            raise InputTypeError(f"register({name!r}): parameter {d['name']!r} needs a label in human words "
                            f"(param(..., label=...)), found {d.get('label', '')!r}")
        if kind not in _KINDS:
            raise InputError(f"register({name!r}): kind of {d['name']!r} must be one of {_KINDS}, found {kind!r}")
        specs.append(ParamSpec(kind=kind, default=default, **d))
    spec = MethodSpec(name=name, label=label, help=help, iterate=iterate, params=tuple(specs),
                      presets=dict(presets or {}))
    for pname, values in spec.presets.items():
        for k, v in values.items():
            p = spec.param(k)  # KeyError for an unknown name
            if p.choices and v not in p.choices:
                raise InputError(f"register({name!r}): preset {pname!r} sets {k}={v!r}, not in {p.choices}")
    _REGISTRY[name] = spec
    return spec


def _load_builtins():
    for mod in _BUILTIN:
        importlib.import_module(f"{__package__}.{mod}")


def methods() -> dict[str, MethodSpec]:
    """Every registered method, ``{name: MethodSpec}``: the built-in ones first, in a fixed order."""
    _load_builtins()
    order = {m: i for i, m in enumerate(_BUILTIN)}
    return dict(sorted(_REGISTRY.items(), key=lambda kv: order.get(kv[0], len(order))))


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name`` (case-insensitive); a ValueError lists the known ones."""
    known = methods()
    key = str(name).lower()
    if key not in known:
        raise InputError(f"reconstruct: method must be one of {tuple(known)}, found {name!r}")
    return known[key]
