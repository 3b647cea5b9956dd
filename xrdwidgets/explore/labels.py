"""Axis titles and window descriptions from the ``long_name``/``units`` attrs of the data model."""
from __future__ import annotations

from .. import data as _data
from ..base.errors import InputError

__all__ = ["axis_label", "axis_name", "channel_text"]


def axis_label(obj) -> str:
    """Axis title from ``long_name`` and ``units`` attrs, e.g. ``"2θ (deg)"``.

    ``obj`` is a coordinate / DataArray. Without a ``long_name`` (or with a bare dimension name as
    long_name, as files from other tools have) a known dimension gets the schema's words
    (:data:`xrdwidgets.data.LONG_NAMES`: ``tth`` → ``"2θ"``), else its ``name``; units are never
    guessed.
    """
    attrs = getattr(obj, "attrs", {}) or {}
    own = str(getattr(obj, "name", "") or "")
    name = str(attrs.get("long_name") or own)
    if name in _data.LONG_NAMES and (name == own or not attrs.get("long_name")):
        name = _data.LONG_NAMES[name]
    units = str(attrs.get("units") or "")
    return f"{name} ({units})" if units and units != "1" else name


def axis_name(obj) -> str:
    """The words of :func:`axis_label` without the units (``"2θ"`` for a ``tth`` coordinate)."""
    units = str((getattr(obj, "attrs", {}) or {}).get("units") or "")
    label = axis_label(obj)
    return label[: -len(units) - 3] if units and units != "1" and label.endswith(f" ({units})") else label


def channel_text(coord, start: int, stop: int) -> str:
    """Which channels ``[start, stop)`` of spectral coordinate ``coord`` are, in words:
    ``"2θ = 3.1 deg (channel 7)"`` or ``"Σ 2θ 3.1–3.4 deg (channels 7–12)"``."""
    n = int(coord.size)
    if not 0 <= start < stop <= n:
        raise InputError(f"channel_text: channels [{start}, {stop}) outside the {n} of {coord.name!r}")
    units = str(coord.attrs.get("units") or "")
    units = "" if units == "1" else " " + units
    a, b = float(coord.values[start]), float(coord.values[stop - 1])
    name = axis_name(coord)
    if stop - start == 1:
        return f"{name} = {a:.4g}{units} (channel {start})"
    return f"Σ {name} {min(a, b):.4g}–{max(a, b):.4g}{units} (channels {start}–{stop - 1})"
