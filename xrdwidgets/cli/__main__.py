"""``python -m xrdwidgets.cli``: the same as the ``xrdwidgets`` command."""
import sys

from .commands import main

sys.exit(main())
