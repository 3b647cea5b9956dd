"""The command line, ``xrdwidgets COMMAND``: one module per group of commands.

``commands`` (the parser and the demo / info / methods / reconstruct / resume / app commands),
``integrate_cmd`` (``integrate``, ``demo --raw``) and ``live_cmd`` (``live``). The entry point is
:func:`xrdwidgets.cli.main`; ``python -m xrdwidgets.cli`` runs the same.
"""
from .commands import DEMO_OUT, build_parser, main

__all__ = ["DEMO_OUT", "build_parser", "main"]
