"""The one exception family of xrdwidgets. Imports nothing of the package.

Every error the package raises on purpose is an :class:`XrdwidgetsError`, so
``except xrdwidgets.base.errors.XrdwidgetsError`` catches all of them, and each is also the
built-in type a Python user expects, so ``except ValueError`` keeps working:

==========================  ===========================================  =========================
class                       raised when                                  also a
==========================  ===========================================  =========================
:class:`InputError`         an argument has a bad value, shape or dims    ``ValueError``
:class:`InputTypeError`     an argument has the wrong type                ``TypeError`` *and*
                                                                          ``ValueError``
:class:`DataError`          data do not fit the data model               ``ValueError``
:class:`DataTooLargeError`  data too large to load into memory           ``MemoryError``,
                                                                          ``ValueError``
:class:`FileFormatError`    a file cannot be read as XRD-CT data         ``OSError``,
                                                                          ``ValueError``
:class:`StateError`         stored state (a checkpoint, a work folder,   ``ValueError``
                            a result store) does not match the request
:class:`BusyError`          a resource (work folder, port) is taken      ``OSError``
:class:`UnsafeError`        a request would leave the data root or       ``PermissionError``
                            break a limit of the served app
==========================  ===========================================  =========================

The same misuse raises the same class everywhere: a wrong *type* (a list where a dict is
expected, a number where a path is expected) is an :class:`InputTypeError`; a wrong *value*
(out of range, wrong shape, an unknown name) is an :class:`InputError`. Because
:class:`InputTypeError` is both a ``TypeError`` and a ``ValueError``, code that catches
``ValueError`` around a call catches every misuse of that call.
"""
from __future__ import annotations

__all__ = ["XrdwidgetsError", "InputError", "InputTypeError", "DataError", "DataTooLargeError",
           "FileFormatError", "StateError", "BusyError", "UnsafeError"]


class XrdwidgetsError(Exception):
    """Root of every exception xrdwidgets raises on purpose."""


class InputError(XrdwidgetsError, ValueError):
    """An argument has a bad value, shape or dims; the message names the function, the argument,
    what is expected and what was found."""


class InputTypeError(InputError, TypeError):
    """An argument has the wrong type (also a ``ValueError``: the same misuse is caught alike)."""


class DataError(InputError):
    """Data do not fit the data model; the message names what and where."""


class DataTooLargeError(InputError, MemoryError):
    """Data too large to load into memory (also a ``ValueError``: the request cannot be met)."""


class FileFormatError(XrdwidgetsError, OSError, ValueError):
    """A file cannot be read as XRD-CT data; the message names the file, what and where.

    Both an ``OSError`` (it is about a file) and a ``ValueError`` (its contents are wrong), so
    either ``except`` clause catches it.
    """


class StateError(XrdwidgetsError, ValueError):
    """Stored state (a checkpoint, a work folder, a result store) is damaged or belongs to another
    computation; the message names the place and the difference."""


class BusyError(XrdwidgetsError, OSError):
    """A resource is taken (a work folder locked by another job, a port in use)."""


class UnsafeError(XrdwidgetsError, PermissionError):
    """A request would reach outside the data root or break a limit of the served app."""
