"""Scoring of ``vila-ros eval``: pure functions from predictions and truth to figures, no model and no simulator.

Alerts are multi-label per clip (precision / recall / F1 per category, micro and macro, exact set match, false alerts
on clips without an event); QA answers are parsed by kind (yes/no, count, colour, weather); captions are scored per
attribute through ``tasks.caption_attributes``; frames-to-alert is the distance from the first frame after an
event's start to the end of the first window that alerts on it. ``summarize_results`` and ``check_targets`` reduce
the per-mode results of ``vila_ros.train.eval.evaluate`` to the headline figures and the shipped model's targets.
"""
from __future__ import annotations

import re
import statistics
from typing import Any, Callable, Iterable, Sequence

from vila_ros import tasks

MODES = ("clip", "single_frame")
# Targets for the shipped model; on temporal events the clip must be clearly above one frame, read as a pooled
# recall at least 0.20 higher.
TARGETS = {"alert_f1": 0.90, "qa_accuracy": 0.90, "caption_attribute_accuracy": 0.90, "temporal_recall_margin": 0.20}


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def prf(tp: int, fp: int, fn: int) -> dict:
    """Precision, recall, F1 from counts. ``None`` where undefined (no prediction / no truth / neither);
    F1 = 2tp / (2tp + fp + fn), which is 0 when only one of precision and recall is undefined."""
    return {"tp": tp, "fp": fp, "fn": fn, "support": tp + fn, "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def score_alerts(predicted: Sequence[Sequence[str]], truth: Sequence[Sequence[str]],
                 categories: Sequence[str] | None = None, answers: Sequence[str] | None = None) -> dict:
    """Multi-label alert scores of one prediction (category list) per clip.

    categories: the per-category rows to report (default: every category in truth or predictions, in
    ``CATEGORY_NAMES`` order); micro sums every category; macro averages the defined F1s (categories present in
    truth or predictions, like scikit-learn's default labels). ``false_alert_rate``: clips without a true event
    that got any alert. answers: the raw texts, to count answers that are neither "none" nor a category.
    """
    if len(predicted) != len(truth):
        raise ValueError("one prediction per clip")
    seen = {c for cats in list(predicted) + list(truth) for c in cats}
    names = list(categories) if categories is not None else []
    names += [c for c in tasks.CATEGORY_NAMES if c in seen and c not in names]
    counts = {c: [0, 0, 0] for c in names}
    no_event = false_alerts = exact = 0
    for pred, true in zip(predicted, truth):
        p, t = set(pred), set(true)
        for c in p | t:
            row = counts.setdefault(c, [0, 0, 0])
            row[0 if c in p and c in t else 1 if c in p else 2] += 1
        exact += p == t
        if not t:
            no_event += 1
            false_alerts += bool(p)
    per = {c: prf(*counts[c]) for c in names}
    tp, fp, fn = (sum(v[i] for v in counts.values()) for i in range(3))
    macro_rows = [prf(*v) for v in counts.values() if sum(v)]
    out = {
        "clips": len(truth),
        "per_category": per,
        "micro": prf(tp, fp, fn),
        "macro": {k: _mean(r[k] for r in macro_rows) for k in ("precision", "recall", "f1")},
        "exact_match": _ratio(exact, len(truth)),
        "no_event_clips": no_event,
        "false_alert_rate": _ratio(false_alerts, no_event),
    }
    if answers is not None:
        out["unparsed_answers"] = sum(1 for a, p in zip(answers, predicted)
                                      if not p and a.strip().lower().rstrip(".") != tasks.NO_ALERT_ANSWER)
    return out


def pooled_recall(alerts: dict, temporal: bool) -> dict:
    """Recall pooled over the temporal (or the state) categories of a ``score_alerts`` result."""
    tp = fn = 0
    for c, row in alerts["per_category"].items():
        if tasks.CATEGORIES[c].temporal == temporal:
            tp, fn = tp + row["tp"], fn + row["fn"]
    return {"tp": tp, "support": tp + fn, "recall": _ratio(tp, tp + fn)}


_VALUE_WORDS = {"colour": set(tasks.LIGHT_COLOURS) - {"none"}, "weather": set(tasks.ROAD_WEATHERS)}


