"""`vila-ros`: one command line, assembled from each area's ``cli.py``.

Each area module exposes ``register(subparsers)`` and sets ``func`` on its parsers. Heavy imports (torch, rclpy)
happen inside the handlers, so ``vila-ros --help`` stays fast and works in a partial install.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

AREA_CLI_MODULES = (
    "vila_ros.model.cli",
    "vila_ros.engine.cli",
    "vila_ros.sim.cli",
    "vila_ros.train.cli",
    "vila_ros.quant.cli",
    "vila_ros.serve.cli",
    "vila_ros.tools.cli",
    "vila_ros.bench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vila-ros", description="VILA vision-language perception for ROS 2.")
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in AREA_CLI_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # An area that does not exist yet (or whose optional dependency is missing) just adds no commands.
            if error.name and module_name.startswith(error.name):
                continue
            raise
        module.register(subparsers)
    return parser


def _version() -> str:
    from vila_ros import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    # DDS must never leave this machine unless the user says otherwise.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
