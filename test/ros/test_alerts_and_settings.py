"""Alerts come complete out of the tracker and the stale monitor (severity, text, frame_id, ids from one scheme);
tracker settings are a validated object, applied as a whole."""
import math

import numpy as np
import pytest

from vila_ros import tasks
from vila_ros.ros.camera import Camera
from vila_ros.ros.events import BEGIN, END, EventTracker, TrackerSettings
from vila_ros.ros.frame_buffer import CameraBuffer, Frame
from vila_ros.ros.parameters import CameraSpec
from vila_ros.ros.stale import STALE_CATEGORY, StaleMonitor

S = 1_000_000_000


@pytest.mark.parametrize("fields, message", [
    ({"confirm": 0}, "confirm must be a whole number"),
    ({"clear": -1}, "clear must be a whole number"),
    ({"confirm": 1.5}, "confirm must be a whole number"),
    ({"clear": True}, "clear must be a whole number"),
    ({"ongoing_period_s": -0.1}, "ongoing_period_s must be a finite number"),
    ({"cooldown_s": math.inf}, "cooldown_s must be a finite number"),
    ({"cooldown_s": "5"}, "cooldown_s must be a finite number"),
])
def test_tracker_settings_refuse_bad_values_with_the_reason(fields, message):
    with pytest.raises(ValueError, match=message):
        TrackerSettings(**fields)
    with pytest.raises(ValueError, match=message):
        EventTracker(**fields)  # the keyword form goes through the same validation


def test_replaced_tracker_settings_apply_to_the_next_evaluation():
    tracker = EventTracker(TrackerSettings(confirm=1))
    assert [u.state for u in tracker.update("cam", ["x"], ["x"], 0, [0])] == [BEGIN]
    tracker.settings = TrackerSettings(confirm=1, clear=3)
    assert tracker.update("cam", ["x"], [], S, [S]) == [] and tracker.update("cam", ["x"], [], 2 * S, [2 * S]) == []
    assert [u.state for u in tracker.update("cam", ["x"], [], 3 * S, [3 * S])] == [END]


def test_updates_carry_severity_text_and_frame_id():
    tracker = EventTracker()
    updates = tracker.update("front", ["camera_blocked", "looks_dark", "plain_rule"],
                             ["camera_blocked", "looks_dark", "plain_rule"], 5 * S, [4 * S, 5 * S],
                             frame_id="front_optical", severities={"looks_dark": tasks.CRITICAL})
    by_category = {u.category: u for u in updates}
    assert by_category["camera_blocked"].severity == tasks.default_severity("camera_blocked")
    assert by_category["looks_dark"].severity == tasks.CRITICAL  # the rule's
    assert by_category["plain_rule"].severity == tasks.WARNING  # a rule without its own
    assert {u.frame_id for u in updates} == {"front_optical"}
    # Without an answer text, an alert says what its category means (or names it).
    assert by_category["camera_blocked"].text == tasks.CATEGORIES["camera_blocked"].description
    assert by_category["plain_rule"].text == "plain_rule"
    assert by_category["looks_dark"].evidence_stamps_ns == (4 * S, 5 * S)


def test_end_all_ends_open_alerts_once_and_ids_keep_counting():
    tracker = EventTracker()
    tracker.update("front", ["red_light", "animal_crossing"], ["red_light"], 3 * S, [3 * S], frame_id="f")
    ended = tracker.end_all("stopped")
    assert [(u.alert_id, u.state, u.stamp_ns, u.text, u.frame_id) for u in ended] == \
        [("front/red_light/1", END, 3 * S, "stopped", "f")]
    assert tracker.end_all("again") == []
    assert [u.alert_id for u in tracker.update("front", ["red_light"], ["red_light"], 4 * S, [4 * S])] == \
        ["front/red_light/2"]


def _camera(name="front"):
    return Camera(CameraSpec(name, f"/{name}/image_raw", False, 4.0), CameraBuffer(name, 0.25, 10.0, 8, 1 << 24))


def test_stale_monitor_begins_and_ends_on_its_own_clock():
    cameras = [_camera("front"), _camera("rear")]
    monitor = StaleMonitor(limit_s=2.0)
    assert monitor.check_period_s == pytest.approx(0.2)
    monitor.start(now=100.0)
    assert monitor.check(cameras, 101.9, lambda: 7 * S) == []
    cameras[0].buffer.add(Frame("front", 50 * S, "front_optical", np.zeros((4, 4, 3), np.uint8)))
    cameras[0].frame_id, cameras[0].last_frame_s = "front_optical", 101.0
    begins = monitor.check(cameras, 102.1, lambda: 7 * S)
    assert [(u.camera, u.state, u.alert_id, u.stamp_ns, u.severity) for u in begins] == \
        [("rear", BEGIN, f"rear/{STALE_CATEGORY}/1", 7 * S, tasks.WARNING)]  # rear never sent: the clock's stamp
    begins = monitor.check(cameras, 103.1, lambda: 8 * S)
    assert [(u.camera, u.alert_id, u.stamp_ns, u.frame_id, u.evidence_stamps_ns) for u in begins] == \
        [("front", f"front/{STALE_CATEGORY}/2", 50 * S, "front_optical", (50 * S,))]
    cameras[0].last_frame_s = 103.5
    ends = monitor.check(cameras, 103.6, lambda: 9 * S)
    assert [(u.camera, u.state, u.alert_id) for u in ends] == [("front", END, f"front/{STALE_CATEGORY}/2")]
    assert [(u.camera, u.state) for u in monitor.end_all(cameras, "stopped", lambda: 9 * S)] == [("rear", END)]
    assert cameras[1].stale_alert_id is None


