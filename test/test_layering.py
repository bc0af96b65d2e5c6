"""The package's layer order (docs/DESIGN.md), checked on the source: every import of every module under vila_ros/,
module-level and inside functions, against an explicit table; no import cycles; ROS only where the node runs or
is driven; no torch in the simulator or the shared vocabulary; no source file over 400 lines.

Only the source is read (``ast``), nothing is imported, so this runs in a second and without ROS or torch.
"""
from __future__ import annotations

import ast
import dataclasses
import pathlib
import textwrap

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "vila_ros"

# Bottom to top. A layer may import itself and what its row names; nothing else of the package.
LAYER_OF_AREA = {
    "tasks": "vocabulary",
    "resources": "vocabulary",
    "kernels": "kernels",
    "model": "model",
    "engine": "engine",
    "sim": "sim",
    "train": "train",
    "quant": "quant",
    "ros": "ros",
    "tools": "tools",
    "bench": "bench",
    "cli": "top",
    "entry_points": "top",
    "__init__": "top",
    "__main__": "top",
}
ALLOWED = {
    "vocabulary": {"vocabulary"},
    "kernels": {"kernels"},
    "model": {"model", "kernels", "vocabulary"},
    "engine": {"engine", "model", "kernels", "vocabulary"},
    "sim": {"sim", "vocabulary"},
    "train": {"train", "model", "engine", "sim", "vocabulary"},
    "quant": {"quant", "model", "engine", "sim", "kernels", "vocabulary"},
    "ros": {"ros", "engine", "model", "vocabulary"},
    "tools": {"tools", "ros", "engine", "model", "sim", "vocabulary"},
    "bench": {"bench", "tools", "ros", "quant", "train", "sim", "engine", "model", "kernels", "vocabulary"},
    "top": set(LAYER_OF_AREA.values()),
}
# Generated interfaces of this package: they need the ROS Python runtime like any message package.
ROS_INTERFACES = {f"{PACKAGE}.msg", f"{PACKAGE}.srv", f"{PACKAGE}.action"}
ROS_PACKAGES = {
    "rclpy", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs", "rcl_interfaces", "lifecycle_msgs",
    "builtin_interfaces", "rosgraph_msgs", "geometry_msgs", "rosidl_runtime_py", "action_msgs",
}
ROS_LAYERS = {"ros", "tools", "bench"}
# Third-party packages a layer must not import (besides the ROS rule above).
FORBIDDEN_THIRD_PARTY = {"sim": {"torch"}, "vocabulary": {"torch"}}
COMMAND_LINES = {f"{PACKAGE}.cli", f"{PACKAGE}.entry_points"}  # and every area's `cli.py`
HEAVY_PACKAGES = {"torch", "transformers", "tensorrt_llm", "onnxruntime", "safetensors"} | ROS_PACKAGES
MAX_LINES = 400
LINE_LIMIT_EXEMPT = {f"{PACKAGE}/kernels/cpu_kernels.cpp"}  # one C++ translation unit for the extension loader
SOURCE_SUFFIXES = {".py", ".cpp", ".c", ".h", ".hpp", ".pyx"}  # not the model data (default_model/*.json)


@dataclasses.dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (resolved to a module of the package where it is one)
    path: str  # importing file, relative to the repository root
    line: int
    at_import: bool = True  # runs when the module is imported (not inside a function, not under TYPE_CHECKING)


