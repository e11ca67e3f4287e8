"""nas: a plugin-based neural architecture search toolkit.

The interfaces in :mod:`nas_core.interfaces` and the hooks in :mod:`nas_core.hookspecs` are the
map of the system; everything algorithm-specific arrives through plugins.
"""

__version__ = "0.1.0"
