"""Soak: frames replayed at full speed through a node process (`vila-ros soak`, the same code an operator runs).

CI replays VILA_ROS_SOAK_FRAMES frames (default 6,000: about half a minute); the full issue-sized soak is
`VILA_ROS_SOAK_FRAMES=20000 make test PYTEST_ARGS=test/reliability/test_soak.py`, or `vila-ros soak` itself.
"""
import json
import os
import subprocess
import sys

FRAMES = int(os.environ.get("VILA_ROS_SOAK_FRAMES", "6000"))


def test_soak_keeps_memory_flat_alerts_every_planted_event_and_loses_nothing(tmp_path):
    report_path = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, "-m", "vila_ros.cli", "soak", "--frames", str(FRAMES), "--out",
                           str(tmp_path / "soak"), "--json", str(report_path)],
                          capture_output=True, text=True, timeout=120 + FRAMES // 20)
    assert report_path.is_file(), proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert proc.returncode == 0 and report["passed"], (report["problems"], proc.stdout[-2000:])
    assert report["frames"] == FRAMES and report["frames_received"] >= 0.95 * FRAMES  # paced: DDS drops little
    assert not report["crashed"] and report["node_exit_code"] == 0 and report["inference_failures"] == 0
    # every planted event, camera stops included, was alerted; every logged alert reached the subscriber
    assert report["events_planted"] >= 3 and report["events_alerted"] == report["events_planted"]
    assert any(e["category"] == "sensor_stale" for e in report["per_event"])
    assert report["alerts_lost"] == 0 and report["alerts_logged"] >= report["events_planted"]
    assert report["rss_mb"]["growth"] < 50.0
