"""The model's alert probabilities on a stream: per alert check the node runs, the probability of each category as
the reply (`engine.answer_scores`), against the window's truth (is the category's event visible in the window's
frames). Calibration (reliability diagram, expected calibration error) and per-category thresholds, chosen on
`stream_val`: the best event-level F1 when the node's own decision rule and tracker run over the recorded checks.

`ProbabilityProbe` wraps the engine the worker calls: the worker, its prompts and windows are the node's, and the
probe adds the probabilities of the same prompt on the same features.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from vila_ros import tasks
from vila_ros.sim.streams import frame_times, scenario_of
from vila_ros.tools.stream_report import _fmt

BINS = 10
# Steps of 0.05, then finer toward 1: a model sure of itself puts its false positives at 0.95-0.999 too, and the
# best threshold of a category often lies there.
THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 20)] + [0.97, 0.98, 0.99, 0.995, 0.998, 0.999]
# A category with fewer events than this on the split takes FEW_EVENTS_THRESHOLD instead of a threshold of its own:
# with one to three events its F1 curve is a few steps wide, and where on it the best lies is chance (halves of one
# split with one to three red lights chose 0.35 to 0.995 for them). Both figures cross-validated on `stream_val`.
FEW_EVENTS = 4
FEW_EVENTS_THRESHOLD = 0.8
# The rules `cross_validate` compares: (how ties are broken, the fewest events a category's own threshold needs).
RULES = {"middle": ("middle", FEW_EVENTS), "highest": ("highest", FEW_EVENTS),
         "middle, every category its own": ("middle", 0)}


class ProbabilityProbe:
    """The engine, plus the category probabilities of every alert-prompt call (`pending` until assigned frames)."""

    def __init__(self, engine: Any, alert_prompt: str = tasks.ALERT_PROMPT,
                 categories: Sequence[str] = tasks.CATEGORY_NAMES) -> None:
        self.engine = engine
        self.alert_prompt = alert_prompt
        self.categories = tuple(categories)
        self.pending: list[tuple[list[int], dict[str, float]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(self, question, image_features, config=None, on_token=None):
        from vila_ros.engine.answer_scores import answer_probabilities

        result = self.engine.generate(question, image_features, config, on_token)
        if question == self.alert_prompt:
            answers = (tasks.NO_ALERT_ANSWER, *self.categories)
            values = answer_probabilities(self.engine, question, image_features, answers)
            self.pending.append(([id(f) for f in image_features], dict(zip(answers, values))))
        return result

    def take(self, camera: str, frames: Sequence[Any]) -> list[dict]:
        """The pending probabilities as check records of `camera`, their windows found among `frames`."""
        stamps = {id(f.features): f.stamp_ns for f in frames if f.features is not None}
        records = [{"camera": camera, "stamps_ns": [stamps[i] for i in ids if i in stamps], "probabilities": p}
                   for ids, p in self.pending]
        self.pending = []
        return [r for r in records if r["stamps_ns"]]


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


def calibration(pairs: list[tuple[str, float, bool]]) -> dict:
    bins = [{"count": 0, "mean_probability": 0.0, "positive_rate": 0.0} for _ in range(BINS)]
    for _, p, label in pairs:
        b = bins[min(BINS - 1, int(p * BINS))]
        b["count"] += 1
        b["mean_probability"] += p
        b["positive_rate"] += label
    for b in bins:
        if b["count"]:
            b["mean_probability"] /= b["count"]
            b["positive_rate"] /= b["count"]
    total = len(pairs)
    ece = sum(b["count"] / total * abs(b["mean_probability"] - b["positive_rate"]) for b in bins) if total else None
    return {"pairs": total, "positives": sum(label for _, _, label in pairs), "ece": ece, "bins": bins}


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


def stream_scores(cameras: dict[str, dict], checks: list[dict], category: str, threshold: float,
                  tracker: Any, release: float, clip_fps: float) -> tuple[float, float | None, float | None]:
    """(F1, BEGIN precision, event recall) of `category` when the node decides on its probability at `threshold`:
    the node's own decision rule and event tracker run over the recorded checks, scored as the stream eval scores."""
    from vila_ros.tools.stream_scoring import score_alerts

    alerts = replay_checks(checks, {category: threshold}, [category], tracker, release)
    own = {name: {**spec, "events": [e for e in spec["events"] if e["category"] == category]}
           for name, spec in cameras.items()}
    scored = score_alerts(own, alerts, clip_fps)
    precision, recall = scored["precision"], scored["recall"]
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return f1, precision, recall


