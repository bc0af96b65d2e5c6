"""Scoring what the node published on a stream against the stream's truth: alerts (per-event recall, BEGIN
precision, false alerts per camera-hour, frames-to-alert, END delay) and descriptions (correct for their window,
events named before their onset, malformed text). Plain records in, numbers out: the in-process evaluation and a
replay over DDS (`records_from_messages` in `stream_eval`) are scored by the same code.

Records: an alert is ``{"camera", "category", "state" (0 BEGIN, 1 ONGOING, 2 END), "stamp_ns", "alert_id",
"confidence"}``, a description ``{"camera", "stamps_ns": [...], "text"}``. Truth: per camera, a bag sidecar's
camera entry (``segments`` with ``start_ns``/``end_ns``, ``events`` with ``category``, ``start_ns``, ``end_ns``).
An event is alerted when it matches the first unused BEGIN of its camera and category from 0.5 s before its start
to 2 s after its end; every other BEGIN is false, including one raised before the event that was still active when
it began (it named a category before anything showed it). `replay-test` also counts such an alert as finding the
event: `recall_with_earlier_alerts` and `precision_with_earlier_alerts` are its figures.
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Callable

from vila_ros import tasks
from vila_ros.sim.streams import frame_times, scenario_of
from vila_ros.sim.truth import MIN_VISIBLE
from vila_ros.tasks import NANOSECONDS

BEGIN, ONGOING, END = 0, 1, 2
OPEN_EVENT_S = 10  # how long an event without an end counts as matchable
WILSON_Z = 1.959964  # two-sided 95%


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95% by default), None for no trials. A stream split holds tens
    of events, so a recall of 31 of 33 is 0.80-0.98: the interval says how far a figure can be trusted, and the
    Wilson form stays inside 0..1 and is not empty at 0 or n successes, unlike the normal approximation."""
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be between 0 and trials ({trials}): {successes}")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    # At 0 or n successes the bound is exactly 0 or 1; computed, it comes out a rounding error away.
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == trials else centre + half)


def camera_seconds(cameras: dict[str, dict]) -> float:
    """Seconds of recording over all cameras of a truth sidecar's `cameras`."""
    return sum((seg["end_ns"] - seg["start_ns"]) / NANOSECONDS for spec in cameras.values() for seg in spec["segments"])


def match_span_ns(event: dict) -> tuple[int, int]:
    """Where a BEGIN of an event's camera and category finds it: from 0.5 s before its start to 2 s after its end
    (`OPEN_EVENT_S` after its start for one without an end)."""
    end = event["end_ns"] if event["end_ns"] is not None else event["start_ns"] + OPEN_EVENT_S * NANOSECONDS
    return event["start_ns"] - NANOSECONDS // 2, end + 2 * NANOSECONDS


