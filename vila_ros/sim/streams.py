"""Streams: what a camera sends for minutes on end, a chain of scenes of 20 to 60 s with cuts between them, each
scene with one event or none, and the ground truth of the whole chain.

The node sees sliding windows at every phase of a scene and across cuts, not the clips the model is trained on, so
its evaluation runs on streams. A stream is deterministic in (split, number, family): scene ``i`` is
``make_scenario(stream_segment_seed(split, number, i), family, category, duration=length)`` with its category and
length drawn from a generator of the stream's own; about a third of the scenes have no event, and an event starts
between 30 % and 65 % of its scene, so every stream has event-free stretches. ``camera_truth`` gives the truth in
the format of a bag's ``.truth.json`` sidecar (segments and events in nanoseconds), which also carries what
``scenario_of`` needs to rebuild each scene for window truth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vila_ros import tasks
from vila_ros.sim.generate import make_scenario
from vila_ros.sim.scenario import Scenario
from vila_ros.sim.splits import stream_segment_seed
from vila_ros.tasks import NANOSECONDS

MIN_SCENE_S = 20.0
MAX_SCENE_S = 60.0
NO_EVENT_SHARE = 0.3


@dataclass
class StreamScene:
    start: float  # seconds from the start of the stream
    length: float
    scenario: Scenario
    category: str | None


@dataclass
class Stream:
    split: str
    number: int
    family: str
    scenes: list[StreamScene]

    @property
    def duration(self) -> float:
        return self.scenes[-1].start + self.scenes[-1].length

    def scene_at(self, t: float) -> StreamScene:
        for scene in self.scenes:
            if t < scene.start + scene.length:
                return scene
        return self.scenes[-1]

    def render(self, t: float, width: int, height: int) -> np.ndarray:
        scene = self.scene_at(t)
        return scene.scenario.render(t - scene.start, width, height)

    def camera_truth(self, topic: str, frame_id: str, start_ns: int) -> dict:
        """The stream's truth as one camera of a bag's truth sidecar (``writers.write_bag``'s format)."""
        segments = []
        for index, scene in enumerate(self.scenes):
            seg_start = start_ns + int(round(scene.start * NANOSECONDS))
            seg_end = start_ns + int(round((scene.start + scene.length) * NANOSECONDS))
            events = []
            event = scene.scenario.event
            if event is not None and event.start < scene.length:
                last = index == len(self.scenes) - 1
                end_ns = (seg_end if not last else None) if math.isinf(event.end) else \
                    seg_start + int(round(min(event.end, scene.length) * NANOSECONDS))
                events.append({"category": event.category, "severity": event.severity,
                               "start_ns": seg_start + int(round(event.start * NANOSECONDS)), "end_ns": end_ns,
                               "start_s": scene.start + event.start})
            segments.append({"index": index, "seed": scene.scenario.seed, "family": scene.scenario.family,
                             "category": scene.category, "duration": scene.length, "start_ns": seg_start,
                             "end_ns": seg_end, "events": events})
        return {"topic": topic, "frame_id": frame_id, "segments": segments,
                "events": [e for segment in segments for e in segment["events"]]}


def make_stream(split: str, number: int, family: str, min_duration: float,
                min_scene: float = MIN_SCENE_S, max_scene: float = MAX_SCENE_S,
                deck: list[str | None] | None = None) -> Stream:
    """Stream ``number`` of ``split`` (a stream split of ``sim.splits``): scenes of ``family`` until at least
    ``min_duration`` seconds (whole scenes: a stream ends with its last scene). With ``deck``, the scenes' categories
    are taken from its front (consumed) instead of drawn, and the stream also ends when the deck is empty."""
    if family not in tasks.FAMILIES:
        raise ValueError(f"unknown family {family!r}")
    if not 0 < min_scene <= max_scene:
        raise ValueError("scene lengths must be 0 < min_scene <= max_scene")
    rng = np.random.default_rng([int(stream_segment_seed(split, number, 0)), 31337])
    categories = tasks.categories_for(family)
    scenes: list[StreamScene] = []
    start = 0.0
    while (start < min_duration or not scenes) and (deck is None or deck):
        length = float(round(rng.uniform(min_scene, max_scene), 1))
        category = None if rng.random() < NO_EVENT_SHARE else categories[int(rng.integers(len(categories)))]
        if deck is not None:  # drawn all the same, so a stream's scene lengths do not depend on its deck
            category = deck.pop(0)
        seed = stream_segment_seed(split, number, len(scenes))
        scenes.append(StreamScene(start, length, make_scenario(seed, family, category, duration=length), category))
        start += length
    return Stream(split, number, family, scenes)


def make_streams(split: str, minutes: float, min_scene: float = MIN_SCENE_S,
                 max_scene: float = MAX_SCENE_S, stream_minutes: float = 4.0,
                 events_per_category: int = 0) -> list[Stream]:
    """Streams of both families in turn (road, warehouse, road, ...), each about ``stream_minutes`` long, until
    they hold at least ``minutes`` camera-minutes.

    ``events_per_category`` > 0 builds the split per category instead (``minutes`` is then unused): each family's
    streams hold exactly that many scenes of each of its categories (``falling_object``, in both families, twice
    as many in all) and event-free scenes in the usual share, in an order shuffled per split. Drawn by
    camera-minutes, a rare category (a person stepping into the aisle) can have two events in 80 minutes, and a
    threshold chosen on two events is a guess."""
    if events_per_category > 0:
        return _balanced_streams(split, events_per_category, min_scene, max_scene, stream_minutes)
    streams: list[Stream] = []
    total = 0.0
    while total < minutes * 60 or len(streams) < len(tasks.FAMILIES):
        family = tasks.FAMILIES[len(streams) % len(tasks.FAMILIES)]
        want = min(stream_minutes * 60, max(min_scene, minutes * 60 - total))
        stream = make_stream(split, len(streams), family, want, min_scene, max_scene)
        streams.append(stream)
        total += stream.duration
    return streams


def _balanced_streams(split: str, per_category: int, min_scene: float, max_scene: float,
                      stream_minutes: float) -> list[Stream]:
    rng = np.random.default_rng([int(stream_segment_seed(split, 0, 0)), 4242])
    decks: dict[str, list[str | None]] = {}
    for family in tasks.FAMILIES:
        categories = tasks.categories_for(family)
        events = [c for c in categories for _ in range(per_category)]
        empty = round(len(events) * NO_EVENT_SHARE / (1 - NO_EVENT_SHARE))
        deck: list[str | None] = events + [None] * empty
        decks[family] = [deck[i] for i in rng.permutation(len(deck))]
    streams: list[Stream] = []
    while any(decks.values()):
        family = tasks.FAMILIES[len(streams) % len(tasks.FAMILIES)]
        if not decks[family]:  # the other family's deck is the longer: its streams follow one another
            family = next(f for f in tasks.FAMILIES if decks[f])
        streams.append(make_stream(split, len(streams), family, stream_minutes * 60, min_scene, max_scene,
                                   deck=decks[family]))
    return streams


def scenario_of(segment: dict) -> Scenario | None:
    """The scene of a truth-sidecar segment written by ``Stream.camera_truth`` (None for a segment without the
    fields, e.g. one of ``write_bag``, whose category is the seed's choice)."""
    if "category" not in segment or "duration" not in segment:
        return None
    return make_scenario(segment["seed"], segment["family"], segment["category"], duration=segment["duration"])


def frame_times(segment: dict, stamps_ns: Sequence[int]) -> list[float]:
    """Times within a segment's scene of frames stamped ``stamps_ns``."""
    return [(stamp - segment["start_ns"]) / NANOSECONDS for stamp in stamps_ns]
