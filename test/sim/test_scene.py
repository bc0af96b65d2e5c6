"""Scenarios: determinism, event timing against pixels, distractors, splits, resolution independence."""
import json

import cv2
import numpy as np
import pytest

from vila_ros import tasks
from vila_ros.sim import MIN_VISIBLE, clip_window, make_clip, make_scenario, split_of, split_seeds


def _changed(a, b, thresh=30):
    return int((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > thresh).sum())


def test_same_seed_same_clip_and_different_seed_different_clip():
    a, b, c = make_clip(11), make_clip(11), make_clip(12)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    assert a.truth.to_dict() == b.truth.to_dict() and a.stamps == b.stamps
    assert not all(np.array_equal(x, y) for x, y in zip(a.frames, c.frames))
    frame = a.frames[0]
    assert frame.shape == (112, 112, 3) and frame.dtype == np.uint8
    assert len(a.frames) == 8 and np.allclose(np.diff(a.stamps), 0.25)


@pytest.mark.parametrize("category", tasks.CATEGORY_NAMES)
def test_event_truth_matches_the_pixels(category):
    for seed in split_seeds("val", 3, offset=100 * tasks.CATEGORY_NAMES.index(category)):
        clip = make_clip(seed, category=category)
        truth = clip.truth
        assert truth.categories == [category]
        event = truth.events[0]
        assert event["severity"] == tasks.default_severity(category)
        k = event["first_frame"]
        assert 2 <= k <= 6
        assert clip.stamps[k - 1] <= event["start"] < clip.stamps[k]
        assert clip.stamps[k + 1] >= event["start"] + MIN_VISIBLE
        assert truth.attributes["event"] == category and truth.alert_answer == category
        assert dict((q["key"], q["answer"]) for q in truth.qa)[category] == "yes"
        # the same world without the event: identical before the start, clearly different after it
        calm = clip.scenario.without_event()
        for i, t in enumerate(clip.stamps):
            ref = calm.render(t, 112, 112)
            if i < k:
                assert np.array_equal(clip.frames[i], ref), f"{category} visible at frame {i} before its start"
        late = clip.scenario.event.start + 1.5
        assert _changed(clip.frames[k + 1], calm.render(clip.stamps[k + 1], 112, 112)) >= 4, category
        assert _changed(clip.scenario.render(late, 112, 112), calm.render(late, 112, 112)) >= 15, category


@pytest.mark.parametrize("family", ["road", "warehouse"])
def test_distractor_clips_have_no_event(family):
    for seed in split_seeds("train", 15, offset=5000):
        clip = make_clip(seed, family=family, category=None)
        t = clip.truth
        assert t.events == [] and t.alert_answer == "none" and t.attributes["event"] == "none"
        assert t.caption.endswith(tasks.NO_EVENT_SENTENCE)
        assert all(q["answer"] == "no" for q in t.qa if q["temporal"])


def test_event_clip_windows_cover_frames_two_to_six_and_some_clips_are_calm():
    firsts, calm = set(), 0
    for seed in split_seeds("train", 120):
        t = make_scenario(seed)
        if t.event is None:
            calm += 1
        clip_truth = t.truth(clip_window(t, seed))
        firsts.update(e["first_frame"] for e in clip_truth.events)
        assert bool(clip_truth.events) == (t.event is not None)
    assert firsts == {2, 3, 4, 5, 6}
    assert 10 <= calm <= 60


def test_window_before_the_event_holds_no_event():
    s = make_scenario(7, category="pedestrian_crossing")
    start = s.event.start
    assert s.truth([start - 2.0 + 0.25 * i for i in range(8)]).events == []
    assert s.truth([start - 1.0 + 0.25 * i for i in range(8)]).categories == ["pedestrian_crossing"]
    assert s.truth([start + 0.1]).events == []  # one frame too soon after the start to show it
    assert s.truth([s.event.end + 1.0 + 0.25 * i for i in range(8)]).events == []


def test_single_frame_ambiguity_distractor_world_matches_start_state():
    # A red-light clip's first frame looks like a stays-green world; a blocked camera starts like a clear one.
    for category in ("red_light", "camera_blocked", "vehicle_cut_in", "forklift_approaching"):
        clip = make_clip(3, category=category)
        assert clip.scenario.without_event().truth(clip.stamps[:1]).events == []
        assert np.array_equal(clip.frames[0], clip.scenario.without_event().render(clip.stamps[0], 112, 112))


def test_render_is_time_continuous_and_resolution_independent():
    s = make_scenario(21, family="road", category="vehicle_cut_in")
    t = s.event.start + 0.5
    small = s.render(t, 112, 112).astype(np.float32)
    big = cv2.resize(s.render(t, 640, 480), (112, 112), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(small - big).mean() < 12
    a, b = s.render(t, 112, 112).astype(np.int16), s.render(t + 0.01, 112, 112).astype(np.int16)
    assert np.abs(a - b).mean() < 3  # 10 ms later: nearly the same frame
    assert s.render(t, 64, 48).shape == (48, 64, 3)


def test_splits_are_disjoint():
    tr, va, te = (set(split_seeds(s, 1000)) for s in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert split_of(next(iter(te))) == "test" and split_seeds("train", 3, offset=5) == [5, 6, 7]
    with pytest.raises(ValueError):
        split_seeds("dev", 3)


def test_truth_is_json_serialisable():
    for cat in (None, "camera_blocked", "red_light"):
        t = make_clip(5, category=cat).truth
        back = json.loads(json.dumps(t.to_dict()))
        assert back["caption"] == t.caption and back["events"] == t.events


def test_forced_category_picks_a_family_and_rejects_impossible_ones():
    assert make_scenario(1, category="forklift_approaching").family == "warehouse"
    assert make_scenario(1, category="red_light").family == "road"
    with pytest.raises(ValueError):
        make_scenario(1, family="warehouse", category="red_light")
    with pytest.raises(ValueError):
        make_scenario(1, category="alien_invasion")
