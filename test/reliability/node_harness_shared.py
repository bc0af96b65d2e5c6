"""Run the node on a bag until it has alerted, then stop it the hard way."""
import time

from vila_ros.tools.client import isolated_node
from vila_ros.ros.outputs import STATE_NAMES
from vila_ros.tools.replay import replay_bag
from vila_ros.tools.replay_test import Listener, start_node


def run_until_alerts(bag, tmp_path, kill_signal):
    log_path = tmp_path / "alerts.jsonl"
    process = start_node(tmp_path / "node.log", {"camera_names": "[front]",
                                                 "camera_topics": "[/cameras/front/image_raw/compressed]",
                                                 "event_log_path": str(log_path), "stale_after_s": "0.0"})
    listener = Listener()
    try:
        assert listener.wait_for_node(120), (tmp_path / "node.log").read_text()
        with isolated_node("vila_ros_kill_test") as node:
            replay_bag(node, bag, rate=1.0)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not listener.alerts:
            time.sleep(0.1)
        process.send_signal(kill_signal)
        process.wait(timeout=10)
        received = [(r.message.alert_id, STATE_NAMES[r.message.state]) for r in listener.alerts]
    finally:
        listener.close()
        if process.poll() is None:
            process.kill()
    return received, log_path
