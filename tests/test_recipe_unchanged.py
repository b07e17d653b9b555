"""Splitting main.py into the recipe and its plumbing changed no behaviour, and the module graph stays a tree of
arrows pointing down.

1. tests/data/recipe_cpu_small_curve.json holds the curve of a short cpu-small run recorded
   with main.py as it was before the split (its commit and main.py blob are in the file). The
   test reruns the same command and requires every logged value to be equal: with one CPU
   thread the run is deterministic (two runs of it gave bit-identical values), so no tolerance.
2. No import cycles among the repository's own modules (imports parsed with ast, lazy ones
   inside functions included), and main.py imports neither grid nor plots.
"""
from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "recipe_cpu_small_curve.json"


@pytest.mark.slow
@pytest.mark.slow  # ~30 s; the first run on a machine also tokenizes the books corpus into data_cache/
def test_cpu_small_run_writes_the_recorded_curve(tmp_path):
    reference = json.loads(FIXTURE.read_text())
    data_dir = REPO / reference["command"][reference["command"].index("--data-dir") + 1]
    tiktoken_dir = REPO / reference["env"]["TIKTOKEN_CACHE_DIR"]
    if not (data_dir.is_dir() and tiktoken_dir.is_dir()):
        pytest.skip(f"offline data not found at {data_dir} and {tiktoken_dir}")
    env = dict(os.environ, OMP_NUM_THREADS=reference["env"]["OMP_NUM_THREADS"],
               TIKTOKEN_CACHE_DIR=str(tiktoken_dir))
    command = [sys.executable] + reference["command"] + [reference["out_flag"], str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    log = json.loads((tmp_path / "ref.json").read_text())
    assert len(log["curve"]) == len(reference["curve"])
    for got, want in zip(log["curve"], reference["curve"]):
        assert {key: got[key] for key in want} == want, f"curve point at {want['tokens']} tokens differs"
    assert log["summary"]["final_eval"] == reference["summary_final_eval"]


# ----------------------------------------------------------------------------------------
# The import graph

SKIPPED_FOLDERS = {".git", "runs", "data_cache", "__pycache__", ".ci"}


def repo_modules() -> dict[str, Path]:
    """Module name -> file for every .py file of the repository. Files in a package (a folder
    with __init__.py) get dotted names; scripts in other folders (tests/, experiments/) are
    named by their path and import one another by their bare stem (tests' sys.path)."""
    modules = {}
    for path in sorted(REPO.rglob("*.py")):
        parts = path.relative_to(REPO).parts
        if SKIPPED_FOLDERS & set(parts[:-1]):
            continue
        stem = [*parts[:-1], path.stem]
        if stem[-1] == "__init__":
            stem = stem[:-1]
        modules[".".join(stem)] = path
    return modules


def imported_names(path: Path, module: str, is_package: bool) -> set[str]:
    """Every module name the file imports, anywhere in it, relative imports made absolute;
    `from a import b` names both a and a.b (b may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@functools.cache  # three tests read it; parsing every file takes about a second
def import_graph() -> dict[str, set[str]]:
    modules = repo_modules()
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        folder = name.rpartition(".")[0]
        edges = set()
        for imported in imported_names(path, name, is_package):
            # A bare name resolves beside a script first (tests/, experiments/), then at the root.
            for candidate in (f"{folder}.{imported}" if folder and folder not in modules else None, imported):
                if candidate in modules and candidate != name:
                    edges.add(candidate)
                    break
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_known_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_main_and_its_plumbing():
    graph = import_graph()
    assert "runlog" in graph["main"] and "mup_patch" in graph["main"]
    assert "tests.trainer_support" in graph["tests.test_trainer"]  # bare names beside a script


def test_no_import_cycles_among_the_repository_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}; move the shared code below both modules"


def test_main_imports_neither_grid_nor_plots():
    graph = import_graph()
    below_main, todo = set(), ["main"]
    while todo:  # everything main imports, directly or through other repository modules
        for name in graph[todo.pop()] - below_main:
            below_main.add(name)
            todo.append(name)
    forbidden = {name for name in below_main if name.split(".")[0] in ("grid", "plots")}
    assert not forbidden, f"main.py reaches {sorted(forbidden)}: the recipe sits above plumbing, not above the grid or plots"