def test_a_stale_limit_of_zero_is_off():
    monitor = StaleMonitor(0.0)
    monitor.start(0.0)
    assert not monitor.enabled and monitor.check([_camera()], 1e6, lambda: 0) == []
    with pytest.raises(ValueError):
        StaleMonitor(-1.0)


def test_a_rule_alert_has_the_rule_severity_from_the_worker():
    """The embedded default model answers "Is the camera blocked?" with yes on a black camera (and alerts it)."""
    from vila_ros.engine import create_engine
    from vila_ros.resources import resolve_model_dir
    from vila_ros.ros.worker import AlertRule, InferenceWorker, WorkerSettings

    engine = create_engine(resolve_model_dir(""))
    buffer = CameraBuffer("front", 0.0, 3600.0, 64, 1 << 28)
    for k in range(4):
        buffer.add(Frame("front", 1_700_000_000 * S + k * S // 4, "front_optical", np.zeros((240, 320, 3), np.uint8)))
    published = []
    settings = WorkerSettings(num_frames=4, min_frames=4, alert_categories=("camera_blocked",),
                              alert_rules=(AlertRule("looks_covered", "Is the camera blocked?", tasks.INFO),))
    worker = InferenceWorker(engine, {"front": buffer}, settings, lambda d: None, published.append)
    worker.check_alerts("front")
    by_category = {u.category: u for u in published}
    assert by_category["looks_covered"].severity == tasks.INFO
    assert by_category["camera_blocked"].severity == tasks.CRITICAL
    assert {u.frame_id for u in published} == {"front_optical"}


def test_alert_thresholds_come_from_the_checkpoint_only_where_the_engine_gives_logits(tiny_dir, tmp_path):
    import json
    import shutil

    from vila_ros.engine import create_engine
    from vila_ros.ros.parameters import alert_thresholds

    engine = create_engine(tiny_dir)
    assert alert_thresholds("model", str(tiny_dir), engine) == ()  # the checkpoint stores none
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    (model / "alert_thresholds.json").write_text(json.dumps({"camera_blocked": 0.9, "red_light": 0.4}))
    assert alert_thresholds("model", str(model), engine) == (("camera_blocked", 0.9), ("red_light", 0.4))
    assert alert_thresholds("", str(model), engine) == ()
    # A remote server has no public steps to score answers with: the generated answer decides.
    assert alert_thresholds("model", str(model), object()) == ()
    assert alert_thresholds(str(model / "alert_thresholds.json"), "", None) == (("camera_blocked", 0.9),
                                                                                ("red_light", 0.4))
    bad = tmp_path / "bad.json"
    for text, words in [("{", "alert_thresholds_file"), ('{"no_such": 0.5}', "no_such=0.5"),
                        ('{"red_light": 1.5}', "red_light=1.5")]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=words):
            alert_thresholds(str(bad), "", None)
    with pytest.raises(ValueError, match="missing.json"):
        alert_thresholds(str(tmp_path / "missing.json"), "", None)


def test_description_expression_comes_from_the_checkpoint_only_where_the_engine_can_constrain(tiny_dir, tmp_path):
    import shutil

    from vila_ros.engine import create_engine
    from vila_ros.resources import DEFAULT_MODEL_DIR, DESCRIPTION_REGEX_FILE
    from vila_ros.ros.parameters import describe_regex

    engine = create_engine(tiny_dir)
    assert describe_regex("model", str(tiny_dir), engine) == ""  # the checkpoint stores none: free text
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    (model / DESCRIPTION_REGEX_FILE).write_text(tasks.caption_regex() + "\n")
    assert describe_regex("model", str(model), engine) == tasks.caption_regex()  # the leading "[ ]?" kept
    assert describe_regex("", str(model), engine) == ""
    # The embedded default ships its caption grammar; a remote server or TensorRT-LLM engine cannot apply it.
    assert describe_regex("model", "", engine) == (DEFAULT_MODEL_DIR / DESCRIPTION_REGEX_FILE).read_text().rstrip()
    assert describe_regex("model", str(model), object()) == ""
    with pytest.raises(ValueError, match="cannot constrain decoding"):
        describe_regex(str(model / DESCRIPTION_REGEX_FILE), "", object())
    bad = tmp_path / "bad.txt"
    for text, words in [("(yes|no", "output_regex cannot be compiled"), ("\n", "is empty")]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=words):
            describe_regex(str(bad), "", engine)
    with pytest.raises(ValueError, match="missing.txt"):
        describe_regex(str(tmp_path / "missing.txt"), "", engine)


def test_shipped_description_expression_is_what_sim_grammar_writes(tmp_path):
    from vila_ros.cli import main
    from vila_ros.resources import DEFAULT_MODEL_DIR, DESCRIPTION_REGEX_FILE

    assert main(["sim", "grammar", "--out", str(tmp_path / DESCRIPTION_REGEX_FILE)]) == 0
    written = (tmp_path / DESCRIPTION_REGEX_FILE).read_text()
    assert (DEFAULT_MODEL_DIR / DESCRIPTION_REGEX_FILE).read_text() == written == tasks.caption_regex() + "\n"
