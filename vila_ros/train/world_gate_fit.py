"""`vila-ros fit-world-gate`: the world gate's statistics (`model/world_gate.py`) from the model's own features of
simulator frames rendered as the node's camera frames, its threshold from another split's frames.

One frame at a random moment of each of many train-split scenes (both families, every event, covered and blurred
lenses) gives the mean and covariance; the threshold is the largest distance among validation-split scene frames
times MARGIN, so that no rendered scene of a split the statistics never saw is taken for an unfamiliar one. Frames
behind a lens fault are left out of that maximum: a lens being covered or heavily blurred lies far from everything
else (on the embedded model up to 45 where scenes stay under 24), and the node never gates a lens fault (it checks
those on any view). The out-of-world frames the model was trained to call unfamiliar are scored too, as a check,
never used to fit.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vila_ros import tasks
from vila_ros.model.world_gate import WORLD_GATE_FILE, WorldGate

MARGIN = 1.2
# Camera frames as the node gets them: the stream eval's 320x240 and the demo's 640x480, squashed by the model's
# resize.
RENDER_SIZES = ((320, 240), (640, 480))


def scene_frames(split: str, scenes: int, render_size: tuple[int, int], seed: int = 0
                 ) -> tuple[list[np.ndarray], list[bool]]:
    """One frame at a random moment of each of `scenes` 20-60 s scenes of `split`, and whether a lens fault
    (covered, blurred) shows in it."""
    from vila_ros.sim import make_scenario, split_seeds

    rng = np.random.default_rng([seed, scenes, *render_size, 5501])
    frames, faults = [], []
    for scene_seed in split_seeds(split, scenes, int(rng.integers(0, 9_000_000))):
        scenario = make_scenario(scene_seed, duration=float(rng.uniform(20.0, 60.0)))
        moment = float(rng.uniform(0.0, scenario.duration))
        frames.append(scenario.render(moment, *render_size))
        faults.append(any(c in tasks.LENS_FAULTS for c in scenario.truth([moment]).categories))
    return frames, faults


@torch.no_grad()
def pooled_features(model: Any, frames: list[np.ndarray], batch: int = 64) -> torch.Tensor:
    """[N, hidden] pooled image features of `frames`, as the node's engine computes them."""
    rows = [WorldGate.pooled(model.encode_images(model.preprocess(frames[i:i + batch])))
            for i in range(0, len(frames), batch)]
    return torch.cat(rows)


def fit_world_gate(model_dir: str | Path, scenes: int = 3000, out: str | Path | None = None) -> dict:
    """Fit the gate of the model in `model_dir` on `scenes` train scenes (half as many validation scenes set the
    threshold) and store it there (or at `out`); returns a report of the distances (quantiles per sample) and how
    many of each sample the threshold calls unfamiliar."""
    from vila_ros.model.checkpoint import load_vila
    from vila_ros.sim.unfamiliar import unfamiliar_frame

    model = load_vila(model_dir).eval()
    per_size = max(scenes // len(RENDER_SIZES), 2)
    train = torch.cat([pooled_features(model, scene_frames("train", per_size, size)[0]) for size in RENDER_SIZES])
    gate = WorldGate.fit(train, threshold=float("inf"))
    val_distances, val_faults = [], []
    for size in RENDER_SIZES:
        frames, faults = scene_frames("val", max(per_size // 2, 2), size)
        val_distances.append(gate.distances(pooled_features(model, frames)))
        val_faults += faults
    distances, faults = torch.cat(val_distances), torch.tensor(val_faults, dtype=torch.bool)
    scenes_only = distances[~faults] if (~faults).any() else distances
    gate = WorldGate(gate.mean, gate.precision, round(float(scenes_only.max()) * MARGIN, 3))
    rng = np.random.default_rng(0)
    out_of_world = gate.distances(pooled_features(
        model, [unfamiliar_frame(rng, model.config.image_size) for _ in range(max(per_size // 4, 2))]))
    path = Path(out) if out else Path(model_dir) / WORLD_GATE_FILE
    gate.save(path)

    def summary(values: torch.Tensor) -> dict:
        if not len(values):
            return {"frames": 0, "unfamiliar": 0}
        quantiles = torch.quantile(values.double(), torch.tensor([0.0, 0.5, 0.99, 1.0], dtype=torch.float64))
        return {"frames": len(values), "min_median_p99_max": [round(float(q), 2) for q in quantiles],
                "unfamiliar": int((values > gate.threshold).sum())}

    report = {"threshold": gate.threshold, "margin": MARGIN, "file": path.name,
              "train": summary(gate.distances(train)), "val_scenes": summary(scenes_only),
              "val_lens_faults": summary(distances[faults]),
              "out_of_world": summary(out_of_world)}
    path.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    return report
