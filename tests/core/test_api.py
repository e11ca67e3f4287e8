"""The public API is the plugin contract: plugins import only ``nas_core`` itself, the core
modules form no import cycle, and importing the package costs no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nas_core

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "nas_core"


def core_imports() -> dict[str, set[str]]:
    """module -> the core modules it imports (anywhere, functions included; not TYPE_CHECKING blocks)."""
    graph = {}
    for path in CORE.glob("*.py"):
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for n in ast.walk(node)}
        deps = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nas_core"):
                if node.module == "nas_core":
                    deps |= {f"nas_core.{a.name}" for a in node.names if (CORE / f"{a.name}.py").exists()}
                else:
                    deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("nas_core.")}
        graph[f"nas_core.{path.stem}"] = deps - {f"nas_core.{path.stem}"}
    return graph


def test_core_modules_form_no_import_cycle():
    graph = core_imports()
    assert len(graph) > 10
    done, visiting = set(), []

    def visit(module: str) -> None:
        if module in visiting:
            cycle = visiting[visiting.index(module):] + [module]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if module in done:
            return
        visiting.append(module)
        for dep in sorted(graph.get(module, ())):
            visit(dep)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_plugins_import_only_the_public_api():
    sources = [*ROOT.glob("plugins/**/*.py"), *ROOT.glob("docs/examples/**/*.py")]
    assert len(sources) > 10
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                assert not name.startswith("nas_core."), f"{path.relative_to(ROOT)} imports {name}"


def test_every_exported_name_resolves():
    for name in nas_core.__all__:
        assert getattr(nas_core, name) is not None, name
    for name in ("Task", "SearchSpace", "Relaxation", "BilevelOptimizer", "Discretizer", "Trainer", "Evaluator",
                 "RunContext", "hookimpl", "Genotype", "NasError", "Toolkit"):
        assert name in nas_core.__all__


def test_importing_the_package_and_hooks_loads_no_torch():
    code = "import nas_core, nas_core.hookspecs, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_listing_commands_load_no_torch():
    """`nas list`, `nas plugins` and `nas --help` with every installed plugin: registration is lazy."""
    code = ("import sys, contextlib, io\nfrom nas_core import cli\n"
            "for args in (['list'], ['plugins'], ['--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        cli.main(args)\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'sklearn', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
