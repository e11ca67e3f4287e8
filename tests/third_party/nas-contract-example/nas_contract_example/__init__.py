"""A third-party plugin built on nas_core's exports alone: one module per extension point."""
