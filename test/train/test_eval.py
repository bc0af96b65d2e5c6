"""`vila-ros eval`: pure scoring on hand-built predictions, the scenario/stretch layout, and real runs on a tiny
random checkpoint (the conftest's ``tiny_ckpt``): JSON structure and ranges, one image on the single-frame path,
determinism, and the CLI end to end (eval.json, eval.md, eval.png)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vila_ros import tasks
from vila_ros.train import eval as E

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ pure scoring
def test_prf_known_counts():
    r = E.prf(3, 1, 2)
    assert r["precision"] == pytest.approx(0.75)
    assert r["recall"] == pytest.approx(0.6)
    assert r["f1"] == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    assert r["support"] == 5
    none = E.prf(0, 0, 0)
    assert none["precision"] is None and none["recall"] is None and none["f1"] is None
    missed = E.prf(0, 0, 4)  # never predicted: precision undefined, F1 0
    assert missed["precision"] is None and missed["recall"] == 0.0 and missed["f1"] == 0.0


def test_score_alerts_hand_counts():
    a, b, c = "pedestrian_crossing", "vehicle_cut_in", "camera_blocked"
    truth = [[a], [b], [], [a, b], [], [c]]
    pred = [[a], [], [a], [a, c], [], [c]]
    texts = ["pedestrian_crossing", "none", "pedestrian_crossing", "pedestrian_crossing, camera_blocked", "blah",
             "camera_blocked"]
    r = E.score_alerts(pred, truth, answers=texts)
    pa, pb, pc = (r["per_category"][x] for x in (a, b, c))
    assert (pa["tp"], pa["fp"], pa["fn"]) == (2, 1, 0)
    assert (pb["tp"], pb["fp"], pb["fn"]) == (0, 0, 2)
    assert (pc["tp"], pc["fp"], pc["fn"]) == (1, 1, 0)
    assert pa["precision"] == pytest.approx(2 / 3) and pa["recall"] == 1.0 and pa["f1"] == pytest.approx(0.8)
    assert pb["precision"] is None and pb["recall"] == 0.0 and pb["f1"] == 0.0
    assert pc["f1"] == pytest.approx(2 / 3)
    assert r["micro"]["precision"] == pytest.approx(3 / 5)
    assert r["micro"]["recall"] == pytest.approx(3 / 5)
    assert r["micro"]["f1"] == pytest.approx(0.6)
    assert r["macro"]["f1"] == pytest.approx((0.8 + 0.0 + 2 / 3) / 3)
    assert r["exact_match"] == pytest.approx(3 / 6)
    assert r["no_event_clips"] == 2 and r["false_alert_rate"] == pytest.approx(0.5)
    assert r["unparsed_answers"] == 1  # "blah" (the "none" answer is a parsed no-alert)
    # requested categories without support or predictions are listed with undefined scores, not in the macro
    r2 = E.score_alerts(pred, truth, categories=["red_light"])
    assert list(r2["per_category"])[0] == "red_light" and r2["per_category"]["red_light"]["f1"] is None
    assert r2["macro"]["f1"] == pytest.approx(r["macro"]["f1"])
    with pytest.raises(ValueError):
        E.score_alerts(pred[:2], truth)


def test_pooled_recall_splits_temporal_and_state():
    truth = [["pedestrian_crossing"], ["camera_blocked"], ["falling_object"]]
    pred = [["pedestrian_crossing"], ["camera_blocked"], []]
    r = E.score_alerts(pred, truth)
    assert E.pooled_recall(r, temporal=True) == {"tp": 1, "support": 2, "recall": 0.5}
    assert E.pooled_recall(r, temporal=False) == {"tp": 1, "support": 1, "recall": 1.0}


def test_answer_correct_and_score_qa():
    assert E.answer_correct("yes_no", "Yes.", "yes") and not E.answer_correct("yes_no", "no", "yes")
    assert not E.answer_correct("yes_no", "maybe", "no")  # unparsable is wrong, never a free "no"
    assert E.answer_correct("count", "two", "two") and E.answer_correct("count", "2", "two")
    assert not E.answer_correct("count", "three", "two") and not E.answer_correct("count", "", "zero")
    assert E.answer_correct("colour", "red", "red") and E.answer_correct("colour", "It is red.", "red")
    assert not E.answer_correct("colour", "red or green", "red") and not E.answer_correct("colour", "green", "red")
    assert E.answer_correct("weather", "fog", "fog") and not E.answer_correct("weather", "rain", "fog")
    with pytest.raises(ValueError):
        E.answer_correct("bogus", "x", "y")
    recs = [
        {"key": "night", "kind": "yes_no", "temporal": False, "predicted": "yes", "answer": "yes"},
        {"key": "cars", "kind": "count", "temporal": False, "predicted": "one", "answer": "two"},
        {"key": "weather", "kind": "weather", "temporal": False, "predicted": "rain", "answer": "rain"},
        {"key": "red_light", "kind": "yes_no", "temporal": True, "predicted": "no", "answer": "yes"},
        {"key": "falling_object", "kind": "yes_no", "temporal": True, "predicted": "no", "answer": "no"},
    ]
    r = E.score_qa(recs)
    assert r["overall"] == {"n": 5, "correct": 3, "accuracy": pytest.approx(0.6)}
    assert r["per_kind"]["yes_no"]["accuracy"] == pytest.approx(2 / 3)
    assert r["per_kind"]["count"]["accuracy"] == 0.0
    assert r["temporal"]["accuracy"] == pytest.approx(0.5) and r["static"]["accuracy"] == pytest.approx(2 / 3)
    assert r["per_key"]["red_light"]["correct"] == 0
    assert r["temporal_yes"] == {"n": 1, "correct": 0, "accuracy": 0.0}
    assert r["temporal_no"] == {"n": 1, "correct": 1, "accuracy": 1.0}


def test_score_captions_exact_and_one_wrong_attribute():
    attrs = {"family": "road", "time": "night", "weather": "fog", "cars": 2, "pedestrians": 1, "cyclists": 0,
             "animals": 0, "boxes": 0, "sign": "stop", "light": "red", "event": "red_light"}
    truth = {"attributes": attrs, "caption": tasks.make_caption(attrs),
             "static_caption": tasks.make_caption(attrs, include_event=False)}
    wrong_count = tasks.make_caption(dict(attrs, cars=3))
    static_only = tasks.make_caption(attrs, include_event=False)
    r = E.score_captions([truth["caption"], wrong_count, static_only, "garbage"], [truth] * 4)
    n = len(attrs)
    assert r["overall"]["n"] == 4 * n
    assert r["overall"]["correct"] == n + (n - 1) + (n - 1) + 0
    assert r["per_attribute"]["cars"]["accuracy"] == pytest.approx(2 / 4)
    assert r["per_attribute"]["event"]["accuracy"] == pytest.approx(2 / 4)
    assert r["overall_static"]["correct"] == (n - 1) + (n - 2) + (n - 1)
    assert r["exact"] == pytest.approx(1 / 4) and r["exact_static"] == pytest.approx(2 / 4)
    assert r["unparsed"] == 1


def test_frames_to_alert_known_sequence():
    cat = "pedestrian_crossing"
    ends = list(range(7, 20))  # 8-frame windows over 20 frames; first frame after the start: 8
    preds = [[] for _ in ends]
    preds[0] = [cat]  # window ending at 7 is before the start: not a detection
    preds[2] = ["vehicle_cut_in"]  # ends at 9, wrong category
    preds[3] = [cat, "camera_blocked"]  # ends at 10
    preds[5] = [cat]
    assert E.frames_to_alert(preds, ends, cat, 8) == 2
    assert E.frames_to_alert(preds, ends, "camera_blocked", 8) == 2
    assert E.frames_to_alert(preds, ends, "red_light", 8) is None
    assert E.frames_to_alert([[cat]] * len(ends), ends, cat, 8) == 0
    assert E.frames_to_alert(list(reversed(preds)), list(reversed(ends)), cat, 8) == 2  # order of windows


def test_summarize_frames_to_alert():
    s = E.summarize_frames_to_alert([2, 0, None, 5], clip_fps=4.0, pre_event_alerts=[True, False, False, False])
    assert s["events"] == 4 and s["detected"] == 3 and s["detection_rate"] == pytest.approx(0.75)
    assert s["median_frames"] == 2 and s["mean_frames"] == pytest.approx(7 / 3)
    assert s["median_seconds"] == pytest.approx(0.5)
    assert s["histogram"] == {"0": 1, "2": 1, "5": 1, "miss": 1}
    assert s["pre_event_false_alert_rate"] == pytest.approx(0.25)
    empty = E.summarize_frames_to_alert([None], 4.0)
    assert empty["median_frames"] is None and empty["detection_rate"] == 0.0


# ----------------------------------------------------------------------------------------- scenario layout
def test_case_clip_is_make_clip_and_stretch_brackets_the_start():
    from vila_ros.sim import make_clip, split_seeds

    seeds = split_seeds("test", 12)
    cases = [E.build_case(s, num_frames=8, stretch=20) for s in seeds]
    event_cases = [c for c in cases if c.category is not None]
    assert event_cases and len(event_cases) < len(cases)
    for case in cases[:3]:
        clip = make_clip(case.seed, num_frames=8, size=48)
        got = [case.stamps[j] for j in case.clip_frames]
        assert got == clip.stamps  # bit-identical stamps, so identical frames
        assert case.truth.to_dict() == clip.truth.to_dict()
        assert all(np.array_equal(case.scenario.render(t, 48, 48), f) for t, f in zip(got, clip.frames))
    for case in event_cases:
        start = case.scenario.event.start
        s = case.start_frame
        assert len(case.stamps) == 20 and s == 8
        assert case.stamps[s - 1] <= start < case.stamps[s]
        first = case.stamps[case.windows[0]:case.windows[0] + 8]
        assert case.scenario.events_in(first) == []  # the first window is event-free
        assert case.scenario.events_in(case.stamps[s - 6:s + 2])  # a window ending at s + 1 shows it
        assert case.last_frame == case.clip_offset + 7
        assert case.frame_truth.stamps == [case.stamps[case.last_frame]]


# ------------------------------------------------------------------------------------------- real tiny model
@pytest.fixture(scope="module")
def tiny_engine(tiny_ckpt):
    import torch

    torch.set_num_threads(1)
    from vila_ros.engine import create_engine

    return create_engine(tiny_ckpt)


@pytest.fixture(scope="module")
def tiny_result(tiny_engine):
    return E.evaluate(tiny_engine, count=4, offset=3, max_new_tokens={"caption": 24, "alert": 12, "qa": 4})


def _walk(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def test_result_structure_and_ranges(tiny_result, tiny_engine):
    from vila_ros.sim import split_seeds

    r = tiny_result
    assert set(r) == {"meta", "summary", "targets", "clip", "single_frame", "temporal_recall", "clips"}
    json.dumps(r, allow_nan=False)  # plain JSON
    meta = r["meta"]
    assert meta["seeds"] == split_seeds("test", 4, 3) and meta["count"] == 4 and meta["split"] == "test"
    assert meta["num_frames"] == tiny_engine.num_video_frames and meta["decoding"] == "greedy"
    assert meta["timing"]["total_s"] > 0 and meta["timing"]["generations"] > 0
    for mode in ("clip", "single_frame"):
        m = r[mode]
        assert set(m) == {"caption", "qa", "alerts", "frames_to_alert"}
        assert m["caption"]["clips"] == 4 and m["alerts"]["clips"] == 4
        assert m["qa"]["overall"]["n"] == sum(len(E.build_case(s, num_frames=meta["num_frames"]).truth.qa)
                                             for s in meta["seeds"])
        assert set(m["qa"]["per_kind"]) <= {"yes_no", "count", "colour", "weather"}
        assert m["frames_to_alert"]["events"] == meta["event_clips"]
        for key, row in m["alerts"]["per_category"].items():
            assert key in tasks.CATEGORIES and row["tp"] + row["fn"] == row["support"]
    for path, value in _walk({k: r[k] for k in ("summary", "clip", "single_frame", "temporal_recall")}):
        leaf = path.rsplit(".", 1)[-1]
        if any(w in leaf for w in ("accuracy", "precision", "recall", "f1", "rate", "exact")) and value is not None:
            assert 0.0 <= value <= 1.0, path
        if leaf in ("single_frame", "clip") and path.startswith(".summary") and value is not None \
                and "frames_to_alert" not in path:
            assert 0.0 <= value <= 1.0, path
    for name, target in r["targets"].items():
        assert target["met"] == (target["value"] is not None and target["value"] >= target["target"]), name
    assert len(r["clips"]) == 4 and all("caption" in c["clip"] for c in r["clips"])


def test_single_frame_path_uses_one_image(tiny_result, tiny_engine):
    from vila_ros.engine import GenerationConfig

    n = tiny_result["meta"]["num_frames"]
    assert n > 1
    frame = np.zeros((56, 56, 3), np.uint8)
    feats = tiny_engine.encode_frames([frame] * n)
    cfg = GenerationConfig(max_new_tokens=1)
    one = tiny_engine.generate(tasks.ALERT_PROMPT, feats[:1], cfg).prompt_tokens
    clip = tiny_engine.generate(tasks.ALERT_PROMPT, feats, cfg).prompt_tokens
    assert clip > one + (n - 1) * tiny_engine.tokens_per_image - 1
    for rec in tiny_result["clips"]:
        assert rec["single_frame"]["alert_prompt_tokens"] == one
        assert rec["clip"]["alert_prompt_tokens"] == clip


def test_deterministic(tiny_result, tiny_engine):
    again = E.evaluate(tiny_engine, count=4, offset=3, max_new_tokens={"caption": 24, "alert": 12, "qa": 4})

    def strip(result):
        meta = {k: v for k, v in result["meta"].items() if k != "timing"}
        return json.dumps(dict(result, meta=meta), sort_keys=True)

    assert strip(again) == strip(tiny_result)


def test_evaluate_rejects_bad_arguments(tiny_engine):
    with pytest.raises(ValueError):
        E.evaluate(tiny_engine, count=0)
    with pytest.raises(ValueError):
        E.evaluate(tiny_engine, count=1, family="space")
    with pytest.raises(ValueError, match="clip_fps"):
        E.evaluate(tiny_engine, count=1, clip_fps=0.0)


def test_cli_end_to_end(tiny_ckpt, tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "vila_ros.cli", "eval", "--model", str(tiny_ckpt), "--split", "val", "--count", "3",
         "--family", "road", "--clip-fps", "5", "--threads", "1", "--json", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout)
    written = json.loads((out / "eval.json").read_text())
    assert printed["summary"] == written["summary"]
    assert printed["meta"]["split"] == "val" and printed["meta"]["family"] == "road"
    assert printed["meta"]["clip_fps"] == 5.0
    assert all(c["family"] == "road" for c in printed["clips"])
    md = (out / "eval.md").read_text()
    for heading in ("## Overall", "## Alerts per category", "## Frames-to-alert", "## QA accuracy per kind",
                    "## Caption attributes"):
        assert heading in md
    assert "| caption attribute accuracy |" in md
    png = (out / "eval.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    bad = subprocess.run([sys.executable, "-m", "vila_ros.cli", "eval", "--model", str(tmp_path / "missing"),
                          "--count", "1", "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
