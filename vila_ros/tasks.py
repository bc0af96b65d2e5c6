"""Shared vocabulary of the simulator, the trainer, the evaluator and the node.

Only the standard library is imported here: the node, the trainer and the simulator all read these names.

Contents
- Stamps: integer nanoseconds (``NANOSECONDS`` per second).
- Severities (``INFO``/``WARNING``/``CRITICAL`` = 0/1/2, as in ``msg/CornerCaseAlert.msg``).
- Corner-case categories (``CATEGORIES``): name, default severity, description, scene families, and whether the
  category is *temporal* (it is a change that needs several frames to see) or a *state* that one frame can show
  once it has developed (``camera_blocked``, ``camera_blurred``).
  Decision on warehouse names: the general names are reused where the meaning is the same (``falling_object``,
  ``camera_blocked``, ``camera_blurred``); a person stepping into the robot's aisle (``person_in_aisle``) and a
  forklift driving towards the robot (``forklift_approaching``) get their own names, because the road names
  (``pedestrian_crossing``, ``wrong_way_vehicle``) speak of a road and of traffic rules that an aisle does not have.
- The fixed prompts the embedded model is trained on (``DESCRIBE_PROMPT``, ``ALERT_PROMPT``) and the question
  templates (``QA_TEMPLATES``).
- Captions: short templated sentences in a fixed order (scene + lighting, objects, event), built from an attribute
  dict by ``make_caption`` and read back by ``caption_attributes`` (``caption_attributes(make_caption(a)) == a``).
- Parsers of the model's answers: ``parse_yes_no``, ``parse_categories``, ``parse_count``, ``caption_attributes``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

# Stamps everywhere (frames, events, alerts, recordings) are integer nanoseconds, as ROS builtin_interfaces/Time.
NANOSECONDS = 1_000_000_000  # per second

# --------------------------------------------------------------------------------------------------- severities
INFO = 0
WARNING = 1
CRITICAL = 2
SEVERITY_NAMES = {INFO: "info", WARNING: "warning", CRITICAL: "critical"}

FAMILIES = ("road", "warehouse")
# Frames a second of every simulator clip and stream window the recipes train on, and so the rate the node keeps.
CLIP_FPS = 4.0


@dataclass(frozen=True)
class CornerCase:
    name: str
    severity: int
    description: str
    families: tuple[str, ...]
    temporal: bool  # True: a change that needs several frames; False: a state one frame can show once developed


CATEGORIES: dict[str, CornerCase] = {
    c.name: c
    for c in (
        CornerCase("pedestrian_crossing", CRITICAL,
                   "A pedestrian steps from the curb onto the road in front of the vehicle.", ("road",), True),
        CornerCase("vehicle_cut_in", WARNING,
                   "A vehicle in the adjacent lane moves into our lane close ahead.", ("road",), True),
        CornerCase("wrong_way_vehicle", CRITICAL,
                   "A vehicle drives against the flow of traffic in our lane, coming towards us.", ("road",), True),
        CornerCase("falling_object", WARNING,
                   "An object falls onto the road or into the aisle ahead.", ("road", "warehouse"), True),
        CornerCase("red_light", WARNING,
                   "The traffic light ahead turns from green to red.", ("road",), True),
        CornerCase("animal_crossing", WARNING,
                   "An animal walks from the roadside across the road.", ("road",), True),
        CornerCase("person_in_aisle", CRITICAL,
                   "A person steps out from between the shelves into the robot's aisle.", ("warehouse",), True),
        CornerCase("forklift_approaching", CRITICAL,
                   "A forklift in the aisle starts driving towards the robot.", ("warehouse",), True),
        CornerCase("camera_blocked", CRITICAL,
                   "Something covers the camera and the view becomes dark.", ("road", "warehouse"), False),
        CornerCase("camera_blurred", WARNING,
                   "The camera image becomes blurred and loses its detail.", ("road", "warehouse"), False),
    )
}
CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)
# Faults of the camera itself: the scene behind them is unknown, so they belong to no scene (and to every family).
LENS_FAULTS: tuple[str, ...] = ("camera_blocked", "camera_blurred")


def categories_for(family: str) -> tuple[str, ...]:
    return tuple(name for name, c in CATEGORIES.items() if family in c.families)


def default_severity(category: str) -> int:
    return CATEGORIES[category].severity


# ------------------------------------------------------------------------------------------------------ prompts
DESCRIBE_PROMPT = "Describe the scene."
ALERT_PROMPT = "Which corner cases happen? Answer with category names separated by commas, or none."
NO_ALERT_ANSWER = "none"

# key -> (question, answer kind, temporal). Kinds: yes_no, count, colour, weather.
QA_TEMPLATES: dict[str, tuple[str, str, bool]] = {
    # road, single frame
    "night": ("Is it night?", "yes_no", False),
    "weather": ("What is the weather?", "weather", False),
    "cars": ("How many cars are there?", "count", False),
    "pedestrian": ("Is there a pedestrian?", "yes_no", False),
    "cyclist": ("Is there a cyclist?", "yes_no", False),
    "animal": ("Is there an animal?", "yes_no", False),
    "box_road": ("Is there a box on the road?", "yes_no", False),
    "traffic_light": ("Is there a traffic light?", "yes_no", False),
    "light_colour": ("What colour is the traffic light?", "colour", False),
    "stop_sign": ("Is there a stop sign?", "yes_no", False),
    # warehouse, single frame
    "dim": ("Is the light dim?", "yes_no", False),
    "people": ("How many people are there?", "count", False),
    "forklift": ("Is there a forklift?", "yes_no", False),
    "boxes_floor": ("How many boxes are on the floor?", "count", False),
    # temporal: one per category (key = category name)
    "pedestrian_crossing": ("Did a pedestrian step onto the road?", "yes_no", True),
    "vehicle_cut_in": ("Did a car cut in?", "yes_no", True),
    "wrong_way_vehicle": ("Did a car come the wrong way?", "yes_no", True),
    "falling_object": ("Did something fall?", "yes_no", True),
    "red_light": ("Did the light turn red?", "yes_no", True),
    "animal_crossing": ("Did an animal cross the road?", "yes_no", True),
    "person_in_aisle": ("Did a person step into the aisle?", "yes_no", True),
    "forklift_approaching": ("Did a forklift approach?", "yes_no", True),
    "camera_blocked": ("Did the camera get blocked?", "yes_no", True),
    "camera_blurred": ("Did the camera get blurred?", "yes_no", True),
}

# ----------------------------------------------------------------------------------------------------- captions
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")

# (attribute key, singular noun, plural noun) in caption order, per family
_COUNT_NOUNS = {
    "road": (("cars", "car", "cars"), ("pedestrians", "pedestrian", "pedestrians"), ("cyclists", "cyclist", "cyclists"),
             ("animals", "animal", "animals"), ("boxes", "box", "boxes")),
    "warehouse": (("people", "person", "people"), ("forklifts", "forklift", "forklifts"), ("boxes", "box", "boxes")),
}
ROAD_TIMES = ("day", "night")
ROAD_WEATHERS = ("clear", "rain", "fog")
WAREHOUSE_LIGHTING = ("bright", "dim")
SIGNS = ("none", "stop", "speed")
LIGHT_COLOURS = ("none", "green", "yellow", "red")

EVENT_SENTENCES: dict[tuple[str, str], str] = {
    ("road", "pedestrian_crossing"): "A pedestrian steps onto the road.",
    ("road", "vehicle_cut_in"): "A car cuts in.",
    ("road", "wrong_way_vehicle"): "A car comes the wrong way.",
    ("road", "falling_object"): "A box falls onto the road.",
    ("road", "red_light"): "The light turns red.",
    ("road", "animal_crossing"): "An animal crosses the road.",
    ("road", "camera_blocked"): "The camera gets blocked.",
    ("road", "camera_blurred"): "The camera gets blurred.",
    ("warehouse", "person_in_aisle"): "A person steps into the aisle.",
    ("warehouse", "forklift_approaching"): "A forklift approaches.",
    ("warehouse", "falling_object"): "A box falls into the aisle.",
    ("warehouse", "camera_blocked"): "The camera gets blocked.",
    ("warehouse", "camera_blurred"): "The camera gets blurred.",
}
NO_EVENT_SENTENCE = "Nothing unusual happens."
UNFAMILIAR_SCENE = "An unfamiliar scene."  # the whole description of a view that is neither a road nor an aisle
# The whole description of a window whose every frame is behind a covered lens: nothing of the scene (not even
# whether it is a road or an aisle) shows, so nothing of it is said. Its attributes are BLOCKED_VIEW_ATTRIBUTES.
BLOCKED_VIEW = "The camera is blocked. Nothing of the scene shows."
BLOCKED_VIEW_ATTRIBUTES = {"family": "blocked", "event": "camera_blocked"}
_EMPTY_SENTENCE = {"road": "No road users.", "warehouse": "An empty aisle."}

ATTRIBUTE_KEYS = {
    "road": ("family", "time", "weather", "cars", "pedestrians", "cyclists", "animals", "boxes", "sign", "light",
             "event"),
    "warehouse": ("family", "lighting", "people", "forklifts", "boxes", "event"),
}


def _count_phrase(n: int, singular: str, plural: str) -> str:
    if n == 1:
        return ("an " if singular[0] in "aeiou" else "a ") + singular
    return f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} {plural}"


def _sign_phrase(sign: str) -> str:
    return f"a {sign} sign"


def _light_phrase(colour: str) -> str:
    return f"a {colour} light"


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def scene_sentence(attrs: dict) -> str:
    if attrs["family"] == "road":
        text = "A road " + ("at night" if attrs["time"] == "night" else "in the day")
        if attrs["weather"] != "clear":
            text += " in " + attrs["weather"]
        return text + "."
    return f"A warehouse aisle in {attrs['lighting']} light."


def objects_sentence(attrs: dict) -> str:
    family = attrs["family"]
    items = [_count_phrase(attrs[key], s, p) for key, s, p in _COUNT_NOUNS[family] if attrs.get(key, 0) > 0]
    if family == "road":
        if attrs.get("sign", "none") != "none":
            items.append(_sign_phrase(attrs["sign"]))
        if attrs.get("light", "none") != "none":
            items.append(_light_phrase(attrs["light"]))
    if not items:
        return _EMPTY_SENTENCE[family]
    text = _join(items)
    return text[0].upper() + text[1:] + "."


def event_sentence(family: str, event: str) -> str:
    if event == "none":
        return NO_EVENT_SENTENCE
    return EVENT_SENTENCES[(family, event)]


def make_caption(attrs: dict, include_event: bool = True) -> str:
    """Caption in the fixed order: scene and lighting, objects, event (omitted with ``include_event=False``);
    ``BLOCKED_VIEW`` for the attributes of a covered lens (family "blocked"), with or without the event."""
    if attrs["family"] == BLOCKED_VIEW_ATTRIBUTES["family"]:
        return BLOCKED_VIEW
    parts = [scene_sentence(attrs), objects_sentence(attrs)]
    if include_event:
        parts.append(event_sentence(attrs["family"], attrs.get("event", "none")))
    return " ".join(parts)


def caption_regex() -> str:
    """The caption grammar as one regular expression: exactly the texts ``make_caption`` gives (with or without the
    event sentence, counts up to six), ``UNFAMILIAR_SCENE`` and ``BLOCKED_VIEW``, after an optional space (a trained
    answer's first token carries the space after the template's "ASSISTANT:"; readers strip it). Decoding
    constrained to it cannot produce a malformed description (`engine/json_schema.py`)."""
    def either(texts: Iterable[str]) -> str:
        return "(?:" + "|".join(re.escape(t) for t in texts) + ")"

    def family_caption(family: str) -> str:
        if family == "road":
            scenes = [scene_sentence({"family": family, "time": t, "weather": w})
                      for t in ROAD_TIMES for w in ROAD_WEATHERS]
        else:
            scenes = [scene_sentence({"family": family, "lighting": light}) for light in WAREHOUSE_LIGHTING]
        slots = [[_count_phrase(n, s, p) for n in range(1, len(NUMBER_WORDS))] for _, s, p in _COUNT_NOUNS[family]]
        if family == "road":
            slots += [[_sign_phrase(sign) for sign in SIGNS if sign != "none"],
                      [_light_phrase(colour) for colour in LIGHT_COLOURS if colour != "none"]]
        lists = []  # every non-empty subset of the slots, in caption order, joined as _join does
        for mask in range(1, 2 ** len(slots)):
            chosen = [slot for i, slot in enumerate(slots) if mask >> i & 1]
            first = either(p[0].upper() + p[1:] for p in chosen[0])
            parts = [first] + [either(slot) for slot in chosen[1:]]
            lists.append(parts[0] if len(parts) == 1 else
                         ", ".join(parts[:-1]) + " and " + parts[-1])
        objects = "(?:" + "|".join(lists) + r")\." + "|" + re.escape(_EMPTY_SENTENCE[family])
        events = [NO_EVENT_SENTENCE] + [s for (f, _), s in EVENT_SENTENCES.items() if f == family]
        return f"{either(scenes)} (?:{objects})(?: {either(events)})?"

    whole = [family_caption(family) for family in FAMILIES] + [re.escape(UNFAMILIAR_SCENE), re.escape(BLOCKED_VIEW)]
    return "[ ]?(?:" + "|".join(whole) + ")"


def alert_answer(categories: Iterable[str]) -> str:
    """The trained answer to ``ALERT_PROMPT``: category names in ``CATEGORY_NAMES`` order, or ``none``."""
    present = set(categories)
    names = [name for name in CATEGORY_NAMES if name in present]
    return ", ".join(names) if names else NO_ALERT_ANSWER


# ------------------------------------------------------------------------------------------------------ parsers
_YES = {"yes", "yeah", "yep", "true", "correct", "y"}
_NO = {"no", "nope", "false", "incorrect", "n"}


def parse_yes_no(text: str) -> bool | None:
    """``True``/``False`` from the first word of an answer ("Yes.", "no, it is not"); ``None`` when neither."""
    words = re.findall(r"[a-z]+", (text or "").lower())
    if not words:
        return None
    if words[0] in _YES:
        return True
    if words[0] in _NO:
        return False
    return None


def parse_categories(text: str) -> list[str]:
    """Known category names in an answer, in order of first appearance, without duplicates.

    Spaces or hyphens instead of underscores are accepted ("vehicle cut in"); "none" and unknown words give nothing.
    """
    norm = re.sub(r"[\s\-]+", "_", (text or "").lower())
    found: list[tuple[int, str]] = []
    for name in CATEGORY_NAMES:
        for match in re.finditer(rf"(?<![a-z]){name}(?![a-z])", norm):
            found.append((match.start(), name))
            break
    return [name for _, name in sorted(found)]


def parse_count(text: str) -> int | None:
    """A count from an answer: digits or a number word ("two", "no", "none", "a"/"an" = 1)."""
    words = re.findall(r"[a-z]+|\d+", (text or "").lower())
    for word in words:
        if word.isdigit():
            return int(word)
        if word in NUMBER_WORDS:
            return NUMBER_WORDS.index(word)
        if word in ("no", "none"):
            return 0
        if word in ("a", "an", "single"):
            return 1
    return None


def _sentences(text: str) -> list[str]:
    return [s.strip() + "." for s in re.split(r"\.\s*", (text or "").strip()) if s.strip()]


def caption_attributes(text: str) -> dict:
    """The structured attributes of a caption made by ``make_caption`` (what a model may get partly right).

    Returns only what the text states; counts absent from a parsed objects sentence are 0 (captions list every
    non-zero count), sign/light absent are "none", a missing event sentence leaves "event" out.
    """
    attrs: dict = {}
    if " ".join((text or "").split()) == BLOCKED_VIEW:
        return dict(BLOCKED_VIEW_ATTRIBUTES)
    sentences = _sentences(text)
    if not sentences:
        return attrs
    head = sentences[0].lower()
    if head.startswith("a road"):
        attrs["family"] = "road"
        attrs["time"] = "night" if "at night" in head else "day"
        attrs["weather"] = "rain" if " in rain" in head else "fog" if " in fog" in head else "clear"
    elif head.startswith("a warehouse"):
        attrs["family"] = "warehouse"
        attrs["lighting"] = "dim" if "dim" in head else "bright"
    else:
        return attrs
    family = attrs["family"]
    event_by_sentence = {s.lower(): c for (f, c), s in EVENT_SENTENCES.items() if f == family}
    for sentence in sentences[1:]:
        low = sentence.lower()
        if low in event_by_sentence:
            attrs["event"] = event_by_sentence[low]
        elif low == NO_EVENT_SENTENCE.lower():
            attrs["event"] = "none"
        elif "counted" not in attrs:
            attrs.update(_parse_objects(family, low))
            attrs["counted"] = True
    attrs.pop("counted", None)
    return attrs


def _parse_objects(family: str, sentence: str) -> dict:
    out: dict = {key: 0 for key, _, _ in _COUNT_NOUNS[family]}
    if family == "road":
        out.update(sign="none", light="none")
    if sentence == _EMPTY_SENTENCE[family].lower():
        return out
    nouns = {}
    for key, singular, plural in _COUNT_NOUNS[family]:
        nouns[singular] = key
        nouns[plural] = key
    items = re.split(r",\s*|\s+and\s+", sentence.rstrip("."))
    for item in items:
        item = item.strip()
        m = re.fullmatch(r"a (stop|speed) sign", item)
        if m and family == "road":
            out["sign"] = m.group(1)
            continue
        m = re.fullmatch(r"an? (green|yellow|red) light", item)
        if m and family == "road":
            out["light"] = m.group(1)
            continue
        m = re.fullmatch(r"(an?|\d+|[a-z]+) ([a-z]+)", item)
        if m and m.group(2) in nouns:
            n = parse_count(m.group(1))
            if n is not None:
                out[nouns[m.group(2)]] = n
    return out


def attribute_accuracy(predicted: dict, truth: dict) -> tuple[int, int]:
    """(correct, total) over the attributes of ``truth`` (what the evaluator sums for caption attribute accuracy)."""
    keys = [k for k in truth if k != "family"] + ["family"]
    return sum(1 for k in keys if predicted.get(k) == truth[k]), len(keys)
