"""Re-export of :mod:`xrdwidgets.progress` (``Progress``, ``run_to_end``), which lives below both
``recon`` and ``jobs``; ``from xrdwidgets.recon.base import Progress`` keeps working."""
from ..progress import Progress, run_to_end

__all__ = ["Progress", "run_to_end"]
