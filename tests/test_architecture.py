"""The package's shape: an acyclic import graph whose arrows follow the layers.

The graph is read from the source with ``ast``: every ``import`` of a ``gridrl`` module,
at module level and inside functions (a function-level import still ties two modules
together; it only hides a cycle from the interpreter). Layers (DESIGN.md, section 2)::

    base (gridrl, errors, io, config, calendar, scenario)
      <- data <- forecast <- env <- agents <- experiments
    base <- export <- integrations            (torch-free runtime side)
    cli                                        (imports anything; nothing imports it)

``export`` and ``integrations`` never import training code (agents, experiments).
The decision path a scheduler runs (manifest, runtime, HTTP service, Slurm adapter)
loads no torch, stable-baselines3, sb3-contrib or ``gridrl.env``: its module-level
import closure is checked here and in a fresh interpreter. Two modules are outside that
path on purpose: ``export.onnx_export`` (with ``export.bundle``, which calls it) needs
torch to trace the trained network into ONNX, and ``integrations.replay`` (with its job
loader) re-simulates the site offline, so it may use the env's physics.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

import gridrl
from gridrl.errors import GridrlError

PACKAGE_DIR = Path(gridrl.__file__).resolve().parent
BASE = frozenset(
    {"gridrl", "gridrl.errors", "gridrl.io", "gridrl.config", "gridrl.calendar", "gridrl.scenario"}
)
CORE_LAYERS = ("data", "forecast", "env", "agents", "experiments")  # lower first
TORCH = frozenset({"torch", "stable_baselines3", "sb3_contrib"})
# Writers that need torch: export a trained SB3 network (not on the decision path).
ONNX_WRITERS = frozenset({"gridrl.export.onnx_export", "gridrl.export.bundle"})
# Offline re-simulation of a trace: may read data sets and use the env's physics.
OFFLINE_REPLAY = frozenset({"gridrl.integrations.replay", "gridrl.integrations.replay_jobs"})


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (a module name) at ``line``; ``deferred``: in a function."""

    source: str
    target: str
    line: int
    deferred: bool


def module_name(path: Path, root: Path) -> str:
    """Dotted name of a source file under ``root`` (the folder that holds ``gridrl/``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _targets(node: ast.Import | ast.ImportFrom, source: str, is_pkg: bool,
             known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative import: resolve against the importing package
        package = source.split(".") if is_pkg else source.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    # ``from pkg import mod`` imports the module ``pkg.mod``; ``from mod import name`` mod
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def import_edges(files: dict[str, tuple[str, bool]]) -> list[Edge]:
    """Every import in ``files`` (module name -> (source text, is a package __init__))."""
    known = set(files)
    edges: list[Edge] = []

    def visit(nodes: Iterable[ast.AST], module: str, is_pkg: bool, deferred: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                # the body is for annotations only, never run
                visit(node.orelse, module, is_pkg, deferred)
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, module, is_pkg, known):
                    edges.append(Edge(module, target, node.lineno, deferred))
            inner = deferred or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(ast.iter_child_nodes(node), module, is_pkg, inner)

    for module, (text, is_pkg) in files.items():
        visit(ast.parse(text).body, module, is_pkg, False)
    return edges


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def package_files(root: Path = PACKAGE_DIR.parent) -> dict[str, tuple[str, bool]]:
    """The ``gridrl`` sources under ``root``: module name -> (text, is a package)."""
    return {
        module_name(p, root): (p.read_text(), p.name == "__init__.py")
        for p in sorted((root / "gridrl").rglob("*.py"))
    }


def internal_graph(edges: Iterable[Edge]) -> dict[str, set[str]]:
    """Module -> the gridrl modules it imports (module-level and deferred alike)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set())
        if _is_gridrl(e.target) and e.target != e.source:
            graph[e.source].add(e.target)
    return graph


def _is_gridrl(name: str) -> bool:
    return name == "gridrl" or name.startswith("gridrl.")


