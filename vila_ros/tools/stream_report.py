"""The stream evaluation's report: `stream_eval.json` (figures, per event, per description, every record),
`stream_eval.md` (the table) and `stream_eval.png` (precision / recall per category, a timeline). With
`--probabilities`, `stream_calibration` writes `calibration.md`."""
from __future__ import annotations

import json
from pathlib import Path

from vila_ros.tasks import NANOSECONDS
from vila_ros.tools.stream_scoring import wilson_interval


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _with_interval(successes: int, trials: int) -> str:
    """A proportion and its 95% interval, "0.856 (0.78-0.91)"."""
    interval = wilson_interval(successes, trials)
    return f"{successes / trials:.3f} ({interval[0]:.2f}-{interval[1]:.2f})" if interval else "-"


def alert_rows(alerts: dict) -> list[tuple[str, str]]:
    """The alert figures of `score_alerts` as (name, value) rows."""
    return [("events (alerted)", f"{alerts['events']} ({alerts['alerted']})"),
            ("event recall (95% interval)", _with_interval(alerts["alerted"], alerts["events"])),
            ("BEGIN precision (95% interval)",
             _with_interval(alerts["alert_begins"] - alerts["false_alerts"], alerts["alert_begins"])),
            ("recall / precision counting alerts raised before the event (replay-test's rule)",
             f"{_fmt(alerts['recall_with_earlier_alerts'])} / {_fmt(alerts['precision_with_earlier_alerts'])}"),
            ("false alerts per camera-hour", _fmt(alerts["false_alerts_per_camera_hour"])),
            ("frames-to-alert median", _fmt(alerts["frames_to_alert_median"])),
            ("END delay median (s)", _fmt(alerts["end_delay_s_median"]))]


def missed_line(event: dict) -> str:
    """One `missed_event_evidence` record as a line: "missed: road2 vehicle_cut_in at 91.8 s: at most 0.892 in 4
    checks (threshold 0.900); the model's answer there vehicle_cut_in 0.89"."""
    head = f"missed: {event['camera']} {event['category']} at {event['at_s']:.1f} s"
    if not event["checks"]:
        return f"{head}: no alert check while it could be found"
    return (f"{head}: at most {event['peak']:.3f} in {event['checks']} checks (threshold {_fmt(event['threshold'])});"
            f" the model's answer there {event['preferred']} {event['preferred_probability']:.2f}")


def summary_rows(report: dict) -> list[tuple[str, str]]:
    alerts, text = report["alerts"], report["descriptions"]
    return [("camera-minutes", f"{report['camera_seconds'] / 60:.1f}"), *alert_rows(alerts),
            ("descriptions (judged)", f"{text['descriptions']} ({text['judged']})"),
            ("description correct", _fmt(text["correct_rate"])),
            ("description event correct", _fmt(text["event_correct_rate"])),
            ("description attribute accuracy", _fmt(text["attribute_accuracy"])),
            ("event named before its onset", _fmt(text["named_before_onset_rate"])),
            ("malformed descriptions", _fmt(text["malformed_rate"])),
            ("alert checks / descriptions outside the model's world (world gate)",
             f"{report.get('unfamiliar_checks', 0)} / {report.get('unfamiliar_descriptions', 0)}"),
            ("real-time factor", _fmt(report["meta"].get("real_time_factor")))]


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = [f"# Stream evaluation: {meta['source']}", "",
             f"Model `{meta['model_dir']}` ({meta['precision']}), window {meta['num_frames']} frames at "
             f"{meta['clip_fps']} fps, node overrides {meta['overrides'] or 'none'}.", "",
             "| figure | value |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in summary_rows(report)]
    lines += ["", "| category | events | alerted | recall | BEGINs | precision | false / camera-hour |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for category, c in report["alerts"]["per_category"].items():
        lines.append(f"| {category} | {c['events']} | {c['alerted']} | {_fmt(c['recall'])} | {c['begins']} | "
                     f"{_fmt(c['precision'])} | {_fmt(c['false_alerts_per_camera_hour'])} |")
    by_kind = report["descriptions"]["correct_rate_by_kind"]
    lines += ["", "Descriptions correct by window kind: "
              + ", ".join(f"{kind} {_fmt(rate)}" for kind, rate in by_kind.items()) + "."]
    return "\n".join(lines) + "\n"


def plot(path: Path, report: dict, cameras: dict[str, dict], timeline_cameras: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_category = report["alerts"]["per_category"]
    names = list(per_category)
    figure, (bars, timeline) = plt.subplots(2, 1, figsize=(12, 8), gridspec_kw={"height_ratios": [1, 1.2]})
    xs = range(len(names))
    bars.bar([x - 0.2 for x in xs], [per_category[n]["recall"] or 0 for n in names], 0.4, label="recall")
    bars.bar([x + 0.2 for x in xs], [per_category[n]["precision"] or 0 for n in names], 0.4, label="precision")
    bars.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    bars.set_ylim(0, 1.05)
    bars.legend()
    bars.set_title("per category")
    shown = list(cameras)[:timeline_cameras]
    alerts = report["records"]["alerts"]
    for row, camera in enumerate(shown):
        spec = cameras[camera]
        origin = spec["segments"][0]["start_ns"]
        for segment in spec["segments"][1:]:
            timeline.vlines((segment["start_ns"] - origin) / NANOSECONDS, row - 0.4, row + 0.4, color="0.6", lw=0.8)
        for event in spec["events"]:
            end = event["end_ns"] if event["end_ns"] is not None else spec["segments"][-1]["end_ns"]
            timeline.barh(row, max(0.5, (end - event["start_ns"]) / NANOSECONDS),
                          left=(event["start_ns"] - origin) / NANOSECONDS, height=0.5, color="tab:green", alpha=0.6)
            timeline.text((event["start_ns"] - origin) / NANOSECONDS, row + 0.3, event["category"], fontsize=6)
        begins = [a for a in alerts if a["camera"] == camera and a["state"] == 0]
        timeline.scatter([(a["stamp_ns"] - origin) / NANOSECONDS for a in begins], [row] * len(begins), marker="v",
                         color="tab:red", s=14, zorder=3)
    timeline.set_yticks(range(len(shown)), shown)
    timeline.set_xlabel("stream time (s); green: events (truth), red: alert BEGINs, grey: scene cuts")
    timeline.set_title("timeline")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(out_dir: Path, report: dict, cameras: dict[str, dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stream_eval.json").write_text(json.dumps(report, indent=1))
    (out_dir / "stream_eval.md").write_text(markdown(report))
    plot(out_dir / "stream_eval.png", report, cameras)
