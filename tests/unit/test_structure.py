"""The package's structure, read from the source (DESIGN.md "Import boundaries"): no import cycles between
modules; following every import transitively (function-level ones included, and the package __init__ each import
runs), the library packages reach neither the run package nor the command lines, the server and the client keep
apart, and the config schema reaches nothing heavy."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
LIBRARY = ("mpu_cli.mpu", "mpu_cli.unlearn", "mpu_cli.evals", "mpu_cli.data", "mpu_cli.models")
HEAVY = ("torch", "transformers", "datasets", "accelerate", "safetensors", "pandas", "matplotlib", "scipy")


def _module(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _files() -> dict[str, Path]:
    return {_module(p): p for p in (SRC / "mpu_cli").rglob("*.py")}


def import_graph(external: bool = False) -> dict[str, set[str]]:
    """module -> the mpu_cli modules it imports anywhere in its source (lazy imports included); with `external`,
    also the top-level names of the other packages it imports (torch, hydra, ...)."""
    files = _files()
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
                elif external and n and not n.startswith("mpu_cli"):
                    deps.add(n.split(".")[0])
        graph[mod] = deps
    return graph


def closure(module: str, graph: dict[str, set[str]] | None = None) -> set[str]:
    """Everything importing `module` may import, transitively: each import also runs the __init__ of every
    package above the imported module."""
    graph = graph if graph is not None else import_graph(external=True)

    def with_parents(name: str) -> set[str]:
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & (set(graph) | {name})

    seen: set[str] = set()
    todo = list(with_parents(module) - {module}) + [module]
    while todo:
        node = todo.pop()
        for dep in graph.get(node, ()):
            for d in with_parents(dep):
                if d not in seen and d != module:
                    seen.add(d)
                    todo.append(d)
        for d in with_parents(node) - seen - {module}:
            seen.add(d)
            todo.append(d)
    return seen


def test_closure_follows_lazy_imports_and_package_inits():
    graph = {"a": {"b.c"}, "b": {"d"}, "b.c": set(), "d": {"e"}, "e": set(), "f": set()}
    assert closure("a", graph) == {"b", "b.c", "d", "e"}
    assert import_graph()["mpu_cli.run.checks"] >= {"mpu_cli.run.slots"}  # a function-level import counts


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


def test_library_packages_reach_neither_the_run_package_nor_the_command_lines():
    graph = import_graph(external=True)
    for mod in graph:
        if mod.startswith(LIBRARY):
            bad = sorted(d for d in closure(mod, graph)
                         if d.startswith(("mpu_cli.run", "mpu_cli.cli", "mpu_cli.report", "mpu_cli.audit")))
            assert not bad, (mod, bad)


def test_server_and_client_keep_apart():
    graph = import_graph(external=True)
    for mod in graph:
        reached = closure(mod, graph)
        if mod.startswith("mpu_cli.mpu"):
            assert not [d for d in reached if d.startswith(("mpu_cli.unlearn", "mpu_cli.data"))], mod
        if mod.startswith("mpu_cli.unlearn"):
            assert not [d for d in reached if d.startswith("mpu_cli.mpu")], mod
    assert not [d for d in closure("mpu_cli.cli.client", graph) if d.startswith(("mpu_cli.mpu", "mpu_cli.run"))]
    for server_party in ("mpu_cli.cli.server", "mpu_cli.transport.server"):
        assert not [d for d in closure(server_party, graph) if d.startswith(("mpu_cli.unlearn", "mpu_cli.data"))]


def test_the_config_schema_reaches_nothing_heavy():
    """The command lines compose configurations with the schema before torch is loaded."""
    reached = closure("mpu_cli.config")
    owners = ("mpu_cli.run", "mpu_cli.cli", "mpu_cli.mpu.", "mpu_cli.evals", "mpu_cli.data", "mpu_cli.report",
              "mpu_cli.audit", "mpu_cli.models.io")
    # the arm names and rules, the server's settings type: standard library only, the schema holds both; the
    # seed's keyed derivations (standard library only), which a reproduce config's client.seed resolves through
    light = ("mpu_cli.mpu.arms", "mpu_cli.mpu.settings", "mpu_cli.run", "mpu_cli.run.seed_tag")
    assert not [d for d in reached if d.startswith(owners) and d not in light], sorted(reached)
    assert not set(HEAVY) & reached, sorted(set(HEAVY) & reached)
    code = f"import sys, mpu_cli.config; print(sorted(set(sys.modules) & {set(HEAVY)!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def _calls_server_aggregate(tree: ast.AST) -> bool:
    """A call `<...>server.aggregate(...)` anywhere in the module: on a name or an attribute called server."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "aggregate":
            owner = node.func.value
            if (isinstance(owner, ast.Name) and owner.id == "server") or \
                    (isinstance(owner, ast.Attribute) and owner.attr == "server"):
                return True
    return False


def test_one_round_loop():
    """The rounds are driven in one place: nothing else calls the server's publish and aggregate in a loop."""
    callers = [_module(p) for p in (SRC / "mpu_cli").rglob("*.py") if _calls_server_aggregate(ast.parse(p.read_text()))]
    assert sorted(callers) == ["mpu_cli.run.rounds", "mpu_cli.transport.server"], callers


def test_a_benchmarks_client_data_is_asked_of_its_benchmark_object():
    """The client data encoders of each benchmark (unlearn/client.py) are imported by the benchmark modules only:
    the run, the client process and the audit ask `benchmarks.of(data).client_data`."""
    encoders = {"encode_client_data", "encode_text_client_data"}
    importers = sorted(_module(p) for p in (SRC / "mpu_cli").rglob("*.py") for node in ast.walk(ast.parse(p.read_text()))
                       if isinstance(node, ast.ImportFrom) and node.module == "mpu_cli.unlearn.client"
                       and encoders & {a.name for a in node.names})
    assert importers == ["mpu_cli.evals.muse_benchmark", "mpu_cli.evals.tofu_benchmark"], importers


def test_test_files_have_unique_basenames():
    """The test folders have no __init__.py, so pytest imports each test file by its basename: two files with the
    same name in tests/unit and tests/integration make the second one fail to collect when both layers run."""
    tests = SRC.parent / "tests"
    names = sorted(p.name for p in tests.rglob("test_*.py"))
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
