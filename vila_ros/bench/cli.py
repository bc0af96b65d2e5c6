"""``vila-ros bench <name>``: a subcommand group other areas extend.

Each module in BENCH_MODULES exposes ``add_parser(bench_subparsers)`` which adds its subcommand and sets
``func`` (a handler taking args, returning an exit code). Modules import torch inside their handlers only.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Any

BENCH_MODULES = [
    "vila_ros.bench.decode",
    "vila_ros.bench.quant",
    "vila_ros.bench.vision",
    "vila_ros.bench.prefix",
    "vila_ros.bench.node",
    "vila_ros.bench.cameras",
    "vila_ros.bench.roofline",
    "vila_ros.bench.serve",
    "vila_ros.bench.resize",
    "vila_ros.bench.window",
]


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks (decode, ...)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH")

    def _no_subcommand(args: argparse.Namespace) -> int:
        bench.print_help()
        return 2

    bench.set_defaults(func=_no_subcommand)
    for module_name in BENCH_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                continue  # a bench module not written yet adds no subcommand
            raise
        module.add_parser(bench_sub)
