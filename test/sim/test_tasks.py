"""The shared vocabulary: categories, prompts, captions and the parsers that read the model's answers."""
import re
from pathlib import Path

import pytest

from vila_ros import tasks
from vila_ros.sim import make_scenario, split_seeds

MSG = Path(__file__).resolve().parents[2] / "msg" / "CornerCaseAlert.msg"


def test_severities_match_the_alert_message():
    text = MSG.read_text()
    for name, value in (("INFO", tasks.INFO), ("WARNING", tasks.WARNING), ("CRITICAL", tasks.CRITICAL)):
        assert re.search(rf"uint8 {name}={value}\b", text)
    for c in tasks.CATEGORIES.values():
        assert c.severity in (tasks.INFO, tasks.WARNING, tasks.CRITICAL)
        assert c.description and set(c.families) <= set(tasks.FAMILIES)
        assert re.fullmatch(r"[a-z_]+", c.name)


def test_every_family_category_has_a_caption_sentence_and_a_question():
    for family in tasks.FAMILIES:
        for cat in tasks.categories_for(family):
            assert (family, cat) in tasks.EVENT_SENTENCES
            assert tasks.QA_TEMPLATES[cat][2] is True


@pytest.mark.parametrize("text,expected", [
    ("Yes.", True), ("yes, a pedestrian", True), ("No", False), ("no.", False), ("  NO it did not", False),
    ("maybe", None), ("", None), ("Not sure", None)])
def test_parse_yes_no(text, expected):
    assert tasks.parse_yes_no(text) is expected


def test_parse_categories():
    assert tasks.parse_categories("none") == []
    assert tasks.parse_categories("pedestrian_crossing, red_light") == ["pedestrian_crossing", "red_light"]
    assert tasks.parse_categories("red light and a vehicle cut-in") == ["red_light", "vehicle_cut_in"]
    assert tasks.parse_categories("red_light, red_light, banana") == ["red_light"]
    assert tasks.parse_categories("camera_blurred") == ["camera_blurred"]


def test_parse_count():
    assert [tasks.parse_count(t) for t in ("two", "3 cars", "zero", "none", "a car", "many")] == [2, 3, 0, 0, 1, None]


def test_caption_round_trip_and_alert_answer_over_many_scenarios():
    seen_events = set()
    for seed in split_seeds("train", 300):
        s = make_scenario(seed)
        start = s.event.start if s.event else 3.0
        stamps = [start - 1.0 + 0.25 * i for i in range(8)]
        truth = s.truth(stamps)
        assert tasks.caption_attributes(truth.caption) == truth.attributes, truth.caption
        static = tasks.caption_attributes(truth.static_caption)
        assert "event" not in static and static == {k: v for k, v in truth.attributes.items() if k != "event"}
        assert tasks.parse_categories(truth.alert_answer) == truth.categories
        seen_events.add(truth.attributes["event"])
    assert len(seen_events) >= 8


def test_caption_format_is_fixed_order():
    attrs = {"family": "road", "time": "night", "weather": "rain", "cars": 2, "pedestrians": 1, "cyclists": 0,
             "animals": 0, "boxes": 0, "sign": "none", "light": "red", "event": "pedestrian_crossing"}
    assert tasks.make_caption(attrs) == ("A road at night in rain. Two cars, a pedestrian and a red light. "
                                         "A pedestrian steps onto the road.")
    wh = {"family": "warehouse", "lighting": "dim", "people": 0, "forklifts": 0, "boxes": 0, "event": "none"}
    assert tasks.make_caption(wh) == "A warehouse aisle in dim light. An empty aisle. Nothing unusual happens."
    assert tasks.caption_attributes(tasks.make_caption(wh)) == wh


def test_caption_attributes_scores_a_partly_wrong_caption():
    truth = {"family": "road", "time": "day", "weather": "fog", "cars": 1, "pedestrians": 0, "cyclists": 0,
             "animals": 0, "boxes": 0, "sign": "stop", "light": "none", "event": "none"}
    pred = tasks.caption_attributes("A road in the day. Two cars and a stop sign. A car cuts in.")
    correct, total = tasks.attribute_accuracy(pred, truth)
    assert total == len(truth) and correct == len(truth) - 3  # weather, cars, event wrong
    assert tasks.caption_attributes("garbage") == {}


def test_alert_answer_orders_and_empties():
    assert tasks.alert_answer([]) == tasks.NO_ALERT_ANSWER
    assert tasks.alert_answer(["red_light", "pedestrian_crossing"]) == "pedestrian_crossing, red_light"
