"""The node's bookkeeping without a model: frame buffers, alert events, the searchable history."""
import numpy as np
import pytest

from vila_ros.ros.events import BEGIN, END, ONGOING, EventTracker
from vila_ros.ros.frame_buffer import CameraBuffer, Frame
from vila_ros.ros.history import History

S = 1_000_000_000


def feed(buffer, stamps_s, size=8):
    kept = []
    for t in stamps_s:
        ns = int(round(t * S))
        if buffer.wants(ns):
            buffer.add(Frame(buffer.camera, ns, "f", np.zeros((size, size, 3), np.uint8)))
            kept.append(round(t, 3))
    return kept


def test_buffer_keeps_the_clip_rate_from_a_faster_camera_despite_jitter():
    buffer = CameraBuffer("front", keep_interval_s=0.25, max_age_s=10, max_frames=100, max_bytes=10**9)
    jitter = np.random.default_rng(0).uniform(-0.004, 0.004, 300)
    kept = feed(buffer, [i / 30 + j for i, j in enumerate(jitter)])
    gaps = np.diff(kept)
    assert len(kept) == pytest.approx(40, abs=2)  # 10 s at 4 fps
    assert gaps.min() >= 0.9 * 0.25 and gaps.max() < 0.25 + 2 / 30
    assert buffer.stats.received == 300 and buffer.stats.skipped_rate == 300 - len(kept)


def test_buffer_bounds_by_age_count_and_memory():
    by_age = CameraBuffer("a", 0.0, max_age_s=2.0, max_frames=1000, max_bytes=10**9)
    feed(by_age, [i * 0.5 for i in range(20)])
    assert [f.stamp_ns / S for f in by_age.window()] == [7.5, 8.0, 8.5, 9.0, 9.5]
    by_count = CameraBuffer("b", 0.0, max_age_s=100, max_frames=3, max_bytes=10**9)
    feed(by_count, range(10))
    assert len(by_count) == 3
    by_bytes = CameraBuffer("c", 0.0, max_age_s=100, max_frames=100, max_bytes=5 * 8 * 8 * 3)
    feed(by_bytes, range(10))
    assert len(by_bytes) == 5 and by_bytes.nbytes == 5 * 192
    assert by_bytes.stats.evicted == 5


def test_buffer_window_and_out_of_order_and_time_reset():
    buffer = CameraBuffer("a", 0.25, max_age_s=100, max_frames=100, max_bytes=10**9)
    feed(buffer, [0, 0.25, 0.5, 0.75, 1.0])
    assert feed(buffer, [0.9]) == []  # late frame: dropped, buffer untouched
    assert buffer.stats.skipped_out_of_order == 1
    assert [f.stamp_ns / S for f in buffer.window(seconds=0.5)] == [0.5, 0.75, 1.0]
    assert [f.stamp_ns / S for f in buffer.window(max_frames=2)] == [0.75, 1.0]
    assert feed(buffer, [0.0]) == [0.0]  # a bag restarting: time jumped back by a second or more
    assert buffer.stats.time_resets == 1 and len(buffer) == 1


def test_features_are_cached_and_counted_in_memory():
    torch = pytest.importorskip("torch")
    buffer = CameraBuffer("a", 0.0, max_age_s=100, max_frames=100, max_bytes=10**9)
    feed(buffer, [0, 1])
    frame = buffer.window()[0]
    buffer.attach_features(frame, torch.zeros(16, 32))
    assert buffer.nbytes == 2 * 192 + 16 * 32 * 4
    assert buffer.window()[0].features is frame.features


def test_events_begin_ongoing_end_with_stable_ids():
    tracker = EventTracker(confirm=2, clear=2, ongoing_period_s=1.0)
    cats = ("pedestrian_crossing", "red_light")
    states = []
    for t, detected in enumerate([[], ["red_light"], ["red_light"], ["red_light"], ["red_light"], [], [], []]):
        for update in tracker.update("front", cats, detected, t * S, [t * S]):
            states.append((t, update.category, update.state, update.alert_id))
    assert states == [(2, "red_light", BEGIN, "front/red_light/1"), (3, "red_light", ONGOING, "front/red_light/1"),
                      (4, "red_light", ONGOING, "front/red_light/1"), (6, "red_light", END, "front/red_light/1")]


def test_events_single_noisy_answer_and_cooldown():
    tracker = EventTracker(confirm=2, clear=1, cooldown_s=5.0)
    assert tracker.update("cam", ["x"], ["x"], 0, [0]) == []  # one answer is not an event
    assert tracker.update("cam", ["x"], [], S, [S]) == []
    tracker.update("cam", ["x"], ["x"], 2 * S, [])
    assert [u.state for u in tracker.update("cam", ["x"], ["x"], 3 * S, [])] == [BEGIN]
    assert [u.state for u in tracker.update("cam", ["x"], [], 4 * S, [])] == [END]
    tracker.update("cam", ["x"], ["x"], 5 * S, [])
    assert tracker.update("cam", ["x"], ["x"], 6 * S, []) == []  # cooling down
    assert [u.alert_id for u in tracker.update("cam", ["x"], ["x"], 10 * S, [])] == ["cam/x/2"]


def test_history_window_filter_kind_and_limit():
    history = History(max_records=100)
    for t in range(10):
        history.add("descriptions", t * S, f"scene {t} with a {'car' if t % 2 else 'person'}", f"d{t}")
    history.add("alerts", 5 * S, "red_light The light turns red.", "a5")
    found = history.search(start_ns=2 * S, end_ns=6 * S)
    assert found == {"descriptions": ["d2", "d3", "d4", "d5", "d6"], "alerts": ["a5"]}
    assert history.search(window_s=2.0)["descriptions"] == ["d7", "d8", "d9"]
    assert history.search(text="CAR", max_results=2)["descriptions"] == ["d7", "d9"]
    assert history.search(kind="alerts", text="red")["alerts"] == ["a5"]
    with pytest.raises(ValueError, match="kind"):
        history.search(kind="pictures")
    with pytest.raises(ValueError, match="start is after end"):
        history.search(start_ns=9 * S, end_ns=1 * S)
