"""Build registered components from the config, checking each returns what its kind promises."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas_core.config import Component
from nas_core.registry import build

if TYPE_CHECKING:
    from nas_core.plugins import Registries


def build_space(registries: Registries, chosen: Component) -> Any:
    """The search space ``chosen`` (the ``space`` section, or the space's name with the ``network``
    options), built as ``factory(options, catalog=...)`` with the registered ops and mixed edges."""
    from nas_core.interfaces import Catalog, SearchSpace

    return build(registries.spaces, chosen, SearchSpace,
                 catalog=Catalog(registries.operations, registries.mixed_edges))