def answer_correct(kind: str, predicted: str, truth: str) -> bool:
    """One QA answer against the truth: yes/no and counts by their parsers (an unparsable answer is wrong);
    colour and weather: the answer names exactly the true value among the known ones."""
    if kind == "yes_no":
        p = tasks.parse_yes_no(predicted)
        return p is not None and p == tasks.parse_yes_no(truth)
    if kind == "count":
        p = tasks.parse_count(predicted)
        return p is not None and p == tasks.parse_count(truth)
    if kind in _VALUE_WORDS:
        words = set(re.findall(r"[a-z]+", (predicted or "").lower())) & _VALUE_WORDS[kind]
        return words == {truth.strip().lower()}
    raise ValueError(f"unknown answer kind {kind!r}")


def _acc(rows: list[bool]) -> dict:
    return {"n": len(rows), "correct": sum(rows), "accuracy": _ratio(sum(rows), len(rows))}


def score_qa(records: Sequence[dict]) -> dict:
    """Records ``{"key", "kind", "temporal", "predicted", "answer"}`` -> accuracy overall, per kind, temporal vs
    static questions (those one frame can answer), temporal questions by true answer (yes / no), per key."""
    marks = [answer_correct(r["kind"], r["predicted"], r["answer"]) for r in records]

    def group(by: Callable[[dict], Any]) -> dict:
        out: dict = {}
        for r, ok in zip(records, marks):
            out.setdefault(by(r), []).append(ok)
        return {k: _acc(v) for k, v in sorted(out.items())}

    by_temporal = group(lambda r: "temporal" if r["temporal"] else "static")
    # temporal questions are mostly "no" (one event per clip): their "yes" rows are the events that happened
    by_truth = group(lambda r: f"{'temporal' if r['temporal'] else 'static'}_{r['answer'].strip().lower()}"
                     if r["kind"] == "yes_no" else "other")
    return {"overall": _acc(marks), "per_kind": group(lambda r: r["kind"]),
            "temporal": by_temporal.get("temporal", _acc([])),
            "temporal_yes": by_truth.get("temporal_yes", _acc([])),
            "temporal_no": by_truth.get("temporal_no", _acc([])),
            "static": by_temporal.get("static", _acc([])),
            "per_key": group(lambda r: r["key"])}


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"\.\s*", (text or "").strip()) if s.strip()]


def score_captions(predicted: Sequence[str], truth: Sequence[dict]) -> dict:
    """Predicted captions against truth dicts ``{"attributes", "caption", "static_caption"}``.

    Per attribute: ``caption_attributes(pred)[k] == truth[k]`` (a missing attribute is wrong); overall is
    ``tasks.attribute_accuracy`` summed over clips; ``overall_static`` leaves ``event`` out; ``exact``: the whole
    caption; ``exact_static``: its scene and objects sentences equal the truth's static caption.
    """
    if len(predicted) != len(truth):
        raise ValueError("one caption per clip")
    per: dict[str, list[bool]] = {}
    correct = total = exact = exact_static = unparsed = 0
    for text, t in zip(predicted, truth):
        attrs = tasks.caption_attributes(text)
        unparsed += "family" not in attrs
        c, n = tasks.attribute_accuracy(attrs, t["attributes"])
        correct, total = correct + c, total + n
        for k, v in t["attributes"].items():
            per.setdefault(k, []).append(attrs.get(k) == v)
        exact += _sentences(text) == _sentences(t["caption"])
        exact_static += _sentences(text)[:2] == _sentences(t["static_caption"])
    static = [ok for k, rows in per.items() if k != "event" for ok in rows]
    return {"clips": len(truth), "overall": {"n": total, "correct": correct, "accuracy": _ratio(correct, total)},
            "overall_static": _acc(static), "per_attribute": {k: _acc(v) for k, v in per.items()},
            "exact": _ratio(exact, len(truth)), "exact_static": _ratio(exact_static, len(truth)),
            "unparsed": unparsed}


def frames_to_alert(window_predictions: Sequence[Sequence[str]], window_ends: Sequence[int], category: str,
                    start_frame: int) -> int | None:
    """Frames from ``start_frame`` (the first frame after the event's start) to the last frame of the first window
    that ends at or after it and whose predicted categories hold ``category``; None when no window does."""
    for cats, end in sorted(zip(window_predictions, window_ends), key=lambda p: p[1]):
        if end >= start_frame and category in cats:
            return end - start_frame
    return None


