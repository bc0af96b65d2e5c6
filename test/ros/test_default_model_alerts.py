"""The product end to end: the embedded default model in a node process, rosbag replays with planted corner cases,
and `vila-ros replay-test` scoring. Planted events must raise alerts with the right category, camera and stamps."""
import json
import subprocess
import sys

import pytest

from vila_ros.resources import DEFAULT_MODEL_DIR
from vila_ros.sim.writers import write_bag

S = 1_000_000_000

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(),
                                reason="the embedded default model is not present")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    # Seeds chosen for their first scenario's event: the camera gets covered at 4.9 s on the road, the aisle camera
    # gets blurred at 4.9 s. The default model sees these states reliably (recall and precision 1.0 in its EVAL.md);
    # its weaker temporal categories are measured by `vila-ros eval`, not asserted here.
    road = write_bag(root / "road", cameras=["front"], fps=10, size=(640, 480), encoding="jpeg", duration=9.0,
                     seed=0, family="road")
    # 640x480 rgb8 (900 KiB a frame): over Fast DDS's default 512 KiB shared-memory segment, so the frames reach
    # the node only through the profile replay-test sets for both processes.
    warehouse = write_bag(root / "warehouse", cameras=["aisle"], fps=10, size=(640, 480), encoding="rgb8",
                          duration=9.0, seed=0, family="warehouse", storage="sqlite3")
    return root, [road, warehouse]


def test_replay_test_finds_the_planted_events_with_their_stamps(planted):
    root, bags = planted
    out = root / "report"
    result = subprocess.run([sys.executable, "-m", "vila_ros.cli", "replay-test", *map(str, bags), "--out", str(out),
                             "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    events = {(e["camera"], e["category"]): e for e in report["per_event"]}
    assert set(events) == {("front", "camera_blocked"), ("aisle", "camera_blurred")}
    for event in events.values():
        assert event["alerted"], (event, (out / "node.log").read_text()[-2000:])
        # Both events start at 4.86 s and last to the end of the 9 s recording; the camera gets covered or blurred
        # gradually, so how soon the model calls it varies with which windows the worker happened to check.
        assert -0.5 <= event["seconds_to_alert"] <= 9.0 - 4.86
    assert report["node_exit_code"] == 0
    assert report["descriptions"] >= 6 and report["description_latency_ms_median"] > 0
    # The JSON lines event log holds the same BEGIN alerts, with evidence frames from the bags.
    records = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    begins = {(r["camera"], r["category"]): r for r in records if r["state"] == "BEGIN"}
    for key, event in events.items():
        record = begins[key]
        assert record["evidence_stamps_ns"][-1] == record["stamp_ns"]
        assert all((stamp - 1_700_000_000 * S) % (S // 10) == 0 for stamp in record["evidence_stamps_ns"])
    assert "| EVENT (truth) | camera_blocked |" in (out / "report.md").read_text()
    saved = json.loads((out / "replay_test.json").read_text())
    assert saved["dds_profile"].endswith("fastdds_local_large_frames.xml")
    # Once the buffer has filled, every aisle window holds 8 frames on the 4 fps grid: no raw frame was lost.
    first = min(stamp for d in saved["stream"]["records"]["descriptions"] for stamp in d["stamps_ns"])
    full = [d["stamps_ns"] for d in saved["stream"]["records"]["descriptions"]
            if d["camera"] == "aisle" and d["stamps_ns"][-1] - first >= 3 * S]
    assert full and all(len(stamps) == 8 and stamps[-1] - stamps[0] <= 2 * S for stamps in full), full


def test_yes_no_rules_raise_their_own_category(planted):
    from vila_ros.tools.replay_test import run_replay_test

    root, bags = planted
    # The road recording is in daylight until its camera gets covered at 4.9 s; the default model then answers
    # "Is the camera blocked?" with yes (and no before), which a user's rule turns into its own alert category.
    report = run_replay_test([bags[0]], root / "rules", rate=1.0, node_parameters={
        "alert_rule_categories": "[looks_covered]", "alert_rule_questions": '["Is the camera blocked?"]',
        "alert_categories": "[camera_blocked]", "describe_period_s": "0.0"})
    records = [json.loads(line) for line in (root / "rules" / "alerts.jsonl").read_text().splitlines()]
    rule_alerts = [r for r in records if r["category"] == "looks_covered"]
    assert rule_alerts and rule_alerts[0]["state"] == "BEGIN" and rule_alerts[0]["severity"] == "WARNING"
    assert rule_alerts[0]["stamp_ns"] >= 1_700_000_000 * S + int(4.9 * S)  # not before the camera is covered
    assert {r["category"] for r in records} <= {"looks_covered", "camera_blocked"}
    assert report["descriptions"] == 0
