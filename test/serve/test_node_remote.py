"""The perception node with `engine: openai` describes a replayed bag through `vila-ros serve` over HTTP, and
keeps running, reporting the failure on /diagnostics, when the server goes away."""
from vila_ros.serve.launch import running_server
from vila_ros.sim.writers import write_bag
from vila_ros.tools.harness import Listener, isolated_node, start_node, stop_node
from vila_ros.tools.replay import replay_bag


def test_node_with_remote_engine_describes_through_the_server(tiny_dir, tmp_path):
    bag = write_bag(tmp_path / "bag", cameras=["front"], fps=10, size=(160, 120), encoding="jpeg", duration=3.0,
                    seed=5)
    log = tmp_path / "node.log"
    listener = Listener(watch_annotated=True)
    process = None
    try:
        with running_server(tiny_dir, "--served-model-name", "tiny") as base:
            process = start_node(log, {
                "engine": "openai", "remote_base_url": base + "/v1", "remote_timeout_s": "30.0",
                "camera_names": "[front]", "camera_topics": "[/cameras/front/image_raw/compressed]",
                "num_frames": "4", "describe_max_new_tokens": "3", "alert_period_s": "0.0",
                "diagnostics_period_s": "0.2", "event_log_path": '""'})
            assert listener.wait_for_node(60), log.read_text()
            with isolated_node("vila_ros_test_remote_replay") as node:
                replay_bag(node, bag, rate=1.0)
            assert listener.wait_for(lambda: listener.description_messages, 15), log.read_text()
        described = len(listener.description_messages)
        assert all(m.model_id == "tiny" and len(m.frame_stamps) == 4 for m in listener.description_messages)

        def unreachable() -> bool:
            values = listener.latest_diagnostics().get("inference", {})
            return "cannot reach" in values.get("last_error", "") + values.get("message", "")

        with isolated_node("vila_ros_test_remote_replay2") as node:  # the server is gone now
            replay_bag(node, bag, rate=1.0)
        assert listener.wait_for(unreachable, 15), (listener.latest_diagnostics(), log.read_text()[-3000:])
        assert len(listener.description_messages) == described
        assert process.poll() is None
    finally:
        listener.close()
        if process is not None:
            assert stop_node(process) == 0


class _SeesWhatTheServerDecodes:
    """The in-process engine fed each frame as the server gets it (JPEG, decoded by the server's own decoder), so
    that a difference in answers can only come from the remote path, not from JPEG."""

    def __init__(self, engine) -> None:
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def encode_frames(self, frames):
        from vila_ros.engine.openai_engine import encode_jpeg
        from vila_ros.serve.app import decode_image

        return self._engine.encode_frames([decode_image(encode_jpeg(f).data_url()) for f in frames])


def test_remote_engine_gives_the_node_the_alerts_and_descriptions_of_the_in_process_engine():
    """The node's own worker, tracker and buffers (in-process, `tools.stream_eval`) on one held-out scene in which
    the camera gets blocked: through `vila-ros serve` over HTTP and with the torch engine in the process (the node's
    default is greedy), the same descriptions of the same windows and the same alerts."""
    import pytest

    from vila_ros.engine import create_engine
    from vila_ros.resources import DEFAULT_MODEL_DIR
    from vila_ros.sim.streams import make_stream
    from vila_ros.tools.stream_eval import run_streams

    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        pytest.skip("the embedded default model is not present")
    stream = make_stream("stream_val", 0, "road", 20, 20, 25)
    # A remote server gives no logits: both decide alerts on the generated answer.
    overrides = {"alert_thresholds_file": ""}
    local = _SeesWhatTheServerDecodes(create_engine(DEFAULT_MODEL_DIR))
    _, expected, _ = run_streams(local, [stream], overrides)
    with running_server(DEFAULT_MODEL_DIR, "--served-model-name", "default") as base:
        remote = create_engine("", engine="openai", remote={"base_url": base + "/v1", "timeout_s": 60.0})
        _, got, _ = run_streams(remote, [stream], overrides)
    assert len(expected.descriptions) >= 10 and any(a["state"] == 0 for a in expected.alerts)
    assert [(d["stamps_ns"], d["text"]) for d in got.descriptions] == \
        [(d["stamps_ns"], d["text"]) for d in expected.descriptions]
    assert [(a["category"], a["state"], a["stamp_ns"], a["alert_id"]) for a in got.alerts] == \
        [(a["category"], a["state"], a["stamp_ns"], a["alert_id"]) for a in expected.alerts]
