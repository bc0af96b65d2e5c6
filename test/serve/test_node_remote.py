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