def score_alerts(cameras: dict[str, dict], alerts: list[dict], clip_fps: float) -> dict:
    events = [(camera, event) for camera, spec in cameras.items() for event in spec["events"]]
    begins = [a for a in alerts if a["state"] == BEGIN and a["category"] != "sensor_stale"]
    last_ns: dict[str, int] = {}
    end_ns_of: dict[str, int] = {}
    for a in alerts:
        last_ns[a["alert_id"]] = max(last_ns.get(a["alert_id"], 0), a["stamp_ns"])
        if a["state"] == END:
            end_ns_of[a["alert_id"]] = a["stamp_ns"]
    used: set[int] = set()
    covering: set[int] = set()  # BEGINs raised before an event and still active when it began
    per_event = []
    for camera, event in events:
        first, last = match_span_ns(event)
        match = next((i for i, a in enumerate(begins) if i not in used and a["camera"] == camera
                      and a["category"] == event["category"] and first <= a["stamp_ns"] <= last), None)
        earlier = None
        if match is None:
            earlier = next((i for i, a in enumerate(begins) if i not in used and i not in covering
                            and a["camera"] == camera and a["category"] == event["category"]
                            and a["stamp_ns"] < event["start_ns"]
                            and last_ns.get(a["alert_id"], 0) >= event["start_ns"]), None)
            if earlier is not None:
                covering.add(earlier)
        record = {"camera": camera, "category": event["category"], "start_ns": event["start_ns"],
                  "end_ns": event["end_ns"], "alerted": match is not None, "alerted_earlier": earlier is not None,
                  "seconds_to_alert": None, "frames_to_alert": None, "end_delay_s": None}
        if match is not None:
            used.add(match)
            alert = begins[match]
            seconds = max(0.0, (alert["stamp_ns"] - event["start_ns"]) / NANOSECONDS)
            record.update(seconds_to_alert=round(seconds, 3), frames_to_alert=round(seconds * clip_fps, 2))
            ended = end_ns_of.get(alert["alert_id"])
            if event["end_ns"] is not None and ended is not None:
                record["end_delay_s"] = round((ended - event["end_ns"]) / NANOSECONDS, 3)
        per_event.append(record)
    false = [{"camera": a["camera"], "category": a["category"], "stamp_ns": a["stamp_ns"]}
             for i, a in enumerate(begins) if i not in used]
    hours = camera_seconds(cameras) / 3600
    categories = sorted({e["category"] for _, e in events} | {a["category"] for a in begins})
    per_category = {}
    for category in categories:
        n_events = sum(1 for e in per_event if e["category"] == category)
        found = sum(1 for e in per_event if e["category"] == category and e["alerted"])
        n_begins = sum(1 for a in begins if a["category"] == category)
        n_false = sum(1 for a in false if a["category"] == category)
        per_category[category] = {"events": n_events, "alerted": found,
                                  "recall": found / n_events if n_events else None,
                                  "recall_interval": wilson_interval(found, n_events), "begins": n_begins,
                                  "precision": (n_begins - n_false) / n_begins if n_begins else None,
                                  "false_alerts": n_false,
                                  "false_alerts_per_camera_hour": n_false / hours if hours else None}
    found = [e for e in per_event if e["alerted"]]
    frames = [e["frames_to_alert"] for e in found]
    delays = [e["end_delay_s"] for e in found if e["end_delay_s"] is not None]
    return {"events": len(events), "alerted": len(found), "recall": len(found) / len(events) if events else None,
            "alert_begins": len(begins), "false_alerts": len(false),
            "precision": (len(begins) - len(false)) / len(begins) if begins else None,
            "recall_interval": wilson_interval(len(found), len(events)),
            "precision_interval": wilson_interval(len(begins) - len(false), len(begins)),
            "recall_with_earlier_alerts": ((len(found) + len(covering)) / len(events)) if events else None,
            "precision_with_earlier_alerts": ((len(begins) - len(false) + len(covering)) / len(begins)
                                              if begins else None),
            "camera_hours": hours, "false_alerts_per_camera_hour": len(false) / hours if hours else None,
            "frames_to_alert_median": statistics.median(frames) if frames else None,
            "end_delay_s_median": statistics.median(delays) if delays else None,
            "ended_events_without_end": sum(1 for e in found if e["end_ns"] is not None and e["end_delay_s"] is None),
            "per_category": per_category, "per_event": per_event, "false_alert_list": false}


def missed_event_evidence(cameras: dict[str, dict], per_event: list[dict], checks: list[dict],
                          thresholds: dict[str, float]) -> list[dict]:
    """Why each event `score_alerts` found no BEGIN for was missed, from the alert checks' recorded probabilities
    (`eval-stream --probabilities`): of its camera's checks within its match span, the one where its category came
    closest, with that probability, the category's threshold, and the answer the model preferred there ("none":
    nothing unusual; another category: it saw something and took it for that). `at_s`: the event's start, seconds
    into its camera's recording; `checks` 0: the node never checked while the event could be found."""
    missed = []
    for event in (e for e in per_event if not e["alerted"]):
        first, last = match_span_ns(event)
        within = [c for c in checks if c["camera"] == event["camera"] and first <= c["stamps_ns"][-1] <= last]
        origin = cameras[event["camera"]]["segments"][0]["start_ns"]
        record = {"camera": event["camera"], "category": event["category"], "start_ns": event["start_ns"],
                  "at_s": round((event["start_ns"] - origin) / NANOSECONDS, 2),
                  "checks": len(within), "threshold": thresholds.get(event["category"]), "peak": None,
                  "peak_stamp_ns": None, "preferred": None, "preferred_probability": None}
        if within:
            best = max(within, key=lambda c: c["probabilities"].get(event["category"], 0.0))
            preferred = max(best["probabilities"], key=best["probabilities"].get)
            record.update(peak=round(best["probabilities"].get(event["category"], 0.0), 4),
                          peak_stamp_ns=best["stamps_ns"][-1], preferred=preferred,
                          preferred_probability=round(best["probabilities"][preferred], 4))
        missed.append(record)
    return missed


