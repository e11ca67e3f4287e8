"""The ``nas tiny-mlp-info`` command: what the architecture parameters of ``tiny_mlp`` range over.

A plugin command gets the parsed arguments and the :class:`nas_core.Toolkit` (plugin manager,
registries, config resolution, the engines) and returns the exit code. Errors meant for the
user are raised as ``NasError`` subclasses: ``nas`` prints them as one line.
"""

from __future__ import annotations

import argparse

from nas_core import ConfigError, Toolkit


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's own flags (``Toolkit.add_config_arguments(parser)`` would add the usual
    --space, --preset, --set, ... for a command that resolves a whole config)."""
    parser.add_argument("--nodes", type=int, help="intermediate nodes of the cell (default: the space's default)")


def run(args: argparse.Namespace, toolkit: Toolkit) -> int:
    # Built through the registry, as a run builds it: the factory and options class registered
    # under the name, whichever plugin provides it.
    entry = toolkit.registries.spaces.get("tiny_mlp")
    try:
        options = entry.options() if args.nodes is None else entry.options(nodes=args.nodes)
    except ValueError as e:  # the options class's attrs validators
        raise ConfigError(f"--nodes: {e}") from None
    spec = entry.factory(options).arch_spec()
    print(f"search space tiny_mlp (plugin {entry.plugin})")
    print(f"ops: {', '.join(spec.ops)} (zero op: {spec.zero_op})")
    for cell_type, edges in spec.edges.items():
        rows, cols = spec.shape(cell_type)
        print(f"cell {cell_type!r}: {rows} x {cols} weights, one row per edge (src -> dst):")
        for src, dst in edges:
            print(f"  {src} -> {dst}")
    return 0
