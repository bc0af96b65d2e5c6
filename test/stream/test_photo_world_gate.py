"""A photograph held before a camera through the in-process node (`eval-stream --photo`): with a world gate that
places it outside the model's world, every description is "An unfamiliar scene." and no scene alert is raised;
without one, the model answers about it as usual."""
import cv2
import numpy as np
import torch

from vila_ros import tasks
from vila_ros.engine import create_engine
from vila_ros.model.world_gate import WorldGate
from vila_ros.tools.stream_eval import photo_runs


def test_a_photo_outside_the_gate_is_an_unfamiliar_scene_without_alerts(tiny_dir, tmp_path):
    engine = create_engine(tiny_dir)
    rng = np.random.default_rng(0)
    world = [np.clip(90 + rng.normal(0, 4, (240, 320, 3)), 0, 255).astype(np.uint8) for _ in range(64)]
    pooled = torch.stack([WorldGate.pooled(f) for f in engine.encode_frames(world)])
    fitted = WorldGate.fit(pooled, threshold=float("inf"))
    WorldGate(fitted.mean, fitted.precision, 1.2 * float(fitted.distances(pooled).max())).save(tmp_path / "gate.st")
    photo = tmp_path / "photo.jpg"
    assert cv2.imwrite(str(photo), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))  # real JPEG bytes

    gated, = photo_runs(engine, [photo], seconds=6.0,
                        overrides={"model_dir": str(tiny_dir), "world_gate_file": str(tmp_path / "gate.st")})
    assert gated["most_common_description"] == tasks.UNFAMILIAR_SCENE
    assert gated["unfamiliar_checks"] > 0 and gated["unfamiliar_descriptions"] == gated["descriptions"] > 0
    assert gated["alert_categories"] == []
    plain, = photo_runs(engine, [photo], seconds=6.0, overrides={"model_dir": str(tiny_dir)})
    assert plain["unfamiliar_checks"] == 0 and plain["most_common_description"] != tasks.UNFAMILIAR_SCENE
