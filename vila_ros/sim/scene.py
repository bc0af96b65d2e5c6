"""Former module name of the scenario code, kept while importers move: ``make_scenario`` is
``vila_ros.sim.generate.make_scenario``; every public name of the simulator is importable from ``vila_ros.sim``.
"""
from vila_ros.sim.generate import make_scenario

__all__ = ["make_scenario"]
