"""The alert event log: nothing published is lost on kill -9, and a full disk is reported, not fatal."""
import json
import signal

import pytest

from vila_ros.resources import DEFAULT_MODEL_DIR
from vila_ros.ros.outputs import EventLog
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
    from node_harness_shared import run_until_alerts

    bag = write_bag(tmp_path / "road", cameras=["front"], fps=10, size=(320, 240), encoding="jpeg", duration=8.0,
                    seed=0, family="road")
    received, log_path = run_until_alerts(bag, tmp_path, kill_signal=signal.SIGKILL)
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert received, "no alert before the kill"
    assert [(r["alert_id"], r["state"]) for r in records][: len(received)] == received
