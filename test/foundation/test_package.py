"""The CMake build installed what a ROS 2 system expects, and the command line is assembled."""
import os
import pathlib
import subprocess
import sys

from catkin_pkg.package import parse_package

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PREFIX = pathlib.Path(sys.prefix)


def test_package_xml_is_format_3_with_interface_group():
    package = parse_package(str(REPO_ROOT / "package.xml"))
    assert package.package_format == 3
    assert package.name == "vila_ros"
    assert "rosidl_interface_packages" in [group.name for group in package.member_of_groups]


def test_cmake_install_put_interfaces_entry_points_and_share_files_in_the_prefix():
    share = PREFIX / "share" / "vila_ros"
    assert (share / "package.xml").is_file()
    for interface in ["msg/SceneDescription.msg", "msg/CornerCaseAlert.msg", "srv/QueryScene.srv",
                      "srv/QueryEvents.srv"]:
        assert (share / interface).is_file(), interface
    assert (PREFIX / "share" / "ament_index" / "resource_index" / "packages" / "vila_ros").is_file()
    for program in [PREFIX / "lib" / "vila_ros" / "perception_node", PREFIX / "bin" / "vila-ros"]:
        assert os.access(program, os.X_OK), program


def test_installed_vila_ros_command_lists_its_commands():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(PREFIX / "bin" / "vila-ros"), "--help"], capture_output=True, text=True, env=env,
                            cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: vila-ros" in result.stdout
    for command in EXPECTED_COMMANDS:
        assert command in result.stdout, command


EXPECTED_COMMANDS = ["init-model", "resize-vision", "average-weights", "describe", "sim", "train", "eval", "run",
                     "replay", "replay-test", "query", "demo", "bench"]
