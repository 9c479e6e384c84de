"""The package's structure, read from the source: no import cycles between modules, the library packages
import nothing from the run package or the command lines, the server and the client keep apart."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LIBRARY = ("mpu_cli.mpu", "mpu_cli.unlearn", "mpu_cli.evals", "mpu_cli.data", "mpu_cli.models")


def _module(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the mpu_cli modules it imports anywhere in its source (lazy imports included)."""
    files = {_module(p): p for p in (SRC / "mpu_cli").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps = set()
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                if n in files and n != mod:
                    deps.add(n)
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = import_graph()
    # a package's __init__ re-exporting its own modules is not a cycle of the code
    graph = {m: {d for d in deps if not (m.startswith(d + ".") and d.count(".") < m.count("."))}
             for m, deps in graph.items()}
    assert _cycles(graph) == []


def test_library_packages_import_neither_the_run_package_nor_the_command_lines():
    for mod, deps in import_graph().items():
        if mod.startswith(LIBRARY):
            bad = [d for d in deps if d.startswith(("mpu_cli.run", "mpu_cli.cli", "mpu_cli.report", "mpu_cli.audit"))]
            assert not bad, (mod, bad)


def test_server_and_client_keep_apart():
    graph = import_graph()
    for mod, deps in graph.items():
        if mod.startswith("mpu_cli.mpu"):
            assert not [d for d in deps if d.startswith(("mpu_cli.unlearn", "mpu_cli.data"))], mod
        if mod.startswith("mpu_cli.unlearn"):
            assert not [d for d in deps if d.startswith("mpu_cli.mpu")], mod
    assert not [d for d in graph["mpu_cli.cli.client"] if d.startswith(("mpu_cli.mpu", "mpu_cli.run"))]
    for server_party in ("mpu_cli.cli.server", "mpu_cli.transport.server"):
        assert not [d for d in graph[server_party] if d.startswith(("mpu_cli.unlearn", "mpu_cli.data"))]


def test_one_round_loop():
    """The rounds are driven in one place: nothing else calls the server's publish and aggregate in a loop."""
    callers = []
    for path in (SRC / "mpu_cli").rglob("*.py"):
        if "server.aggregate(" in path.read_text():
            callers.append(_module(path))
    assert sorted(callers) == ["mpu_cli.run.rounds", "mpu_cli.transport.server"], callers
