"""A recorded run decided again: the alert checks of an `eval-stream --probabilities` run (every window's
probability of each category) through the node's own decision rule and event tracker at other thresholds or tracker
settings, scored as the stream eval scores. Seconds instead of a new run of the model, so thresholds, `alert_clear`
or `alert_cooldown_s` can be compared on one split's probabilities; what the node would publish at the run's own
settings comes out exactly as the node published it. A longer `alert_period_s` keeps the recorded checks the node's
own cadence rule would have run: exact where the recorded checks fall on the longer period's grid (at 4 fps of a
10 fps camera a run at 0.5 s answers for 1 s and 2 s; at 5 fps its checks are 0.6 s apart, and 1.2 s is what a
replay at 1 s keeps); a shorter one would need checks that were never run, and is refused.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# What a replay may change: how checks become alerts, and how often they run (a longer period only drops some).
# Anything else (window, clip rate, prompt) changes the checks.
REPLAYABLE = ("model_dir", "alert_thresholds_file", "alert_categories", "alert_confirm", "alert_clear",
              "alert_ongoing_period_s", "alert_cooldown_s", "alert_period_s")


def redecide(run: Path, split: str = "stream_test", minutes: float = 32.0, overrides: dict[str, Any] | None = None,
             min_scene: float = 20.0, max_scene: float = 60.0, stream_minutes: float = 4.0,
             events_per_category: int = 0, halvings: int = 0) -> dict:
    """The alert figures (`score_alerts`), and why each missed event was missed (`missed`:
    `missed_event_evidence`), of `run`'s checks decided at the thresholds and tracker settings of `overrides`
    (node parameters of `REPLAYABLE`; the model's stored thresholds unless `alert_thresholds_file` says otherwise).
    The split arguments must be the run's: its streams' truth is generated again, not stored.
    `halvings` > 0: also the rules of choosing thresholds cross-validated on these checks at these tracker settings
    and cadence (`stream_thresholds.cross_validate`, as `eval-stream --cross-validate` on a new run)."""
    from vila_ros.resources import ALERT_THRESHOLDS_FILE, resolve_model_dir
    from vila_ros.ros import parameters
    from vila_ros.ros.worker_types import WorkerSettings
    from vila_ros.sim.streams import make_streams
    from vila_ros.tools.stream_agreement import read_checks
    from vila_ros.tools.stream_eval import camera_truths, node_values
    from vila_ros.tools.stream_scoring import camera_seconds, missed_event_evidence, score_alerts
    from vila_ros.tools.stream_thresholds import cross_validate, replay_checks

    refused = sorted(set(overrides or {}) - set(REPLAYABLE))
    if refused:
        raise ValueError(f"a replay decides recorded checks again and cannot change {', '.join(refused)}; it may "
                         f"change {', '.join(REPLAYABLE)}")
    checks = read_checks(run)
    cameras = camera_truths(make_streams(split, minutes, min_scene, max_scene, stream_minutes, events_per_category))
    recorded = json.loads((Path(run) / "stream_eval.json" if Path(run).is_dir() else Path(run)).read_text())
    seconds = camera_seconds(cameras)
    unknown = sorted({c["camera"] for c in checks} - set(cameras))
    if unknown or abs(seconds - recorded.get("camera_seconds", seconds)) > 1.0:
        raise ValueError(f"{run} was not run on {split} at {minutes} camera-minutes (cameras or camera-seconds "
                         "differ): give the run's own --split and --minutes")
    values = node_values(overrides)
    if "alert_period_s" in (overrides or {}):
        checks = every_period(checks, float(overrides["alert_period_s"]),
                              float(node_values(recorded.get("meta", {}).get("overrides"))["alert_period_s"]))
    source = values["alert_thresholds_file"]
    if source == "model":
        source = str(resolve_model_dir(values["model_dir"]) / ALERT_THRESHOLDS_FILE)
    thresholds = dict(parameters.alert_thresholds(source, values["model_dir"]))
    if not thresholds:
        raise ValueError("a replay decides on probabilities: it needs thresholds (alert_thresholds_file)")
    categories = [c for c in values["alert_categories"] if c]
    tracker, release = parameters.tracker_settings(None, values), WorkerSettings().alert_release
    alerts = replay_checks(checks, thresholds, categories, tracker, release)
    # Frames-to-alert counts frames of the run's own clip rate (a rate is not replayable: it changes the checks).
    clip_fps = float(recorded.get("meta", {}).get("clip_fps") or values["clip_fps"])
    report = score_alerts(cameras, alerts, clip_fps)
    report["missed"] = missed_event_evidence(cameras, report["per_event"], checks, thresholds)
    if halvings > 0:
        report["cross_validation"] = (
            cross_validate(cameras, checks, tracker, release, clip_fps, halvings, categories) if len(cameras) >= 2
            else {"halvings": 0, "skipped": f"cross-validation needs two cameras or more, the run had {len(cameras)}"})
    report["records"] = alerts
    return report


def every_period(checks: list[dict], period_s: float, recorded_period_s: float) -> list[dict]:
    """Of checks recorded every `recorded_period_s`, those the node would run every `period_s` (its cadence rule,
    `period_elapsed`, on each camera's checks in time order)."""
    from vila_ros.ros.worker_types import period_elapsed

    if not period_s > 0:
        raise ValueError(f"a replay decides recorded checks: alert_period_s must be above 0: {period_s!r}")
    if period_s < recorded_period_s:
        raise ValueError(f"the run checked every {recorded_period_s:g} s: a replay can check less often, not every "
                         f"{period_s:g} s (run eval-stream again with --set alert_period_s={period_s:g})")
    kept, last_ns = [], {}
    for check in sorted(checks, key=lambda c: (c["camera"], c["stamps_ns"][-1])):
        newest = check["stamps_ns"][-1]
        if period_elapsed(last_ns.get(check["camera"]), newest, period_s):
            last_ns[check["camera"]] = newest
            kept.append(check)
    return kept
