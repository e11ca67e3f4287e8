"""The module named by this distribution's ``nas`` entry point: its ``@hookimpl`` functions
are all the toolkit ever calls. Keep it to registrations; the components live in their own modules."""

from __future__ import annotations

from collections.abc import Callable

from nas_core import hookimpl, lazy
from nas_example_plugin import info
from nas_example_plugin.options import TinyMlpOptions


@hookimpl
def nas_register_spaces(register: Callable[..., None]) -> None:
    # The options class turns into the config keys space.width and space.nodes. lazy() imports
    # the space (and torch) on first use, so `nas list` and `nas --help` stay torch-free.
    register("tiny_mlp", lazy("nas_example_plugin.tiny_mlp:TinyMlpSpace"), options=TinyMlpOptions,
             doc="one fully connected cell on flattened inputs")


@hookimpl
def nas_register_commands(register: Callable[..., None]) -> None:
    # `nas tiny-mlp-info [--nodes N]`: listed by `nas --help`, next to the built-in commands.
    register("tiny-mlp-info", info.run, configure=info.configure,
             help="print the edges and candidate ops the tiny_mlp space searches over")