# ------------------------------------------------------------------------------------------------ reading the tree
def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def is_package_init(name: str, modules: dict[str, pathlib.Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def collect_modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    return {
        module_name(path, root): path
        for path in sorted((root / PACKAGE).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _resolve(base: str, names: list[str], modules: dict[str, pathlib.Path]) -> list[str]:
    """``from base import a, b``: each name that is a module of ours is that module, else it is base itself."""
    targets = [f"{base}.{name}" for name in names if f"{base}.{name}" in modules or f"{base}.{name}" in ROS_INTERFACES]
    if len(targets) < len(names):
        targets.append(base)
    return targets


def imports_of(name: str, source: str, path: str, modules: dict[str, pathlib.Path]) -> list[Import]:
    """Every import statement in the module (at any depth, including under ``if TYPE_CHECKING``), and
    ``importlib.import_module("literal")`` calls."""
    tree = ast.parse(source, filename=path)
    package = name if is_package_init(name, modules) or "." not in name else name.rsplit(".", 1)[0]
    deferred: set[int] = set()  # ids of nodes that do not run at import time
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or (
            isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        ):
            body = node.body if isinstance(node, ast.If) else [node]
            deferred.update(id(inner) for part in body for inner in ast.walk(part))
    found: list[Import] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = _resolve(base, [alias.name for alias in node.names], modules)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        found += [Import(name, target, path, node.lineno, id(node) not in deferred)
                  for target in targets if target != "__future__"]
    return found


def all_imports(root: pathlib.Path = REPO_ROOT) -> tuple[dict[str, pathlib.Path], list[Import]]:
    modules = collect_modules(root)
    found: list[Import] = []
    for name, path in modules.items():
        found += imports_of(name, path.read_text(encoding="utf-8"), str(path.relative_to(root)), modules)
    return modules, found


# ------------------------------------------------------------------------------------------------------ the rules
def layer_of(module: str) -> str | None:
    """The layer of a module of the package (None for anything else, the generated interfaces included)."""
    parts = module.split(".")
    if parts[0] != PACKAGE or module in ROS_INTERFACES or module.startswith(tuple(f"{m}." for m in ROS_INTERFACES)):
        return None
    area = parts[1] if len(parts) > 1 else "__init__"
    if area not in LAYER_OF_AREA:
        raise KeyError(f"{module}: no layer for {area!r}; add it to LAYER_OF_AREA and docs/DESIGN.md")
    return LAYER_OF_AREA[area]


def _where(imp: Import) -> str:
    return f"{imp.path}:{imp.line}: {imp.source} imports {imp.target}"


def layer_violations(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        source_layer = layer_of(imp.source)
        # The root package holds only its version and the path extension for the generated interfaces.
        target_layer = None if imp.target == PACKAGE else layer_of(imp.target)
        top_level = imp.target.split(".")[0]
        if target_layer is not None and target_layer not in ALLOWED[source_layer]:
            problems.append(
                f"{_where(imp)}: layer {source_layer!r} may import only {sorted(ALLOWED[source_layer])}, "
                f"not {target_layer!r}"
            )
        is_ros = top_level in ROS_PACKAGES or any(
            imp.target == m or imp.target.startswith(m + ".") for m in ROS_INTERFACES
        )
        if is_ros and source_layer not in ROS_LAYERS:
            problems.append(f"{_where(imp)}: ROS packages are imported only in {sorted(ROS_LAYERS)}")
        if top_level in FORBIDDEN_THIRD_PARTY.get(source_layer, ()):
            problems.append(f"{_where(imp)}: layer {source_layer!r} must not import {top_level}")
    return problems


def import_cycles(imports: list[Import], modules: dict[str, pathlib.Path]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself), Tarjan's
    algorithm, iterative so a deep graph cannot hit the recursion limit."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for imp in imports:
        if imp.target in modules:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    components.append(sorted(component))
    return components


def cycle_report(cycle: list[str], imports: list[Import]) -> str:
    members = set(cycle)
    edges = [_where(imp) for imp in imports if imp.source in members and imp.target in members]
    return "import cycle between " + ", ".join(cycle) + ":\n    " + "\n    ".join(edges)


def heavy_imports_of_command_lines(imports: list[Import], modules: dict[str, pathlib.Path]) -> list[str]:
    """Imports of heavy packages that importing a command-line module runs, directly or through our modules
    imported at module level: `vila-ros --help` must stay fast and work without torch or ROS installed."""
    at_import: dict[str, list[Import]] = {}
    for imp in imports:
        if imp.at_import:
            at_import.setdefault(imp.source, []).append(imp)
    problems = []
    for root in sorted(name for name in modules if name in COMMAND_LINES or name.endswith(".cli")):
        seen, todo = {root}, [root]
        while todo:
            for imp in at_import.get(todo.pop(), []):
                top_level = imp.target.split(".")[0]
                if top_level in HEAVY_PACKAGES or any(imp.target.startswith(m) for m in ROS_INTERFACES):
                    problems.append(f"{_where(imp)}: runs when {root} is imported; import it inside the handler")
                elif imp.target in modules and imp.target not in seen:
                    seen.add(imp.target)
                    todo.append(imp.target)
    return sorted(set(problems))


def oversized_files(root: pathlib.Path = REPO_ROOT) -> list[str]:
    problems = []
    for path in sorted((root / PACKAGE).rglob("*")):
        relative = str(path.relative_to(root))
        if path.suffix not in SOURCE_SUFFIXES or "__pycache__" in path.parts or relative in LINE_LIMIT_EXEMPT:
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            problems.append(f"{relative}:{MAX_LINES + 1}: {lines} lines, more than {MAX_LINES}")
    return problems


# ------------------------------------------------------------------------------------------------------ the tests
def test_every_import_follows_the_layer_order():
    _, imports = all_imports()
    problems = layer_violations(imports)
    assert not problems, f"{len(problems)} imports against the layer order:\n" + "\n".join(problems)


def test_no_import_cycles():
    modules, imports = all_imports()
    cycles = import_cycles(imports, modules)
    assert not cycles, "\n".join(cycle_report(cycle, imports) for cycle in cycles)


def test_command_lines_import_nothing_heavy_at_module_level():
    modules, imports = all_imports()
    problems = heavy_imports_of_command_lines(imports, modules)
    assert not problems, "\n".join(problems)


def test_no_source_file_over_the_line_limit():
    problems = oversized_files()
    assert not problems, "\n".join(problems)


def test_every_area_has_a_layer():
    modules, _ = all_imports()
    for name in modules:
        layer_of(name)  # raises, naming the module, for an area missing from the table


# The checker itself: a synthetic package with one known fault of each kind must be caught, and a clean one not.
def _write(root: pathlib.Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / PACKAGE / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def fake_tree(tmp_path):
    _write(tmp_path, {
        "__init__.py": "",
        "tasks.py": "import json\n",
        "model/__init__.py": "",
        "model/vila.py": "from vila_ros import tasks\nfrom . import config\n",
        "model/config.py": "",
        "engine/__init__.py": "from vila_ros.model import vila\n",
        "ros/__init__.py": "",
        "ros/node.py": "import rclpy\nfrom vila_ros.msg import SceneDescription\nfrom ..engine import create\n",
        "sim/__init__.py": "",
        "sim/scene.py": "import numpy\n",
    })
    return tmp_path


def test_checker_passes_a_clean_tree(fake_tree):
    modules, imports = all_imports(fake_tree)
    assert layer_violations(imports) == []
    assert import_cycles(imports, modules) == []
    assert oversized_files(fake_tree) == []
    assert heavy_imports_of_command_lines(imports, modules) == []
    targets = {(imp.source, imp.target) for imp in imports}
    # `from vila_ros import tasks` and relative imports resolve to the module, not the package.
    assert ("vila_ros.model.vila", "vila_ros.tasks") in targets
    assert ("vila_ros.model.vila", "vila_ros.model.config") in targets
    assert ("vila_ros.ros.node", "vila_ros.engine") in targets


@pytest.mark.parametrize(
    ("relative", "text", "expected"),
    [
        # a function-level import upwards, written as `from vila_ros import <module>`
        ("model/cli.py", "def main():\n    from vila_ros import engine\n", "model/cli.py:2: vila_ros.model.cli "
         "imports vila_ros.engine: layer 'model' may import only"),
        ("model/cli.py", "def main():\n    from ..ros import node\n", "layer 'model' may import only"),
        ("sim/view.py", "import torch.nn\n", "sim/view.py:1: vila_ros.sim.view imports torch.nn: layer 'sim' "
         "must not import torch"),
        ("engine/pub.py", "import rclpy\n", "ROS packages are imported only in"),
        ("engine/pub.py", "from vila_ros.srv import QueryScene\n", "ROS packages are imported only in"),
        ("ros/tool.py", "import importlib\nimportlib.import_module('vila_ros.sim.scene')\n",
         "layer 'ros' may import only"),
    ],
)
def test_checker_catches_a_bad_import(fake_tree, relative, text, expected):
    _write(fake_tree, {relative: text})
    _, imports = all_imports(fake_tree)
    problems = layer_violations(imports)
    assert len(problems) == 1 and expected in problems[0], problems


def test_checker_catches_a_cycle_through_a_function_level_import(fake_tree):
    _write(fake_tree, {"model/config.py": "def load():\n    from vila_ros.model.vila import x\n"})
    modules, imports = all_imports(fake_tree)
    cycles = import_cycles(imports, modules)
    assert cycles == [["vila_ros.model.config", "vila_ros.model.vila"]]
    assert "vila_ros/model/config.py:2" in cycle_report(cycles[0], imports)


def test_checker_catches_a_heavy_import_behind_a_command_line(fake_tree):
    _write(fake_tree, {
        "model/cli.py": "import argparse\nfrom vila_ros.model import vila\n\ndef run():\n    import torch\n",
        "model/vila.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rclpy\nimport torch\n",
    })
    modules, imports = all_imports(fake_tree)
    assert heavy_imports_of_command_lines(imports, modules) == [
        "vila_ros/model/vila.py:4: vila_ros.model.vila imports torch: runs when vila_ros.model.cli is imported; "
        "import it inside the handler"
    ]


def test_checker_catches_an_oversized_file(fake_tree):
    _write(fake_tree, {"sim/scene.py": "x = 1\n" * (MAX_LINES + 1), "kernels/cpu_kernels.cpp": "//\n" * 900})
    assert oversized_files(fake_tree) == [f"vila_ros/sim/scene.py:{MAX_LINES + 1}: 401 lines, more than 400"]