def choose_stream_thresholds(cameras: dict[str, dict], checks: list[dict], tracker: Any, release: float,
                             clip_fps: float, fallback: dict[str, float], ties: str = "middle",
                             few_events: int = FEW_EVENTS) -> dict[str, float]:
    """Per category with at least `few_events` events on the split, the threshold of the best event-level F1 (recall
    of events, precision of BEGINs) through the node's tracker; `FEW_EVENTS_THRESHOLD` for a category with fewer;
    `fallback` where no threshold finds an event.

    Where several thresholds tie (a split holds few events of a category, so the best F1 is often a plateau), the one
    in the middle of the longest run of them, in log-odds (`ties="middle"`): its edges are where the next event is
    lost or the next false alert let in, and an unseen stream's probabilities fall a little either side of the
    split's. `ties="highest"`: the highest of them. `cross_validate` compares the rules."""
    return thresholds_from_f1(stream_f1(cameras, checks, tracker, release, clip_fps), fallback, ties,
                              event_counts(cameras), few_events)


def event_counts(cameras: dict[str, dict]) -> dict[str, int]:
    """Events per category on the split."""
    counts = {category: 0 for category in tasks.CATEGORY_NAMES}
    for spec in cameras.values():
        for event in spec["events"]:
            counts[event["category"]] = counts.get(event["category"], 0) + 1
    return counts


def stream_f1(cameras: dict[str, dict], checks: list[dict], tracker: Any, release: float,
              clip_fps: float) -> dict[str, list[float]]:
    """Per category with events on the split, its event-level F1 at each of `THRESHOLDS`."""
    counts = event_counts(cameras)
    return {category: [stream_scores(cameras, checks, category, t, tracker, release, clip_fps)[0] for t in THRESHOLDS]
            for category in tasks.CATEGORY_NAMES if counts[category]}


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
                   rules: dict[str, tuple[str, int]] | None = None) -> dict:
    """How the rules of choosing thresholds (`RULES` unless given: name -> (ties, few_events)) do on streams they
    were not chosen on: `halvings` random halvings of the split's cameras, thresholds chosen on each half and scored
    on the other (every camera checked for all `categories` at once, as the node decides); event and false-alert
    counts summed over the 2 x `halvings` folds."""
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
            f1 = stream_f1(fold, fold_checks, tracker, release, clip_fps)
            counts = event_counts(fold)
            for name, total in totals.items():
                ties, few_events = rules[name]
                alerts = replay_checks(held_checks, thresholds_from_f1(f1, fallback, ties, counts, few_events),
                                       categories, tracker, release)
                scored = score_alerts(held, alerts, clip_fps)
                total["events"] += scored["events"]
                total["alerted"] += scored["alerted"]
                total["begins"] += scored["alert_begins"]
                total["false_alerts"] += scored["false_alerts"]
    for total in totals.values():
        total["recall"] = total["alerted"] / total["events"] if total["events"] else None
        total["precision"] = 1 - total["false_alerts"] / total["begins"] if total["begins"] else None
    return {"halvings": halvings, "seed": seed, "rules": {name: list(rule) for name, rule in rules.items()}, **totals}


def report(cameras: dict[str, dict], checks: list[dict], thresholds: dict[str, float] | None = None,
           tracker: Any = None, release: float = 0.5, clip_fps: float = 4.0, halvings: int = 0,
           categories: Sequence[str] = tasks.CATEGORY_NAMES) -> dict:
    """Calibration and per-category figures; thresholds chosen here unless given: on the stream through the
    node's tracker when `tracker` (TrackerSettings) is given, else on per-check F1. `halvings` > 0 (with
    `tracker`): also `cross_validate` over that many halvings, the node checking `categories`."""
    pairs = labelled(cameras, checks)
    chosen = thresholds or choose_thresholds(pairs)
    if not thresholds and tracker is not None:
        chosen = choose_stream_thresholds(cameras, checks, tracker, release, clip_fps, chosen)
    per_category = {}
    for category in tasks.CATEGORY_NAMES:
        own = [pair for pair in pairs if pair[0] == category]
        if own:
            f1, precision, recall = f1_at(own, chosen[category])
            per_category[category] = {"checks": len(own), "positives": sum(x[2] for x in own),
                                      "threshold": chosen[category], "f1": f1, "precision": precision,
                                      "recall": recall, "ece": calibration(own)["ece"]}
            if tracker is not None:
                _, begin_precision, event_recall = stream_scores(cameras, checks, category, chosen[category],
                                                                 tracker, release, clip_fps)
                per_category[category].update(stream_begin_precision=begin_precision, stream_recall=event_recall)
    result = {"calibration": calibration(pairs), "thresholds": chosen, "per_category": per_category}
    if halvings > 0 and tracker is not None:
        result["cross_validation"] = (
            cross_validate(cameras, checks, tracker, release, clip_fps, halvings, categories) if len(cameras) >= 2
            else {"halvings": 0, "skipped": f"cross-validation needs two cameras or more, the run had {len(cameras)}"})
    return result


