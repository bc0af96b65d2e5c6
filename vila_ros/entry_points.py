"""Programs installed by CMake (``lib/vila_ros/*``, ``bin/vila-ros``) and by setup.py, in one table."""
from __future__ import annotations

import importlib
import os
import sys

ENTRY_POINTS = {
    "vila-ros": "vila_ros.cli:main",
    "perception_node": "vila_ros.ros.perception_node:main",
    "replay_node": "vila_ros.tools.replay:main",
}


def run(name: str) -> int:
    # DDS discovery stays on this host unless the user chose otherwise before starting us.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    module_name, function_name = ENTRY_POINTS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        print(f"{name}: cannot import {module_name}: {error}", file=sys.stderr)
        return 1
    return int(getattr(module, function_name)() or 0)
