"""The world gate: statistics stored with a model (safetensors), loaded by the node's parameters, and the worker
describing a window outside the model's world as an unfamiliar scene with no scene alert (lens faults still)."""
import numpy as np
import pytest
import torch

from vila_ros import tasks
from vila_ros.model.world_gate import WORLD_GATE_FILE, WorldGate
from vila_ros.ros import parameters
from vila_ros.ros.frame_buffer import CameraBuffer, Frame

S = 1_000_000_000


def _grey_frames(count: int, seed: int) -> list[np.ndarray]:
    """The tiny model's "world": dim grey frames with a little sensor noise."""
    rng = np.random.default_rng(seed)
    return [np.clip(90 + rng.normal(0, 4, (48, 64, 3)), 0, 255).astype(np.uint8) for _ in range(count)]


def _noise_frame() -> np.ndarray:
    return np.random.default_rng(99).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_engine(tiny_dir):
    from vila_ros.engine import create_engine

    return create_engine(tiny_dir)


@pytest.fixture(scope="module")
def gate(tiny_engine) -> WorldGate:
    pooled = torch.stack([WorldGate.pooled(f) for f in tiny_engine.encode_frames(_grey_frames(64, 0))])
    fitted = WorldGate.fit(pooled, threshold=float("inf"))
    held_out = fitted.distances(torch.stack([WorldGate.pooled(f)
                                             for f in tiny_engine.encode_frames(_grey_frames(16, 1))]))
    return WorldGate(fitted.mean, fitted.precision, 1.2 * float(held_out.max()))


def test_the_gate_separates_frames_of_its_world_from_others_and_survives_a_round_trip(gate, tiny_engine,
                                                                                     tmp_path):
    world, other = tiny_engine.encode_frames(_grey_frames(1, 2) + [_noise_frame()])
    assert not gate.is_unfamiliar(world) and gate.is_unfamiliar(other)
    gate.save(tmp_path / WORLD_GATE_FILE)
    loaded = WorldGate.load(tmp_path / WORLD_GATE_FILE)
    assert loaded.threshold == gate.threshold and loaded.distance(other) == pytest.approx(gate.distance(other))


def test_the_node_loads_the_gate_stored_with_its_model_and_refuses_a_broken_one(gate, tiny_engine, tiny_dir,
                                                                                tmp_path):
    assert parameters.world_gate("model", str(tiny_dir), tiny_engine) is None  # a checkpoint without one
    assert parameters.world_gate("", str(tiny_dir), tiny_engine) is None
    gate.save(tmp_path / "gate.safetensors")
    assert parameters.world_gate(str(tmp_path / "gate.safetensors"), "", tiny_engine).threshold == gate.threshold
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="world_gate_file"):
        parameters.world_gate(str(tmp_path / "broken.safetensors"), "", tiny_engine)
    WorldGate(gate.mean, gate.precision[:3], gate.threshold).save(tmp_path / "mismatched.safetensors")
    with pytest.raises(ValueError, match="do not fit together"):
        parameters.world_gate(str(tmp_path / "mismatched.safetensors"), "", tiny_engine)


def _worker(engine, gate, frames):
    from vila_ros.ros.worker import InferenceWorker, WorkerSettings

    buffer = CameraBuffer("front", 0.0, 3600.0, 64, 1 << 28)
    for k, rgb in enumerate(frames):
        buffer.add(Frame("front", 1_700_000_000 * S + k * S // 4, "front_optical", rgb))
    # Thresholds of 0: every category is detected, so what the gate lets through is what is published.
    settings = WorkerSettings(num_frames=4, min_frames=4, describe_max_new_tokens=4,
                              alert_categories=("falling_object", "camera_blocked"),
                              alert_thresholds=(("falling_object", 0.0), ("camera_blocked", 0.0)), world_gate=gate)
    alerts = []
    return InferenceWorker(engine, {"front": buffer}, settings, lambda d: None, alerts.append), alerts


def test_a_window_outside_the_world_is_an_unfamiliar_scene_with_lens_faults_only(gate, tiny_engine):
    worker, alerts = _worker(tiny_engine, gate, _grey_frames(3, 3) + [_noise_frame()])
    assert worker.describe("front").text == tasks.UNFAMILIAR_SCENE and worker.stats.unfamiliar_descriptions == 1
    worker.check_alerts("front")
    assert [a.category for a in alerts] == ["camera_blocked"] and worker.stats.unfamiliar_checks == 1
    # Behind an active lens fault the view is the camera's fault, not another world: described by the model.
    assert worker.describe("front").text != tasks.UNFAMILIAR_SCENE


def test_a_window_of_the_world_is_described_and_checked_by_the_model(gate, tiny_engine):
    worker, alerts = _worker(tiny_engine, gate, [_noise_frame()] + _grey_frames(3, 4))  # only the newest frame counts
    assert worker.describe("front").text != tasks.UNFAMILIAR_SCENE
    worker.check_alerts("front")
    assert sorted(a.category for a in alerts) == ["camera_blocked", "falling_object"]
    assert worker.stats.unfamiliar_checks == 0
