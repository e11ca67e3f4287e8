"""An example third-party plugin for the nas toolkit; see docs/writing-a-plugin.md."""

__version__ = "0.1.0"
