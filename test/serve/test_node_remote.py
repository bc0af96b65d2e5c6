"""The perception node with `engine: openai` describes a replayed bag through `vila-ros serve` over HTTP."""
import httpx

from vila_ros.serve.launch import running_server
from vila_ros.sim.writers import write_bag
from vila_ros.tools.harness import Listener, isolated_node, start_node, stop_node
from vila_ros.tools.replay import replay_bag


def test_node_with_remote_engine_describes_through_the_server(tiny_dir, tmp_path):
    bag = write_bag(tmp_path / "bag", cameras=["front"], fps=10, size=(160, 120), encoding="jpeg", duration=3.0,
                    seed=5)
    with running_server(tiny_dir, "--served-model-name", "tiny") as base:
        process = start_node(tmp_path / "node.log", {
            "engine": "openai", "remote_base_url": base + "/v1", "remote_timeout_s": "30.0",
            "camera_names": "[front]", "camera_topics": "[/cameras/front/image_raw/compressed]",
            "num_frames": "4", "describe_max_new_tokens": "3", "alert_period_s": "0.0", "event_log_path": '""'})
        listener = Listener(watch_annotated=True)
        try:
            assert listener.wait_for_node(60), (tmp_path / "node.log").read_text()
            with isolated_node("vila_ros_test_remote_replay") as node:
                replay_bag(node, bag, rate=1.0)
            assert listener.wait_for(lambda: listener.description_messages, 15), (tmp_path / "node.log").read_text()
        finally:
            listener.close()
            assert stop_node(process) == 0
        health = httpx.get(base + "/health").json()
    assert health["status"] == "ok"
    assert all(m.model_id == "tiny" and len(m.frame_stamps) == 4 for m in listener.description_messages)
