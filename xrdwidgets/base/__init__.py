"""The base floor: what every room above uses and which imports nothing of the package.

``progress`` (the :class:`~xrdwidgets.base.progress.Progress` event every long computation
yields), ``validators`` (argument checks), ``atomic`` (atomic file writes), ``checks`` (output
folders and memory, checked before work starts) and ``errors`` (the one exception family).
"""
