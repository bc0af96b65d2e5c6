"""Cases of ``vila-ros eval``: one held-out scenario each, its clip and, for an event, the frames-to-alert stretch.

``build_case`` places the clip exactly where ``make_clip`` does (same stamps, so the same frames and truth) and, when
the scenario has an event, extends its frame grid to a stretch that starts ``num_frames`` frames before the event
(the first window is event-free) so that a window can slide over the start one frame at a time. No frame is rendered
here. ``mode_truth`` is what each mode is scored against: the clip's truth, or the last frame's with the clip's
event questions (see ``vila_ros.train.eval``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vila_ros import tasks

DEFAULT_STRETCH = 20  # frames of the frames-to-alert stretch


@dataclass
class Case:
    """One held-out scenario: the clip (as in ``make_clip``) on a frame grid that, with an event, extends to the
    frames-to-alert stretch. ``stamps[clip_offset : clip_offset + num_frames]`` are the clip's stamps."""
    seed: int
    family: str
    category: str | None
    scenario: Any
    stamps: list[float]
    clip_offset: int
    num_frames: int
    truth: Any  # clip truth
    frame_truth: Any  # truth of the clip's last frame alone
    start_frame: int | None = None  # first grid frame after the event's start
    windows: list[int] = field(default_factory=list)  # first grid frame of every frames-to-alert window

    @property
    def clip_frames(self) -> range:
        return range(self.clip_offset, self.clip_offset + self.num_frames)

    @property
    def last_frame(self) -> int:
        return self.clip_offset + self.num_frames - 1


def build_case(seed: int, family: str | None = None, num_frames: int = 8, clip_fps: float = tasks.CLIP_FPS,
               stretch: int = DEFAULT_STRETCH) -> Case:
    """The clip of ``make_clip(seed, family, num_frames, clip_fps)`` and, for an event, its stretch (no rendering)."""
    from vila_ros.sim import clip_window, make_scenario  # numpy + cv2: not at import (`vila-ros --help`)

    scenario = make_scenario(seed, family)
    clip = clip_window(scenario, seed, num_frames, clip_fps)
    truth = scenario.truth(clip)
    frame_truth = scenario.truth([clip[-1]])
    case = Case(seed, scenario.family, scenario.event.category if scenario.event else None, scenario, list(clip), 0,
                num_frames, truth, frame_truth)
    if scenario.event is None:
        return case
    start = scenario.event.start
    k = next((i for i, s in enumerate(clip) if s > start), None)
    if k is None:
        return case
    dt = 1.0 / clip_fps
    t0 = clip[0]
    # num_frames frames before the start (the first window is event-free), as many as t >= 0 allows
    offset = min(max(num_frames - k, 0), int(math.floor(t0 / dt + 1e-9)))
    length = max(stretch, offset + num_frames)
    # t0 + i * dt exactly as clip_window computes it, so the clip's frames are the grid's frames
    case.stamps = [t0 + (j - offset) * dt for j in range(length)]
    case.clip_offset = offset
    case.start_frame = offset + k
    case.windows = list(range(0, length - num_frames + 1))
    return case


def mode_truth(case: Case, mode: str) -> dict:
    """Truth ``mode`` is scored against: for "clip" the clip's; for "single_frame" the last frame's own truth for
    what one frame shows, with the clip's event, temporal questions and alert categories."""
    t = case.truth
    if mode == "clip":
        return {"attributes": t.attributes, "caption": t.caption, "static_caption": t.static_caption,
                "qa": t.qa, "categories": t.categories}
    f = case.frame_truth
    attrs = dict(f.attributes, event=t.attributes["event"])
    frame_answers = {q["key"]: q["answer"] for q in f.qa if not q["temporal"]}
    qa = [dict(q, answer=frame_answers.get(q["key"], q["answer"])) if not q["temporal"] else q for q in t.qa]
    return {"attributes": attrs, "caption": tasks.make_caption(attrs),
            "static_caption": tasks.make_caption(attrs, include_event=False), "qa": qa, "categories": t.categories}