def find_cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[frozenset[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def layer(module: str) -> str:
    """``base``, a core layer name, ``export``, ``integrations`` or ``cli``."""
    if module in BASE:
        return "base"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "base"


def allowed_layers(module: str) -> set[str]:
    """The layers ``module`` may import from."""
    own = layer(module)
    if own == "cli":
        return {"base", *CORE_LAYERS, "export", "integrations"}
    if own == "base":
        return {"base"}
    if own in CORE_LAYERS:
        return {"base", *CORE_LAYERS[: CORE_LAYERS.index(own) + 1]}
    if own == "export":
        return {"base", "export"}
    if module in OFFLINE_REPLAY:
        return {"base", "data", "forecast", "env", "export", "integrations"}
    return {"base", "export", "integrations"}


def layer_violations(edges: Iterable[Edge]) -> list[str]:
    """Every gridrl import against the layers, as ``source:line -> target``."""
    bad = []
    for e in edges:
        if not _is_gridrl(e.target) or e.target == e.source:
            continue
        if layer(e.target) == "cli" or layer(e.target) not in allowed_layers(e.source):
            bad.append(f"{e.source}:{e.line} -> {e.target}")
    return bad


def module_level_closure(edges: Iterable[Edge], start: str) -> dict[str, str]:
    """Every module (gridrl or external top-level) that importing ``start`` loads,
    following module-level imports only: name -> the gridrl module that imports it."""
    by_source: dict[str, list[Edge]] = {}
    for e in edges:
        if not e.deferred:
            by_source.setdefault(e.source, []).append(e)
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        module = todo.pop()
        for e in by_source.get(module, ()):
            name = e.target if _is_gridrl(e.target) else e.target.split(".")[0]
            if name not in seen:
                seen[name] = f"{e.source}:{e.line}"
                todo.append(name)
    return seen


def decision_path_modules(files: Iterable[str]) -> list[str]:
    """Export and integrations modules a scheduler or the HTTP service may load."""
    return sorted(
        m for m in files
        if layer(m) in ("export", "integrations") and m not in ONNX_WRITERS | OFFLINE_REPLAY
    )


# ---------------------------------------------------------------- the package itself

FILES = package_files()
EDGES = import_edges(FILES)


def test_graph_sees_module_and_function_level_imports() -> None:
    """The reader finds both kinds of import (else the checks below would pass vacuously)."""
    cli = {e.target for e in EDGES if e.source == "gridrl.cli" and e.deferred}
    assert "gridrl.experiments.runner" in cli
    runtime = {e.target for e in EDGES if e.source == "gridrl.export.runtime"}
    assert {"gridrl.export.manifest", "onnxruntime"} <= runtime
    assert len(FILES) > 80 and len(EDGES) > 400


def test_no_import_cycles() -> None:
    cycles = sorted(sorted(c) for c in find_cycles(internal_graph(EDGES)))
    assert not cycles, f"import cycles: {cycles}"


def test_imports_follow_the_layers() -> None:
    assert layer_violations(EDGES) == []


def test_nothing_imports_the_cli() -> None:
    assert [e for e in EDGES if e.target == "gridrl.cli"] == []


@pytest.mark.parametrize("module", decision_path_modules(FILES))
def test_decision_path_loads_no_torch_and_no_env(module: str) -> None:
    closure = module_level_closure(EDGES, module)
    forbidden = {
        name: where for name, where in closure.items()
        if name in TORCH or (_is_gridrl(name) and layer(name) in ("env", "agents", "experiments"))
    }
    assert forbidden == {}, f"{module} loads {forbidden} (name: imported at)"


def test_replay_and_onnx_writer_load_no_training_code() -> None:
    for module in sorted(OFFLINE_REPLAY):
        closure = module_level_closure(EDGES, module)
        assert not TORCH & set(closure), module
    for module in sorted(ONNX_WRITERS):
        closure = module_level_closure(EDGES, module)
        assert not {m for m in closure if _is_gridrl(m) and layer(m) in ("agents", "experiments")}


def test_decision_path_in_a_fresh_interpreter() -> None:
    """What the interpreter really loads (lazy package attributes included)."""
    code = (
        "import sys\n"
        "import gridrl.export.runtime, gridrl.integrations.http_service\n"
        "import gridrl.integrations.slurm, gridrl.integrations.slurm_observation\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted(TORCH)!r} or m == 'gridrl.env' or m.startswith('gridrl.env.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE_DIR.parent)
    assert out.stdout.strip() == ""


def test_every_exception_class_derives_from_gridrl_error() -> None:
    found = []
    for module, (text, _) in FILES.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.bases:
                found.append((module, node.name))
    exceptions = []
    for module, name in found:
        cls = getattr(importlib.import_module(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            exceptions.append(cls)
            assert issubclass(cls, GridrlError), f"{module}.{name} does not derive GridrlError"
    assert len(exceptions) >= 15  # the scan found the package's errors


# ---------------------------------------------------------------- the checks themselves


def _synthetic(sources: dict[str, str]) -> list[Edge]:
    files = {name: (text, False) for name, text in sources.items()}
    return import_edges(files)


def test_a_planted_cycle_is_found_even_through_a_function_level_import() -> None:
    edges = _synthetic({
        "gridrl.agents.a": "from gridrl.agents.b import f\n",
        "gridrl.agents.b": "def f():\n    from gridrl.agents.c import g\n",
        "gridrl.agents.c": "import gridrl.agents.a\n",
        "gridrl.agents.d": "from gridrl.agents.a import x\n",
    })  # fmt: skip
    assert find_cycles(internal_graph(edges)) == [
        frozenset({"gridrl.agents.a", "gridrl.agents.b", "gridrl.agents.c"})
    ]


def test_type_checking_imports_are_not_edges() -> None:
    edges = _synthetic({
        "gridrl.env.a": "from typing import TYPE_CHECKING\n"
                        "if TYPE_CHECKING:\n    from gridrl.agents.b import B\n",
    })  # fmt: skip
    assert [e.target for e in edges] == ["typing"]


def test_planted_layer_violations_are_reported() -> None:
    edges = _synthetic({
        "gridrl.env.a": "def f():\n    from gridrl.agents.registry import REFERENCES\n",
        "gridrl.export.b": "from gridrl.env.layout import ObservationLayout\n",
        "gridrl.integrations.c": "from gridrl.agents.train import load_policy\n",
        "gridrl.scenario": "from gridrl.data.signals import Signals\n",
        "gridrl.experiments.d": "from gridrl.agents.registry import REFERENCES\n",
    })  # fmt: skip
    assert layer_violations(edges) == [
        "gridrl.env.a:2 -> gridrl.agents.registry",
        "gridrl.export.b:1 -> gridrl.env.layout",
        "gridrl.integrations.c:1 -> gridrl.agents.train",
        "gridrl.scenario:1 -> gridrl.data.signals",
    ]


def test_closure_follows_module_level_imports_only() -> None:
    edges = _synthetic({
        "gridrl.export.a": "import gridrl.export.b\n",
        "gridrl.export.b": "import numpy\ndef f():\n    import torch\n",
        "gridrl.export.c": "from gridrl.export.b import x\nimport stable_baselines3.common\n",
    })  # fmt: skip
    assert set(module_level_closure(edges, "gridrl.export.a")) == {"gridrl.export.b", "numpy"}
    assert "stable_baselines3" in module_level_closure(edges, "gridrl.export.c")
