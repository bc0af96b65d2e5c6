"""Alert thresholds from a stream's recorded checks (`eval-stream --probabilities`: every window's probability of
each category, against the window's truth): per category, chosen through the node's own decision rule and event
tracker (`replay_checks`), and the rules of choosing them compared on cameras they were not chosen on
(`cross_validate`).

Two objectives. "category": each category's own event-level F1 (its events found, its BEGINs right). "pooled":
the F1 of all categories' events and BEGINs together, the figure the stream eval reports and a driving stack lives
with: a category the model separates badly (a threshold that finds its next event lets in three false alerts) is
held higher than its own F1 would put it, because those false alerts count against every category's precision,
as long as it keeps `POOLED_KEEPS` of the events it finds at its own best threshold.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

from vila_ros import tasks
from vila_ros.sim.streams import frame_times, scenario_of

# Steps of 0.05, then finer toward 1: a model sure of itself puts its false positives at 0.95-0.999 too, and the
# best threshold of a category often lies there.
THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 20)] + [0.97, 0.98, 0.99, 0.995, 0.998, 0.999]
# A category with fewer events than this on the split takes FEW_EVENTS_THRESHOLD instead of a threshold of its own:
# with one to three events its F1 curve is a few steps wide, and where on it the best lies is chance (halves of one
# split with one to three red lights chose 0.35 to 0.995 for them). Both figures cross-validated on `stream_val`.
FEW_EVENTS = 4
FEW_EVENTS_THRESHOLD = 0.8
# The rules `cross_validate` compares: name -> (objective, how ties are broken, the fewest events a category's own
# threshold needs).
RULES = {"middle": ("category", "middle", FEW_EVENTS), "highest": ("category", "highest", FEW_EVENTS),
         "middle, every category its own": ("category", "middle", 0),
         "pooled": ("pooled", "middle", FEW_EVENTS)}
OBJECTIVES = ("category", "pooled")
POOLED_SWEEPS = 10  # passes over the categories; the pooled choice settles in two or three
# The pooled objective may give up events of a category for every category's precision, never the category: its
# threshold keeps at least this share of the events its own best threshold finds on the split. Unbounded, it switched
# off the category the model separates worst (pedestrians crossing: 1 of 11 left on `stream_val`, 0 of 9 held out).
POOLED_KEEPS = 0.5


class Counts(NamedTuple):
    """A category's figures on a split at one threshold, deciding on it alone."""
    events: int
    alerted: int
    begins: int
    false_alerts: int


def labelled(cameras: dict[str, dict], checks: list[dict]) -> list[tuple[str, float, bool]]:
    """(category, probability, the category's event visible in the window) for every check within one scene and
    every category of that scene's family."""
    out = []
    for check in checks:
        segments = cameras[check["camera"]]["segments"]
        seen = [next((s for s in segments if s["start_ns"] <= t < s["end_ns"]), segments[-1])
                for t in check["stamps_ns"]]
        if len({s["index"] for s in seen}) > 1:
            continue
        scenario = scenario_of(seen[-1])
        if scenario is None:
            continue
        present = {e["category"] for e in scenario.events_in(frame_times(seen[-1], check["stamps_ns"]))}
        for category in tasks.categories_for(scenario.family):
            out.append((category, float(check["probabilities"].get(category, 0.0)), category in present))
    return out


def f1_at(pairs: list[tuple[str, float, bool]], threshold: float) -> tuple[float, float, float]:
    tp = sum(1 for _, p, label in pairs if p >= threshold and label)
    fp = sum(1 for _, p, label in pairs if p >= threshold and not label)
    fn = sum(1 for _, p, label in pairs if p < threshold and label)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return (2 * precision * recall / (precision + recall) if precision + recall else 0.0), precision, recall


def choose_thresholds(pairs: list[tuple[str, float, bool]]) -> dict[str, float]:
    """Per category, the threshold of the best per-check F1 (ties: the higher threshold); 0.5 without positives."""
    chosen = {}
    for category in tasks.CATEGORY_NAMES:
        own = [pair for pair in pairs if pair[0] == category]
        if not any(label for _, _, label in own):
            chosen[category] = 0.5
            continue
        chosen[category] = max(THRESHOLDS, key=lambda t: (f1_at(own, t)[0], t))
    return chosen


