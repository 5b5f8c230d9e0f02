"""The tracer's module graph: no import cycle (TYPE_CHECKING imports included), and an app that imports
the tracer does not load the sidecar's journal reader."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "tracer"


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "candor_tracer").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):  # every import, also under `if TYPE_CHECKING:`
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("candor_tracer."):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("candor_tracer."))
        graph[module] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        for dep in sorted(graph.get(module, ())):
            found = visit(dep, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return None


def test_the_graph_is_read_from_the_tree() -> None:
    graph = _imports()
    assert "candor_tracer.journal.writer" in graph["candor_tracer.journaling"]
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_tracer_modules_import_each_other_without_a_cycle() -> None:
    assert _cycle(_imports()) is None


def test_an_app_importing_the_tracer_does_not_load_the_journal_reader() -> None:
    code = ("import sys, candor_tracer; from candor_tracer import trace;"
            "print(sorted(m for m in sys.modules if m.startswith('candor_tracer.journal.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT)}).stdout
    assert "candor_tracer.journal.writer" in out
    assert "reader" not in out and "decode" not in out and "archive" not in out
    assert "files" not in out and "skips" not in out