def write(out_dir: Path, result: dict, source: str) -> None:
    """calibration.json, calibration.md, alert_thresholds.json and reliability.png; `source` names the split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "calibration.json").write_text(json.dumps(result, indent=1))
    (out_dir / "alert_thresholds.json").write_text(json.dumps(result["thresholds"], indent=1))
    (out_dir / "calibration.md").write_text(calibration_markdown(result, source))
    bins = [b for b in result["calibration"]["bins"] if b["count"]]
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="0.6", lw=1)
    axis.plot([b["mean_probability"] for b in bins], [b["positive_rate"] for b in bins], "o-")
    for b in bins:
        axis.annotate(str(b["count"]), (b["mean_probability"], b["positive_rate"]), fontsize=7)
    axis.set_xlabel("model probability of the category")
    axis.set_ylabel("fraction of windows showing it")
    ece = result["calibration"]["ece"]
    axis.set_title("reliability" + ("" if ece is None else f" (ECE {ece:.3f})"))
    figure.tight_layout()
    figure.savefig(out_dir / "reliability.png", dpi=100)
    plt.close(figure)


def calibration_markdown(result: dict, source: str) -> str:
    """The calibration section of a model's STREAM_EVAL.md: `result` from `stream_calibration.report`, `source`
    the split it was measured on (e.g. "stream_val (40.0 camera-minutes)")."""
    totals = result["calibration"]
    lines = [f"## Alert probabilities: calibration and thresholds on {source}", "",
             "The model's probability of each category as its reply to the alert prompt, at every alert check the "
             "node runs, against whether the window's frames show that category's event. Expected calibration error "
             f"over {totals['pairs']} (check, category) pairs ({totals['positives']} positive): "
             f"{_fmt(totals['ece'])}; reliability diagram `reliability.png`. Thresholds (`alert_thresholds.json`): "
             "per category, the best event-level F1 through the node's own tracker on this split (few events per "
             "temporal category, so they are noisy; of tied thresholds, the middle of their longest run in "
             f"log-odds; a category with fewer than {FEW_EVENTS} events: {FEW_EVENTS_THRESHOLD}); per-check "
             "detection at them, and the event figures through the tracker:", "",
             "| category | checks | positive windows | threshold | precision | recall | F1 | ECE | stream recall "
             "| BEGIN precision |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for category, row in result["per_category"].items():
        figures = [row[key] for key in ("precision", "recall", "f1", "ece")]
        figures += [row.get("stream_recall"), row.get("stream_begin_precision")]
        lines.append(f"| {category} | {row['checks']} | {row['positives']} | {row['threshold']} | "
                     + " | ".join(_fmt(None if v is None else float(v)) for v in figures) + " |")
    folds = result.get("cross_validation")
    if folds and folds.get("skipped"):
        lines += ["", f"No cross-validation: {folds['skipped']}."]
    elif folds:
        lines += ["", f"Thresholds chosen on one half of the cameras and scored on the other ({folds['halvings']} "
                      "random halvings, counts summed over both halves of each), for each rule of choosing them: "
                      "ties between thresholds of the same F1 broken at the middle of their run or at the highest, "
                      f"categories with fewer than {FEW_EVENTS} events in the half at {FEW_EVENTS_THRESHOLD} or on "
                      "their own F1 too:", "",
                  "| rule | events | alerted | recall | BEGINs | false | BEGIN precision |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name in folds["rules"]:
            row = folds[name]
            lines.append(f"| {name} | {row['events']} | {row['alerted']} | {_fmt(row['recall'])} | {row['begins']} | "
                         f"{row['false_alerts']} | {_fmt(row['precision'])} |")
    return "\n".join(lines) + "\n"
