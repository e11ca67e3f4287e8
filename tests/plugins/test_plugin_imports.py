"""Every built-in plugin of a method is written against the contract a third-party package has:
``nas_core``'s exports, plus only the documented public bases of the DARTS plugin where a method
extends DARTS's optimizer or edge (docs/writing-a-plugin.md, section 15). And registering a plugin
(what every ``nas`` command does first) imports no torch."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import nas_core

#: the documented public bases of nas_darts, and what each plugin may import of them
OPTIMIZER_BASE = {"nas_darts.architect": {"DartsOptimizer"}, "nas_darts.options": {"DartsOptions"}}
EDGE_BASE = {"nas_darts.edges": {"WeightedSumEdge"}}
PLUGINS = {
    "nas_pcdarts": {}, "nas_gdas": {}, "nas_drnas": {}, "nas_fairdarts": {}, "nas_nb201": {},
    "nas_darts_minus": EDGE_BASE, "nas_sdarts": {}, "nas_robust_darts": {}, "nas_darts_pt": {},
    "nas_pdarts": {**OPTIMIZER_BASE, **EDGE_BASE}, "nas_snas": OPTIMIZER_BASE, "nas_oles": OPTIMIZER_BASE,
    "nas_lambda_darts": OPTIMIZER_BASE, "nas_op_pruning": {}, "nas_resource": {},
}


@pytest.mark.parametrize("package", sorted(PLUGINS))
def test_the_plugin_imports_only_nas_core_exports_and_registers_without_torch(package):
    allowed = PLUGINS[package]
    for path in Path(importlib.import_module(package).__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nas"):
                names = {a.name for a in node.names}
                if node.module == "nas_core":
                    assert names <= set(nas_core.__all__), (path.name, names - set(nas_core.__all__))
                elif node.module in allowed:
                    assert names <= allowed[node.module], (path.name, node.module, names)
                else:
                    assert node.module.startswith(package), (path.name, node.module)
    code = f"import sys, {package}.plugin; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
