"""The shipped launch file and parameter file agree with the node's declared parameters."""
import ast
import pathlib

import pytest
import yaml

from vila_ros.ros.parameters import PARAMETERS

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_config_sets_only_declared_parameters_with_matching_types():
    config = yaml.safe_load((REPO_ROOT / "config" / "perception.yaml").read_text())
    values = config["/**"]["ros__parameters"]
    unknown = set(values) - set(PARAMETERS)
    assert not unknown, f"config/perception.yaml sets undeclared parameters: {unknown}"
    for name, value in values.items():
        default = PARAMETERS[name][0]
        assert type(value) is type(default), f"{name}: {value!r} is not a {type(default).__name__}"


def test_launch_file_starts_the_installed_executable_with_the_config():
    source = (REPO_ROOT / "launch" / "perception.launch.py").read_text()
    tree = ast.parse(source)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    assert 'executable="perception_node"' in source and '"perception.yaml"' in source


def test_launch_description_builds_where_launch_is_installed():
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI; covered on real ROS")
    import importlib.util

    spec = importlib.util.spec_from_file_location("perception_launch", REPO_ROOT / "launch" / "perception.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities


def test_the_nodes_are_installed_on_path_and_for_ros2_run():
    """CMake installs perception_node and replay_node into lib/vila_ros (ros2 run) and bin (PATH); setup.py's
    console scripts name the same functions as vila_ros/entry_points.py."""
    import re
    import sys

    from vila_ros.entry_points import ENTRY_POINTS

    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    installs = re.findall(r"install\(PROGRAMS ([^)]*) DESTINATION (\S+)\)", cmake)
    destinations = {dest: programs for programs, dest in installs}
    for program in ("perception_node", "replay_node"):
        assert f"/{program}" in destinations["lib/${PROJECT_NAME}"] and f"/{program}" in destinations["bin"]
    setup = (REPO_ROOT / "setup.py").read_text()
    for name, target in ENTRY_POINTS.items():
        assert f'"{name} = {target}"' in setup, name
    # Where this venv was built from this CMakeLists (make build), the programs are on its PATH.
    venv_bin = pathlib.Path(sys.executable).parent
    stamp = venv_bin.parent / ".stamp-build"
    if not stamp.is_file() or stamp.stat().st_mtime < (REPO_ROOT / "CMakeLists.txt").stat().st_mtime:
        pytest.skip("this venv was not built from this CMakeLists.txt (make build)")
    for program in ("perception_node", "replay_node"):
        assert (venv_bin / program).is_file(), program
