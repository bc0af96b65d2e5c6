"""Render speed: ``python -m vila_ros.sim.bench [WIDTH HEIGHT]`` (not a unit test)."""
from __future__ import annotations

import json
import sys
import time

from vila_ros.sim.generate import make_scenario


def bench_render(width: int = 112, height: int = 112, frames: int = 400, scenarios: int = 20) -> dict:
    """Mean and worst milliseconds per frame over ``scenarios`` seeds (first render of each, with its cached
    background, excluded from the mean and reported apart)."""
    per, first = [], []
    for seed in range(scenarios):
        s = make_scenario(seed)
        t0 = time.perf_counter()
        s.render(0.0, width, height)
        first.append(time.perf_counter() - t0)
        n = max(1, frames // scenarios)
        for k in range(n):
            t0 = time.perf_counter()
            s.render(k * 0.1, width, height)
            per.append(time.perf_counter() - t0)
    per.sort()
    return {"width": width, "height": height, "frames": len(per), "mean_ms": 1000 * sum(per) / len(per),
            "p95_ms": 1000 * per[int(0.95 * (len(per) - 1))], "max_ms": 1000 * per[-1],
            "first_render_ms": 1000 * sum(first) / len(first)}


if __name__ == "__main__":
    w, h = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (112, 112)
    print(json.dumps(bench_render(w, h), indent=1))
