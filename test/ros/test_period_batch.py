"""Periodic work of every camera due at once goes through the engine as one batch, and each camera gets what
it got when its jobs ran one by one (the embedded default model, real frames, real tracker)."""
import numpy as np

from vila_ros.engine import create_engine
from vila_ros.resources import resolve_model_dir
from vila_ros.ros.frame_buffer import CameraBuffer, Frame
from vila_ros.ros.node_stats import TimedEngine
from vila_ros.ros.worker import AlertRule, InferenceWorker, WorkerSettings

S = 1_000_000_000


def _buffers(cameras):
    buffers = {}
    for i, camera in enumerate(cameras):
        buffer = CameraBuffer(camera, 0.0, 3600.0, 64, 1 << 28)
        rng = np.random.default_rng(i)
        base = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        for k in range(4):  # a black camera, then noise: different scenes, different answers
            frame = np.zeros_like(base) if i == 0 else np.roll(base, 7 * k, axis=1)
            buffer.add(Frame(camera, 1_700_000_000 * S + k * S // 4, f"{camera}_optical", frame))
        buffers[camera] = buffer
    return buffers


def _run(engine, cameras, batched, describe_regex="", world_gate=None):
    descriptions, alerts = [], []
    settings = WorkerSettings(num_frames=4, min_frames=4, describe_period_s=1.0, alert_period_s=0.5,
                              alert_rules=(AlertRule("looks_covered", "Is the camera blocked?"),),
                              describe_regex=describe_regex, world_gate=world_gate)
    worker = InferenceWorker(engine, _buffers(cameras), settings, descriptions.append, alerts.append)
    if not batched:
        worker._batch_period = lambda due: None  # every job generates on its own, as before batching
    while worker._step():
        pass
    return worker, {(d.camera, d.text) for d in descriptions}, {(a.camera, a.category, a.state, a.text)
                                                                 for a in alerts}


def test_one_batch_per_period_gives_the_answers_of_one_job_at_a_time():
    engine = TimedEngine(create_engine(resolve_model_dir("")))
    cameras = ["front", "left", "rear"]
    worker, descriptions, alerts = _run(engine, cameras, batched=True)
    # 3 cameras x (description + alert prompt + one rule): one batch of 9 generations, no generation alone.
    assert (worker.stats.periods, worker.stats.period_rows) == (1, 9)
    assert worker.stats.descriptions == 3 and worker.stats.alert_checks == 3
    _, alone_descriptions, alone_alerts = _run(engine, cameras, batched=False)
    assert descriptions == alone_descriptions and len(descriptions) == 3
    assert alerts == alone_alerts and {a[:3] for a in alerts} >= {("front", "looks_covered", 0)}  # 0: BEGIN


def test_a_failed_batch_leaves_each_job_to_run_alone():
    engine = create_engine(resolve_model_dir(""))

    def broken(*args, **kwargs):
        raise RuntimeError("batch broke")

    engine.generate_batch = broken
    worker, descriptions, _ = _run(engine, ["front", "left"], batched=True)
    assert worker.stats.periods == 0 and worker.stats.failures == 0
    assert worker.stats.descriptions == 2 and len(descriptions) == 2


def test_descriptions_keep_to_the_expression_in_a_batch_and_alone():
    engine = create_engine(resolve_model_dir(""))
    regex = "[ ]?(All clear\\.|Something moves\\.)"  # never said unconstrained: the constraint must be applied
    _, free, _ = _run(engine, ["front", "left", "rear"], batched=True)
    assert not any(text in ("All clear.", "Something moves.") for _, text in free)
    worker, batched, _ = _run(engine, ["front", "left", "rear"], batched=True, describe_regex=regex)
    assert worker.stats.periods == 1
    _, alone, _ = _run(engine, ["front", "left", "rear"], batched=False, describe_regex=regex)
    assert batched == alone and len(batched) == 3
    assert {text for _, text in batched} <= {"All clear.", "Something moves."}


def test_a_description_the_world_gate_gives_is_not_asked_of_the_model_in_the_batch():
    from vila_ros import tasks
    from vila_ros.model.world_gate import WORLD_GATE_FILE, WorldGate

    engine = create_engine(resolve_model_dir(""))
    gate = WorldGate.load(resolve_model_dir("") / WORLD_GATE_FILE)
    cameras = ["front", "left", "rear"]
    worker, batched, _ = _run(engine, cameras, batched=True, world_gate=gate)
    gated = {camera for camera in cameras if gate.is_unfamiliar(worker.buffers[camera].window()[-1].features)}
    assert {"left", "rear"} <= gated and worker.stats.periods == 1  # noise: outside the model's world
    # Asked of the model in the batch: every camera's alert prompt and rule, and only the descriptions of cameras
    # whose newest frame the gate lets through. A covered lens (front, black) may lie beyond the gate too: its
    # check then raises camera_blocked in this very period, so its description is asked of the model after all,
    # alone, once the check is done (a lens fault is described on any view).
    assert worker.stats.period_rows == 3 * len(cameras) - len(gated)
    lens_fault = {camera for camera in cameras if worker.tracker.is_active(camera, "camera_blocked")}
    assert lens_fault == {"front"}
    assert {camera for camera, text in batched if text == tasks.UNFAMILIAR_SCENE} == gated - lens_fault
    _, alone, _ = _run(engine, cameras, batched=False, world_gate=gate)
    assert batched == alone and len(batched) == 3


def test_an_encoder_failing_under_the_world_gate_leaves_each_job_to_fail_alone():
    from vila_ros.model.world_gate import WORLD_GATE_FILE, WorldGate

    engine = create_engine(resolve_model_dir(""))

    def broken(*args, **kwargs):
        raise RuntimeError("encoder broke")

    engine.encode_frames = broken
    gate = WorldGate.load(resolve_model_dir("") / WORLD_GATE_FILE)
    worker, descriptions, _ = _run(engine, ["front", "left", "rear"], batched=True, world_gate=gate)
    assert not descriptions and worker.stats.failures == 6  # each camera's description and alert check
