"""The package's import graph, read from the source with ``ast`` (DESIGN.md §1, §3.12):
no module imports itself through others (a cycle), and the ML core — ``sae``,
``activations``, ``training``, ``features``, what a researcher imports in a notebook —
imports none of the service layers (``api``, ``store``, ``jobs``, the settings, the CLI)
nor their frameworks.

Every import counts: at module top, inside functions (a lazy import is still a
dependency) and under ``TYPE_CHECKING`` (so is a type).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "saestudio"
CORE = ("sae", "activations", "training", "features")
SERVICE = ("saestudio.api", "saestudio.store", "saestudio.jobs", "saestudio.settings",
           "saestudio.cli")  # fmt: skip
FRAMEWORKS = ("fastapi", "starlette", "sqlalchemy", "alembic", "celery", "kombu", "redis",
              "uvicorn", "pydantic_settings")  # fmt: skip


def module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> list[tuple[str, int]]:
    """Every module ``path`` (module ``name``) imports, with the line, absolute and
    relative; ``from pkg import sub`` is listed as ``pkg.sub`` (the caller decides
    whether that is a module or a name in ``pkg``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """module → {module of the package it imports: line}."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        edges: dict[str, int] = {}
        for target, line in imports_of(path, name):
            # the longest prefix that is one of our modules: `from a.b import c` is a.b.c
            # when c is a module, else a.b (c is a name in it)
            parts = target.split(".")
            while parts and ".".join(parts) not in files:
                parts.pop()
            dep = ".".join(parts)
            if dep and dep != name:
                edges.setdefault(dep, line)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), each as
    one cycle through it, so the failure names a path to break."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, set(comp)) for comp in components]


def _cycle_in(graph: dict[str, dict[str, int]], comp: set[str]) -> list[str]:
    """One cycle through the component: follow edges inside it from its first module."""
    start = min(comp)
    path, seen = [start], {start}
    while True:
        nxt = min(w for w in graph[path[-1]] if w in comp)
        if nxt in seen:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)
        seen.add(nxt)


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return (
        " → ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False))
        + f" → {cycle[-1]}"
    )


def test_no_import_cycles() -> None:
    graph = import_graph(ROOT)
    assert len(graph) > 50  # the walk found the package
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(describe(graph, c) for c in cycles)


def test_core_layers_import_no_service_layer() -> None:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path, ROOT)
        if name.split(".")[1:2] and name.split(".")[1] in CORE:
            for target, line in imports_of(path, name):
                top = target.split(".")[0]
                if target.startswith(SERVICE) or top in FRAMEWORKS:
                    bad.append(f"{name} line {line}: imports {target}")
    assert not bad, "the ML core imports a service layer:\n" + "\n".join(sorted(set(bad)))


def test_the_check_sees_a_planted_cycle_and_a_planted_layer_import(tmp_path: Path) -> None:
    """The walk itself: a cycle through a lazy import and a relative import is found."""
    pkg = tmp_path / "saestudio"
    (pkg / "sae").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sae" / "__init__.py").write_text("")
    (pkg / "sae" / "a.py").write_text("from saestudio.sae import b\n")
    (pkg / "sae" / "b.py").write_text("def f():\n    from .a import x\n")
    (pkg / "sae" / "c.py").write_text("from saestudio.sae.a import y\n")
    graph = import_graph(pkg)
    assert graph["saestudio.sae.c"] == {"saestudio.sae.a": 1}
    assert find_cycles(graph) == [["saestudio.sae.a", "saestudio.sae.b", "saestudio.sae.a"]]


def _loaded_after(code: str) -> list[str]:
    """torch, numpy and saestudio modules loaded by ``code`` in a fresh interpreter."""
    probe = (
        f"{code}; import sys; print(' '.join(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('torch', 'numpy', 'saestudio'))))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return run.stdout.split()


def test_importing_the_configs_imports_no_torch_and_no_architecture() -> None:
    """Validating a config (the API's /validate, the CLI's flags) stays cheap: the
    defaults it resolves with live in the torch-free ``sae.defaults``."""
    out = _loaded_after(
        "import saestudio.training.config, saestudio.activations.config, saestudio.demo"
    )
    assert set(out) <= {
        "saestudio",
        "saestudio._lazy",
        "saestudio.activations",
        "saestudio.activations.config",
        "saestudio.demo",
        "saestudio.sae",
        "saestudio.sae.config",
        "saestudio.sae.defaults",
        "saestudio.training",
        "saestudio.training.config",
    }, out


def test_the_command_line_parser_loads_no_torch() -> None:
    """``saestudio <command> --help`` builds every subparser: it must not wait for torch."""
    out = _loaded_after("from saestudio.cli import build_parser; build_parser()")
    assert "saestudio.cli.train" in out and "saestudio.cli.extract" in out
    assert not [m for m in out if m.startswith(("torch", "numpy"))], out


@pytest.mark.parametrize("name", ["standard", "topk", "jumprelu", "skip", "transcoder"])
def test_every_architecture_has_a_builder_and_defaults(name: str) -> None:
    from saestudio.sae.config import ARCHITECTURES
    from saestudio.sae.defaults import DEFAULTS
    from saestudio.sae.registry import REGISTRY

    assert set(REGISTRY) == set(DEFAULTS) == set(ARCHITECTURES)
    assert name in REGISTRY
