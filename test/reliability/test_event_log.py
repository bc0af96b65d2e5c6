"""The alert event log: nothing published is lost on kill -9, and a full disk is reported, not fatal."""
import json
import signal
import time

import pytest

from vila_ros.resources import DEFAULT_MODEL_DIR
from vila_ros.ros.outputs import STATE_NAMES, EventLog
from vila_ros.sim.writers import write_bag


def test_a_full_disk_is_counted_not_raised(tmp_path):
    log = EventLog("/dev/full")  # every write fails with ENOSPC
    assert log.append({"alert_id": "a"}) is False
    assert log.errors == 1 and "No space left" in log.last_error
    (tmp_path / "not_a_dir").write_text("")
    unwritable = EventLog(tmp_path / "not_a_dir" / "alerts.jsonl")  # its directory cannot exist
    assert unwritable.errors == 1 and unwritable.append({"alert_id": "b"}) is False


def test_each_line_is_on_disk_as_soon_as_it_is_appended(tmp_path):
    path = tmp_path / "alerts.jsonl"
    log = EventLog(path)
    for index in range(3):
        assert log.append({"alert_id": f"x/{index}"})
        assert len(path.read_text().splitlines()) == index + 1  # flushed per line, before any close
    log.close()


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="no embedded model")
def test_alerts_published_before_kill_9_are_all_in_the_log(tmp_path):
    bag = write_bag(tmp_path / "road", cameras=["front"], fps=10, size=(320, 240), encoding="jpeg", duration=8.0,
                    seed=0, family="road")
    received, log_path = run_until_alerts(bag, tmp_path, kill_signal=signal.SIGKILL)
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert received, "no alert before the kill"
    assert [(r["alert_id"], r["state"]) for r in records][: len(received)] == received


def run_until_alerts(bag, tmp_path, kill_signal):
    """Run the node on `bag` until it has alerted, then stop it the hard way; the (alert_id, state) received."""
    from vila_ros.tools.harness import Listener, isolated_node, start_node
    from vila_ros.tools.replay import replay_bag

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
