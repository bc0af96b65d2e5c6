"""A replay with /clock drives a node started with use_sim_time: its clock is the recording's, not the wall's."""
import pytest
from diagnostic_msgs.msg import DiagnosticArray

from vila_ros.ros.conversion import stamp_to_ns
from vila_ros.sim.writers import DEFAULT_START_NS, write_bag
from vila_ros.tools.harness import Listener, isolated_node, start_node, stop_node
from vila_ros.tools.replay import replay_bag

S = 1_000_000_000


@pytest.mark.parametrize("use_sim_time", [True, False])
def test_node_follows_the_replayed_clock(tiny_dir, tmp_path, use_sim_time):
    bag = write_bag(tmp_path / "bag", cameras=["front"], fps=10, size=(160, 120), encoding="jpeg", duration=4.0,
                    seed=5)
    process = start_node(tmp_path / "node.log", {
        "model_dir": str(tiny_dir), "camera_names": "[front]", "camera_topics": "[/cameras/front/image_raw/compressed]",
        "num_frames": "4", "describe_max_new_tokens": "2", "alert_period_s": "0.0", "diagnostics_period_s": "0.2",
        "use_sim_time": "true" if use_sim_time else "false", "event_log_path": '""'})
    listener = Listener(watch_annotated=True)
    diagnostics = []
    listener.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 50)
    try:
        assert listener.wait_for_node(60), (tmp_path / "node.log").read_text()
        with isolated_node("vila_ros_test_clock_replay") as node:
            replay_bag(node, bag, rate=1.0, clock=True)
        assert listener.wait_for(lambda: listener.description_messages and diagnostics, 10)
    finally:
        listener.close()
        assert stop_node(process) == 0
    stamps = [stamp_to_ns(d.header.stamp) for d in diagnostics]
    in_recording = [DEFAULT_START_NS <= s <= DEFAULT_START_NS + 5 * S for s in stamps]
    if use_sim_time:
        assert any(in_recording), stamps[-3:]  # once /clock runs, the node's time is the bag's
    else:
        assert not any(in_recording)
