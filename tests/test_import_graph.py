"""No product module imports, even lazily, a module that leads back to it: each package reads
from the bottom up (services, then the worker or the edge, then the CLI)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("services", "agent_worker", "gateway_edge", "clawgate")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in (REPO_ROOT / package).rglob("*.py")
        if not path.name.endswith(("_pb2.py", "_pb2_grpc.py"))
    }


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Every product module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            named = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            named = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in named if name in known)
    return found


def test_the_product_has_no_import_circles() -> None:
    modules = product_modules()
    assert "services.config" in modules and "gateway_edge.serving" in modules
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as circle:
        pytest.fail(f"import circle: {' -> '.join(circle.args[1])}")


def test_the_turn_driver_imports_no_dialect() -> None:
    modules = product_modules()
    for driver in ("gateway_edge.serving", "gateway_edge.turn_setup", "gateway_edge.turn_input"):
        dialects = {m for m in imports_of(modules[driver], modules) if ".dialects" in m}
        assert not dialects, f"{driver} imports {dialects}"
