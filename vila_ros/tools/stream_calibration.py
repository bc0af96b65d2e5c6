"""The model's alert probabilities on a stream: per alert check the node runs, the probability of each category as
the reply (`engine.answer_scores`), against the window's truth (is the category's event visible in the window's
frames). Calibration (reliability diagram, expected calibration error) and per-category thresholds chosen on
`stream_val` through the node's own decision rule and tracker (`stream_thresholds`).

`ProbabilityProbe` wraps the engine the worker calls: the worker, its prompts and windows are the node's, and the
probe adds the probabilities of the same prompt on the same features.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from vila_ros import tasks
from vila_ros.tools.stream_report import _fmt
from vila_ros.tools.stream_thresholds import (
    FEW_EVENTS,
    FEW_EVENTS_THRESHOLD,
    THRESHOLDS,
    category_counts,
    choose_stream_thresholds,
    choose_thresholds,
    cross_validate,
    f1_at,
    f1_of,
    labelled,
    stream_scores,
)

BINS = 10
# How the markdown says the thresholds were chosen, by `report`'s objective ("category": reports written before the
# pooled objective existed, whose thresholds were chosen that way).
CHOSEN_FOR = {"category": "per category, the best event-level F1",
              "pooled": "per category, the best event-level F1 of all categories pooled (each category's threshold in "
                        "turn, the others held, from its own F1's best, keeping at least half the events that finds)"}


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
        result = self.engine.generate(question, image_features, config, on_token)
        if question == self.alert_prompt:
            self._record(question, image_features)
        return result

    def embed_prompt(self, question, image_features, config=None):
        # A node deciding on thresholds scores the alert prompt itself, through this wrapper, instead of
        # generating: its checks are recorded here (scored again on the engine beneath, which records nothing).
        if question == self.alert_prompt:
            self._record(question, image_features)
        return self.engine.embed_prompt(question, image_features, config)

    def _record(self, question: str, image_features: Sequence[Any]) -> None:
        from vila_ros.engine.answer_scores import answer_probabilities

        answers = (tasks.NO_ALERT_ANSWER, *self.categories)
        values = answer_probabilities(self.engine, question, image_features, answers)
        self.pending.append(([id(f) for f in image_features], dict(zip(answers, values))))

    def take(self, camera: str, frames: Sequence[Any]) -> list[dict]:
        """The pending probabilities as check records of `camera`, their windows found among `frames`."""
        stamps = {id(f.features): f.stamp_ns for f in frames if f.features is not None}
        records = [{"camera": camera, "stamps_ns": [stamps[i] for i in ids if i in stamps], "probabilities": p}
                   for ids, p in self.pending]
        self.pending = []
        return [r for r in records if r["stamps_ns"]]


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


def report(cameras: dict[str, dict], checks: list[dict], thresholds: dict[str, float] | None = None,
           tracker: Any = None, release: float = 0.5, clip_fps: float = tasks.CLIP_FPS, halvings: int = 0,
           categories: Sequence[str] = tasks.CATEGORY_NAMES, objective: str = "pooled") -> dict:
    """Calibration and per-category figures; thresholds chosen here unless given: on the stream through the
    node's tracker for `objective` (`stream_thresholds`) when `tracker` (TrackerSettings) is given, else on
    per-check F1. `halvings` > 0 (with `tracker`): also `cross_validate` over that many halvings, the node checking
    `categories`."""
    pairs = labelled(cameras, checks)
    chosen = thresholds or choose_thresholds(pairs)
    chosen_for, counts = None, {}
    if not thresholds and tracker is not None:
        # The replays that choose the thresholds also give each category's figures at the one chosen.
        counts = category_counts(cameras, checks, tracker, release, clip_fps)
        chosen = choose_stream_thresholds(cameras, checks, tracker, release, clip_fps, chosen, objective=objective,
                                          counts=counts)
        chosen_for = objective
    per_category = {}
    for category in tasks.CATEGORY_NAMES:
        own = [pair for pair in pairs if pair[0] == category]
        if own:
            f1, precision, recall = f1_at(own, chosen[category])
            per_category[category] = {"checks": len(own), "positives": sum(x[2] for x in own),
                                      "threshold": chosen[category], "f1": f1, "precision": precision,
                                      "recall": recall, "ece": calibration(own)["ece"]}
            if tracker is not None:
                _, begin_precision, event_recall = (
                    f1_of([counts[category][THRESHOLDS.index(chosen[category])]])
                    if category in counts and chosen[category] in THRESHOLDS
                    else stream_scores(cameras, checks, category, chosen[category], tracker, release, clip_fps))
                per_category[category].update(stream_begin_precision=begin_precision, stream_recall=event_recall)
    result = {"calibration": calibration(pairs), "thresholds": chosen, "per_category": per_category}
    if chosen_for:
        result["objective"] = chosen_for
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
             + CHOSEN_FOR[result.get("objective", "category")] + " through the node's own tracker on this split "
             "(few events per temporal category, so they are noisy; of tied thresholds, the middle of their longest "
             f"run in log-odds; a category with fewer than {FEW_EVENTS} events: {FEW_EVENTS_THRESHOLD}); per-check "
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
                      "their own F1 too" + (", and the F1 of all categories pooled (\"pooled\")"
                                            if "pooled" in folds["rules"] else "") + ":", "",
                  "| rule | events | alerted | recall | BEGINs | false | BEGIN precision |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name in folds["rules"]:
            row = folds[name]
            lines.append(f"| {name} | {row['events']} | {row['alerted']} | {_fmt(row['recall'])} | {row['begins']} | "
                         f"{row['false_alerts']} | {_fmt(row['precision'])} |")
    return "\n".join(lines) + "\n"
