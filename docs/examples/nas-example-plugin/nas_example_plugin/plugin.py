"""The module named by this distribution's ``nas`` entry point: its ``@hookimpl`` functions
are all the toolkit ever calls. Keep it to registrations; the space lives in its own module."""

from __future__ import annotations

from collections.abc import Callable

from nas_core.hookspecs import hookimpl
from nas_example_plugin.tiny_mlp import TinyMlpOptions, TinyMlpSpace


@hookimpl
def nas_register_spaces(register: Callable[..., None]) -> None:
    # The options class turns into the config keys space.width and space.nodes.
    register("tiny_mlp", TinyMlpSpace, options=TinyMlpOptions)
