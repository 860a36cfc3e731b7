"""The package's import graph has no circles: no dnas module imports (even lazily, inside a
function) one that imports it back, and the library never imports the command line."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "dnas"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The dnas modules ``path`` imports anywhere in its body (``from dnas import x`` counts as
    ``dnas.x`` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m in modules} - {module_name(path)}


def graph() -> dict[str, set[str]]:
    files = sorted(ROOT.rglob("*.py"))
    modules = {module_name(f) for f in files}
    # A package's __init__ is the package itself: importing dnas.x.y also runs dnas.x.
    return {module_name(f): imports_of(f, modules) - {"dnas"} for f in files}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert cycles(graph()) == []


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_the_command_line():
    for path in ROOT.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "dnas_cli" not in text, path


def test_low_floors_never_import_high_ones():
    """name -> spec -> cost -> module -> trial -> study -> report: the core knows nothing of
    the search, the training loop or the report."""
    g = graph()
    core = ["dnas.spec", "dnas.names", "dnas.cost", "dnas.budget", "dnas.densenet", "dnas.wrn"]
    high = {"dnas.search", "dnas.worker", "dnas.local_workers", "dnas.summary", "dnas.trial",
            "dnas.study", "dnas.train", "dnas.report"}  # fmt: skip
    for m in core:
        reach, todo = set(), [m]
        while todo:
            for w in g.get(todo.pop(), ()):
                if w not in reach:
                    reach.add(w)
                    todo.append(w)
        assert not reach & high, (m, reach & high)
