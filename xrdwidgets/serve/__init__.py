"""The served app: the Voila app server (``appserver``: launch, the data folder, the demo cache,
lifecycle) and its guards (``guarded_voila``: websocket protocol and message checks, kernel caps,
culling).

What a visitor names — paths confined to the data root, uploads checked, exports into
``results/`` — is checked by :mod:`xrdwidgets.base.safety`, below every room, because the same
checks hold for the widgets in a notebook and for the core's exports. Nothing below the surfaces
imports this room, and the widgets do not either.
"""