def summarize_frames_to_alert(latencies: Sequence[int | None], clip_fps: float,
                              pre_event_alerts: Sequence[bool] = ()) -> dict:
    """Detection rate within the stretch, median / mean latency (frames and seconds at ``clip_fps``) of the
    detected events, a histogram {latency: count} (key "miss" for undetected), the pre-event false-alert rate."""
    hits = [x for x in latencies if x is not None]
    hist: dict[str, int] = {}
    for x in sorted(hits):
        hist[str(x)] = hist.get(str(x), 0) + 1
    hist["miss"] = len(latencies) - len(hits)
    med = float(statistics.median(hits)) if hits else None
    mean = statistics.fmean(hits) if hits else None
    return {"events": len(latencies), "detected": len(hits), "detection_rate": _ratio(len(hits), len(latencies)),
            "median_frames": med, "mean_frames": mean,
            "median_seconds": None if med is None else med / clip_fps,
            "mean_seconds": None if mean is None else mean / clip_fps,
            "histogram": hist, "pre_event_windows": len(pre_event_alerts),
            "pre_event_false_alert_rate": _ratio(sum(pre_event_alerts), len(pre_event_alerts))}


def summarize_results(results: dict, pooled: dict) -> dict:
    """The headline figures of both modes from the per-mode results and the pooled temporal/state recall."""
    def both(get: Callable[[dict], Any]) -> dict:
        return {m: get(results[m]) for m in MODES}

    return {
        "caption_attribute_accuracy": both(lambda r: r["caption"]["overall"]["accuracy"]),
        "caption_static_attribute_accuracy": both(lambda r: r["caption"]["overall_static"]["accuracy"]),
        "caption_event_accuracy": both(lambda r: r["caption"]["per_attribute"].get("event", {}).get("accuracy")),
        "caption_exact": both(lambda r: r["caption"]["exact"]),
        "qa_accuracy": both(lambda r: r["qa"]["overall"]["accuracy"]),
        "qa_temporal_accuracy": both(lambda r: r["qa"]["temporal"]["accuracy"]),
        "qa_temporal_yes_accuracy": both(lambda r: r["qa"]["temporal_yes"]["accuracy"]),
        "qa_static_accuracy": both(lambda r: r["qa"]["static"]["accuracy"]),
        "alert_micro_f1": both(lambda r: r["alerts"]["micro"]["f1"]),
        "alert_macro_f1": both(lambda r: r["alerts"]["macro"]["f1"]),
        "alert_exact_match": both(lambda r: r["alerts"]["exact_match"]),
        "false_alert_rate": both(lambda r: r["alerts"]["false_alert_rate"]),
        "temporal_category_recall": {m: pooled["temporal"][m]["recall"] for m in MODES},
        "state_category_recall": {m: pooled["state"][m]["recall"] for m in MODES},
        "detection_rate": both(lambda r: r["frames_to_alert"]["detection_rate"]),
        "frames_to_alert_median": both(lambda r: r["frames_to_alert"]["median_frames"]),
        "frames_to_alert_mean": both(lambda r: r["frames_to_alert"]["mean_frames"]),
        "pre_event_false_alert_rate": both(lambda r: r["frames_to_alert"]["pre_event_false_alert_rate"]),
    }


def check_targets(summary: dict) -> dict:
    """Each of ``TARGETS`` with its value (clip mode) and whether it is met."""
    def at_least(value: float | None, target: float) -> dict:
        return {"target": target, "value": value, "met": value is not None and value >= target}

    clip_r = summary["temporal_category_recall"]["clip"]
    single_r = summary["temporal_category_recall"]["single_frame"]
    margin = None if clip_r is None or single_r is None else clip_r - single_r
    return {
        "alert_f1": at_least(summary["alert_micro_f1"]["clip"], TARGETS["alert_f1"]),
        "qa_accuracy": at_least(summary["qa_accuracy"]["clip"], TARGETS["qa_accuracy"]),
        "caption_attribute_accuracy": at_least(summary["caption_attribute_accuracy"]["clip"],
                                               TARGETS["caption_attribute_accuracy"]),
        "temporal_recall_margin": at_least(margin, TARGETS["temporal_recall_margin"]),
    }
