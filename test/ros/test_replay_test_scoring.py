"""Scoring a node run against planted events: exact arithmetic on hand-built alerts and truth."""
from builtin_interfaces.msg import Time

from vila_ros.msg import CornerCaseAlert, SceneDescription
from vila_ros.tools.replay_test import timeline_markdown
from vila_ros.tools.scoring import Received, score

S = 1_000_000_000
T0 = 1_700_000_000 * S


def alert(camera, category, t, state=CornerCaseAlert.BEGIN):
    msg = CornerCaseAlert(camera=camera, category=category, state=state, alert_id=f"{camera}/{category}/{t}")
    msg.header.stamp = Time(sec=(T0 + int(t * S)) // S, nanosec=(T0 + int(t * S)) % S)
    return Received(msg, 0.0)


def truth(camera, events):
    return {"start_ns": T0, "cameras": {camera: {"topic": "/t", "segments": [], "events": [
        {"category": c, "start_ns": T0 + int(t * S), "end_ns": None, "start_s": t} for c, t in events]}}}


def test_recall_false_alerts_and_frames_to_alert():
    truths = [truth("front", [("red_light", 3.0), ("pedestrian_crossing", 13.0)]),
              truth("aisle", [("falling_object", 5.0)])]
    alerts = [alert("front", "red_light", 3.75),            # found, 0.75 s late = 3 frames at 4 fps
              alert("front", "red_light", 4.0, CornerCaseAlert.ONGOING),  # not a new alert
              alert("front", "vehicle_cut_in", 8.0),        # nothing planted: false
              alert("aisle", "falling_object", 1.0),        # too early for the event at 5 s: false
              alert("aisle", "falling_object", 5.5),        # found, 2 frames
              alert("front", "sensor_stale", 20.0)]         # not a corner case
    report = score(truths, [], alerts, {})
    assert (report["events"], report["alerted"], report["false_alerts"], report["alert_begins"]) == (3, 2, 2, 4)
    assert report["recall"] == 2 / 3 and report["precision"] == 0.5
    assert [e["frames_to_alert"] for e in report["per_event"]] == [3.0, None, 2.0]
    assert report["frames_to_alert_median"] == 2.5


def test_latency_uses_the_publish_time_of_the_newest_frame():
    description = SceneDescription(text="A road.", cameras=["front"])
    description.header.stamp = Time(sec=T0 // S, nanosec=0)
    report = score([truth("front", [])], [Received(description, 10.25)], [], {T0: 10.0})
    assert report["description_latency_ms_median"] == 250.0
    markdown = timeline_markdown([truth("front", [])], [Received(description, 10.25)], [], report)
    assert "| 0.00 | front | description (0 frames) | A road. |" in markdown


def test_an_alert_already_active_when_the_event_begins_counts_once():
    early = alert("front", "camera_blocked", 1.0)
    still_on = alert("front", "camera_blocked", 6.0, CornerCaseAlert.ONGOING)
    still_on.message.alert_id = early.message.alert_id
    stale_one = alert("front", "camera_blocked", 1.5)  # ended before the event: a false alert
    ended = alert("front", "camera_blocked", 2.0, CornerCaseAlert.END)
    ended.message.alert_id = stale_one.message.alert_id
    report = score([truth("front", [("camera_blocked", 5.0)])], [], [stale_one, ended, early, still_on], {})
    assert (report["alerted"], report["false_alerts"]) == (1, 1)
    assert report["per_event"][0]["seconds_to_alert"] == 0.0  # warned before it began
