"""The config keys of the plugin's components. This module imports no torch: the plugin module
imports it to register the options, and every ``nas`` command loads every plugin module, so
``nas list`` stays quick (the space itself is imported only when a run builds it)."""

from __future__ import annotations

import attrs


@attrs.frozen
class TinyMlpOptions:
    """The config keys of the space: ``--set space.width=64``, ``--set space.nodes=4``."""

    width: int = attrs.field(default=32, validator=attrs.validators.ge(1))  # features of every node
    nodes: int = attrs.field(default=3, validator=attrs.validators.ge(1))  # intermediate nodes (supernet)
