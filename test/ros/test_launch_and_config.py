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