def replay_checks(checks: list[dict], thresholds: dict[str, float], categories: Sequence[str], tracker: Any,
                  release: float) -> list[dict]:
    """The alert records the node would publish deciding on `categories` at `thresholds` over the recorded checks:
    its own decision rule and event tracker."""
    from vila_ros.ros.events import EventTracker
    from vila_ros.ros.worker_types import detected_by_probability

    events = EventTracker(tracker)
    alerts = []
    for check in sorted(checks, key=lambda c: (c["camera"], c["stamps_ns"][-1])):
        camera = check["camera"]
        probability = {name: float(check["probabilities"].get(name, 0.0)) for name in categories}
        detected = detected_by_probability(probability, thresholds, categories,
                                           lambda c: events.is_active(camera, c), release)
        for update in events.update(camera, categories, detected, check["stamps_ns"][-1], check["stamps_ns"],
                                    confidences=probability):
            alerts.append({"camera": camera, "category": update.category, "state": update.state,
                           "stamp_ns": update.stamp_ns, "alert_id": update.alert_id})
    return alerts


def counts_at(cameras: dict[str, dict], checks: list[dict], category: str, threshold: float, tracker: Any,
              release: float, clip_fps: float) -> Counts:
    """`category`'s events, those alerted, its BEGINs and the false ones when the node decides on its probability at
    `threshold`: the node's own decision rule and event tracker over the recorded checks, scored as the stream eval
    scores (a BEGIN is right only on an event of its own category, so the categories' counts add up)."""
    return _own_counts(_own_events(cameras, category), checks, category, threshold, tracker, release, clip_fps)


def _own_events(cameras: dict[str, dict], category: str) -> dict[str, dict]:
    """`cameras` with only `category`'s events, against which that category's alerts are scored."""
    return {name: {**spec, "events": [e for e in spec["events"] if e["category"] == category]}
            for name, spec in cameras.items()}


def _own_counts(own: dict[str, dict], checks: list[dict], category: str, threshold: float, tracker: Any,
                release: float, clip_fps: float) -> Counts:
    from vila_ros.tools.stream_scoring import score_alerts

    scored = score_alerts(own, replay_checks(checks, {category: threshold}, [category], tracker, release), clip_fps)
    return Counts(scored["events"], scored["alerted"], scored["alert_begins"], scored["false_alerts"])


def f1_of(counts: Sequence[Counts]) -> tuple[float, float | None, float | None]:
    """(F1, BEGIN precision, event recall) of `counts` taken together."""
    events, alerted, begins, false_alerts = (sum(column) for column in zip(*counts)) if counts else (0, 0, 0, 0)
    recall = alerted / events if events else None
    precision = 1 - false_alerts / begins if begins else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return f1, precision, recall


def stream_scores(cameras: dict[str, dict], checks: list[dict], category: str, threshold: float,
                  tracker: Any, release: float, clip_fps: float) -> tuple[float, float | None, float | None]:
    """(F1, BEGIN precision, event recall) of `category` when the node decides on its probability at `threshold`."""
    return f1_of([counts_at(cameras, checks, category, threshold, tracker, release, clip_fps)])


def category_counts(cameras: dict[str, dict], checks: list[dict], tracker: Any, release: float,
                    clip_fps: float) -> dict[str, list[Counts]]:
    """Per category the node may check, its `Counts` at each of `THRESHOLDS`."""
    return {category: [_own_counts(own, checks, category, t, tracker, release, clip_fps) for t in THRESHOLDS]
            for category in tasks.CATEGORY_NAMES for own in [_own_events(cameras, category)]}


def event_counts(cameras: dict[str, dict]) -> dict[str, int]:
    """Events per category on the split."""
    counts = {category: 0 for category in tasks.CATEGORY_NAMES}
    for spec in cameras.values():
        for event in spec["events"]:
            counts[event["category"]] = counts.get(event["category"], 0) + 1
    return counts


