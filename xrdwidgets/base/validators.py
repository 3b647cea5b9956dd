"""The one set of argument validators: an int or a float within bounds, else a clear InputError (a ValueError).

Every public function checks its numeric arguments with these, so a bad value fails at the call
that passed it, with a message naming the function, the argument, what is expected and what was
found (``"iterate_tv: n_iter must be an integer >= 1, found 0"``). Imports nothing of the package.
"""
from __future__ import annotations

import math
import numbers

from .errors import InputError

__all__ = ["check_int", "check_float"]


def _where(caller: str, name: str) -> str:
    return f"{caller}: {name}" if caller else name


def check_int(caller: str, name: str, value, minimum: int | None = 1, *, maximum: int | None = None) -> int:
    """``value`` as an int within ``[minimum, maximum]``; an InputError (a ValueError) naming ``caller``/``name`` otherwise.

    Integral floats (``3.0``) are accepted; bools, strings and fractions are not. ``caller`` ""
    leaves the function name out of the message.
    """
    bound = "" if minimum is None else f" >= {minimum}"
    if maximum is not None:
        bound += (" and" if bound else "") + f" <= {maximum}"
    if isinstance(value, bool) or type(value).__name__ == "bool_" or not isinstance(value, numbers.Integral):
        if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                and float(value).is_integer()):
            raise InputError(f"{_where(caller, name)} must be an integer{bound}, found {value!r}")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise InputError(f"{_where(caller, name)} must be an integer{bound}, found {v}")
    return v


def check_float(caller: str, name: str, value, *, minimum: float | None = None, strict: bool = False,
                maximum: float | None = None, allow_inf: bool = False) -> float:
    """``value`` as a float within the bounds (``> minimum`` when ``strict``, ``< maximum``),
    finite unless ``allow_inf``; else an InputError (a ValueError) naming ``caller``/``name`` (``""``: no caller)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{_where(caller, name)} must be a finite number, found {value!r}") from None
    bound = ""
    if minimum is not None:
        bound = f" {'>' if strict else '>='} {minimum}"
    if maximum is not None:
        bound += (" and" if bound else "") + f" < {maximum}"
    bad = math.isnan(v) or (math.isinf(v) and not allow_inf)
    bad |= minimum is not None and (v <= minimum if strict else v < minimum)
    bad |= maximum is not None and v >= maximum
    if bad:
        what = "a number" + (" (or inf)" if allow_inf else "") if allow_inf else "a finite number"
        raise InputError(f"{_where(caller, name)} must be {what}{bound}, found {value!r}")
    return v