def well_formed(text: str) -> dict | None:
    """The caption's attributes when ``text`` is a sentence sequence of the caption grammar (``tasks.make_caption``
    gives it back word for word), else None."""
    if " ".join(text.split()) == tasks.UNFAMILIAR_SCENE:
        return {"event": "none"}  # in the grammar; wrong for any window of the simulator's world
    attrs = tasks.caption_attributes(text)
    if attrs == tasks.BLOCKED_VIEW_ATTRIBUTES:
        return attrs
    family = attrs.get("family")
    # A caption without its event sentence is what one frame is trained to say: in the grammar, naming no event.
    if family is None or any(key not in attrs for key in tasks.ATTRIBUTE_KEYS[family] if key != "event"):
        return None
    try:
        if tasks.make_caption(attrs, include_event="event" in attrs) != " ".join(text.split()):
            return None
    except (KeyError, IndexError):
        return None
    return {**attrs, "event": attrs.get("event", "none")}


def judge_description(cameras: dict[str, dict], record: dict,
                      rebuild: Callable[[dict], object] = scenario_of) -> dict:
    """What is right and wrong about one description of a window (see module docstring)."""
    segments = cameras[record["camera"]]["segments"]
    stamps = record["stamps_ns"]
    seen = [next((s for s in segments if s["start_ns"] <= stamp < s["end_ns"]), segments[-1]) for stamp in stamps]
    attrs = well_formed(record["text"])
    verdict = {"malformed": attrs is None, "across_cut": len({s["index"] for s in seen}) > 1, "kind": "scene",
               "correct": None, "attributes_correct": None, "attributes": None, "event_correct": None,
               "named_before_onset": False}
    named = attrs.get("event", "none") if attrs else tasks.caption_attributes(record["text"]).get("event", "none")
    segment = seen[-1]
    scenario = rebuild(segment) if not verdict["across_cut"] else None
    if scenario is None:
        return verdict
    times = frame_times(segment, stamps)
    event = scenario.event
    if named != "none" and event is not None and named == event.category and max(times) < event.start + MIN_VISIBLE:
        verdict["named_before_onset"] = True
    truth = scenario.truth(times).attributes
    if truth == tasks.BLOCKED_VIEW_ATTRIBUTES:
        # Nothing of the scene shows (every frame behind a covered lens): right is tasks.BLOCKED_VIEW.
        verdict["kind"] = "blocked"
        verdict["correct"] = attrs == tasks.BLOCKED_VIEW_ATTRIBUTES
        verdict["event_correct"] = named == "camera_blocked"
        return verdict
    if all(effect == "camera_blurred" and level >= 0.5 for effect, level in map(scenario.effect_level, times)):
        verdict["kind"] = "blurred"
    verdict["event_correct"] = named == truth["event"]
    if attrs:
        correct, total = tasks.attribute_accuracy(attrs, truth)
        verdict["attributes_correct"], verdict["attributes"] = correct, total
    verdict["correct"] = bool(attrs) and all(attrs.get(key) == value for key, value in truth.items())
    return verdict


def score_descriptions(cameras: dict[str, dict], descriptions: list[dict]) -> dict:
    verdicts = [judge_description(cameras, record) for record in descriptions if record["camera"] in cameras]
    judged = [v for v in verdicts if v["correct"] is not None]
    attrs = [v for v in judged if v["attributes"]]
    kinds = Counter(v["kind"] for v in judged)

    def rate(values: list[bool]) -> float | None:
        return sum(values) / len(values) if values else None

    return {"descriptions": len(verdicts), "judged": len(judged),
            "across_cut": sum(v["across_cut"] for v in verdicts),
            "malformed_rate": rate([v["malformed"] for v in verdicts]),
            "correct_rate": rate([v["correct"] for v in judged]),
            "event_correct_rate": rate([v["event_correct"] for v in judged]),
            "named_before_onset_rate": rate([v["named_before_onset"] for v in verdicts]),
            "attribute_accuracy": (sum(v["attributes_correct"] for v in attrs) / sum(v["attributes"] for v in attrs)
                                   if attrs else None),
            "correct_rate_by_kind": {kind: rate([v["correct"] for v in judged if v["kind"] == kind])
                                     for kind in sorted(kinds)},
            "verdicts": verdicts}