def choose_stream_thresholds(cameras: dict[str, dict], checks: list[dict], tracker: Any, release: float,
                             clip_fps: float, fallback: dict[str, float], ties: str = "middle",
                             few_events: int = FEW_EVENTS, objective: str = "pooled",
                             counts: dict[str, list[Counts]] | None = None) -> dict[str, float]:
    """Per category with at least `few_events` events on the split, the threshold of the best event-level F1
    (recall of events, precision of BEGINs) through the node's tracker, of the category alone or of all categories
    pooled (`objective`, see the module); `FEW_EVENTS_THRESHOLD` for a category with fewer; `fallback` where no
    threshold finds an event.

    Where several thresholds tie (a split holds few events of a category, so the best F1 is often a plateau), the one
    in the middle of the longest run of them, in log-odds (`ties="middle"`): its edges are where the next event is
    lost or the next false alert let in, and an unseen stream's probabilities fall a little either side of the
    split's. `ties="highest"`: the highest of them. `cross_validate` compares the rules. `counts`: the
    `category_counts` of these checks when the caller has them already."""
    counts = counts if counts is not None else category_counts(cameras, checks, tracker, release, clip_fps)
    return thresholds_from_counts(counts, fallback, objective, ties, event_counts(cameras), few_events)


def thresholds_from_counts(counts: dict[str, list[Counts]], fallback: dict[str, float], objective: str, ties: str,
                           events: dict[str, int], few_events: int) -> dict[str, float]:
    """`choose_stream_thresholds` on counts already replayed."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}: {objective!r}")
    f1 = {category: [f1_of([c])[0] for c in rows] for category, rows in counts.items() if events.get(category)}
    chosen = thresholds_from_f1(f1, fallback, ties, events, few_events)
    if objective == "pooled":
        floors = {category: POOLED_KEEPS * counts[category][THRESHOLDS.index(threshold)].alerted
                  for category, threshold in chosen.items() if category in counts and threshold in THRESHOLDS}
        chosen = pooled_thresholds(counts, chosen, {c for c in counts if events.get(c, 0) < max(few_events, 1)}, floors)
    return chosen


def thresholds_from_f1(f1: dict[str, list[float]], fallback: dict[str, float], ties: str,
                       events: dict[str, int] | None = None, few_events: int = 0) -> dict[str, float]:
    """Thresholds from each category's event-level F1 at `THRESHOLDS` (see `choose_stream_thresholds`); a category
    with fewer than `few_events` `events` takes `FEW_EVENTS_THRESHOLD`."""
    if ties not in ("middle", "highest"):
        raise ValueError(f"ties must be 'middle' or 'highest': {ties!r}")
    chosen = dict(fallback)
    for category, scores in f1.items():
        if max(scores) > 0:  # no threshold finds any of its events: no reason to move from the fallback
            chosen[category] = (middle_of_best(THRESHOLDS, scores) if ties == "middle"
                                else max(t for t, f in zip(THRESHOLDS, scores) if f == max(scores)))
    for category, count in (events or {}).items():
        if count < few_events and category in chosen:
            chosen[category] = FEW_EVENTS_THRESHOLD
    return chosen


def pooled_thresholds(counts: dict[str, list[Counts]], start: dict[str, float], fixed: set[str],
                      floors: dict[str, float] | None = None) -> dict[str, float]:
    """From `start`, each category's threshold in turn moved to the best pooled F1 with the others held (the middle
    of a run of ties), while that raises it, among the thresholds where the category finds at least its `floors`
    events; `fixed` categories stay where `start` has them. Pooled are the categories `start` gives a threshold of
    the grid."""
    floors = floors or {}
    index = {category: THRESHOLDS.index(start[category]) for category in counts if start.get(category) in THRESHOLDS}

    def pooled(at: dict[str, int]) -> float:
        return round(f1_of([counts[c][k] for c, k in at.items()])[0], 12)  # equal sums, equal floats

    for _ in range(POOLED_SWEEPS):
        moved = False
        for category in index:
            if category in fixed:
                continue
            scores = [pooled({**index, category: k}) if counts[category][k].alerted >= floors.get(category, 0) else -1.0
                      for k in range(len(THRESHOLDS))]
            best = THRESHOLDS.index(middle_of_best(THRESHOLDS, scores))
            if scores[best] > scores[index[category]]:
                index[category], moved = best, True
        if not moved:
            break
    return {**start, **{category: THRESHOLDS[k] for category, k in index.items()}}


def middle_of_best(thresholds: Sequence[float], scores: Sequence[float]) -> float:
    """Of the longest run of consecutive `thresholds` (ascending) with the best score (ties: the higher run), the
    threshold nearest its middle in log-odds (ties: the higher)."""
    best = max(scores)
    runs: list[list[float]] = []
    for k, (threshold, score) in enumerate(zip(thresholds, scores)):
        if score == best:
            if k and scores[k - 1] == best:
                runs[-1].append(threshold)
            else:
                runs.append([threshold])
    run = max(runs, key=lambda r: (len(r), r[-1]))
    middle = (log_odds(run[0]) + log_odds(run[-1])) / 2
    return min(reversed(run), key=lambda t: abs(log_odds(t) - middle))


PROBABILITY_FLOOR = 1e-6  # log-odds of a probability the model gives as 0 or 1 stay finite


def log_odds(p: float) -> float:
    p = min(max(p, PROBABILITY_FLOOR), 1.0 - PROBABILITY_FLOOR)
    return math.log(p / (1.0 - p))


def cross_validate(cameras: dict[str, dict], checks: list[dict], tracker: Any, release: float, clip_fps: float,
                   halvings: int, categories: Sequence[str] = tasks.CATEGORY_NAMES, seed: int = 0,
                   rules: dict[str, tuple[str, str, int]] | None = None) -> dict:
    """How the rules of choosing thresholds (`RULES` unless given: name -> (objective, ties, few_events)) do on
    streams they were not chosen on: `halvings` random halvings of the split's cameras, thresholds chosen on each
    half and scored on the other (every camera checked for all `categories` at once, as the node decides); event and
    false-alert counts summed over the 2 x `halvings` folds."""
    import random

    from vila_ros.tools.stream_scoring import score_alerts

    names = sorted(cameras)
    shuffle = random.Random(seed).shuffle
    rules = RULES if rules is None else rules
    totals = {name: {"events": 0, "alerted": 0, "begins": 0, "false_alerts": 0} for name in rules}
    for _ in range(halvings):
        shuffle(names)
        halves = [names[:len(names) // 2], names[len(names) // 2:]]
        for chosen_on, scored_on in ((halves[0], halves[1]), (halves[1], halves[0])):
            fold = {name: cameras[name] for name in chosen_on}
            fold_checks = [c for c in checks if c["camera"] in fold]
            held = {name: cameras[name] for name in scored_on}
            held_checks = [c for c in checks if c["camera"] in held]
            fallback = choose_thresholds(labelled(fold, fold_checks))
            counts = category_counts(fold, fold_checks, tracker, release, clip_fps)
            events = event_counts(fold)
            for name, total in totals.items():
                objective, ties, few_events = rules[name]
                thresholds = thresholds_from_counts(counts, fallback, objective, ties, events, few_events)
                scored = score_alerts(held, replay_checks(held_checks, thresholds, categories, tracker, release),
                                      clip_fps)
                total["events"] += scored["events"]
                total["alerted"] += scored["alerted"]
                total["begins"] += scored["alert_begins"]
                total["false_alerts"] += scored["false_alerts"]
    for total in totals.values():
        total["recall"] = total["alerted"] / total["events"] if total["events"] else None
        total["precision"] = 1 - total["false_alerts"] / total["begins"] if total["begins"] else None
    return {"halvings": halvings, "seed": seed, "rules": {name: list(rule) for name, rule in rules.items()}, **totals}
