"""Reports of ``vila-ros eval``: ``eval.json``, ``eval.md`` (markdown tables) and ``eval.png`` (matplotlib, Agg).

``markdown(result)`` and ``write_plot(result, path)`` read only the JSON-ready dict that ``eval.evaluate`` returns.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from vila_ros import tasks
from vila_ros.train.eval_scoring import MODES

TABLES = ("overall", "categories", "frames_to_alert", "qa", "attributes")


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_f(c) for c in row) + " |" for row in rows]
    return out + [""]


def markdown(result: dict, tables: Sequence[str] = TABLES) -> str:
    meta, summary = result["meta"], result["summary"]
    lines = [f"# vila-ros eval: {meta['model_dir']}", "",
             f"Model `{meta['model_dir']}`; split `{meta['split']}`, {meta['count']} scenarios "
             f"({meta['event_clips']} with an event), family {meta['family'] or 'both'}, seeds "
             f"{meta['seeds'][0]}..{meta['seeds'][-1]}; {meta['num_frames']} frames at {meta['clip_fps']:g} fps, "
             f"{meta['image_size']} px; greedy; {meta['timing']['total_s']:.1f} s "
             f"({meta['timing']['generations']} generations, {meta['torch_threads']} threads).", "",
             f"Single frame: {meta['single_frame']}.", ""]
    if "overall" in tables:
        names = [("caption attribute accuracy", "caption_attribute_accuracy"),
                 ("caption attributes without event", "caption_static_attribute_accuracy"),
                 ("caption event accuracy", "caption_event_accuracy"),
                 ("exact caption", "caption_exact"),
                 ("QA accuracy", "qa_accuracy"),
                 ("QA accuracy, temporal questions", "qa_temporal_accuracy"),
                 ("QA accuracy, temporal questions whose answer is yes", "qa_temporal_yes_accuracy"),
                 ("QA accuracy, static questions", "qa_static_accuracy"),
                 ("alert F1 (micro)", "alert_micro_f1"), ("alert F1 (macro)", "alert_macro_f1"),
                 ("alert exact match", "alert_exact_match"), ("false-alert rate (no-event clips)", "false_alert_rate"),
                 ("recall, temporal categories", "temporal_category_recall"),
                 ("recall, state categories", "state_category_recall"),
                 ("detection rate in stretch", "detection_rate"),
                 ("frames-to-alert, median", "frames_to_alert_median"),
                 ("frames-to-alert, mean", "frames_to_alert_mean"),
                 ("pre-event false-alert rate (windows)", "pre_event_false_alert_rate")]
        lines += ["## Overall", ""]
        lines += _table(["metric", "clip", "single frame"],
                        [[label, summary[key]["clip"], summary[key]["single_frame"]] for label, key in names])
        targets = result.get("targets", {})
        if targets:
            lines += _table(["target", "value", "needed", "met"],
                            [[k, t["value"], t["target"], "yes" if t["met"] else "no"] for k, t in targets.items()])
    if "categories" in tables:
        lines += ["## Alerts per category (clip vs single frame)", ""]
        rows = []
        for c, clip_row in result["clip"]["alerts"]["per_category"].items():
            single = result["single_frame"]["alerts"]["per_category"][c]
            rows.append([c, "yes" if tasks.CATEGORIES[c].temporal else "no", clip_row["support"],
                         clip_row["precision"], clip_row["recall"], clip_row["f1"],
                         single["precision"], single["recall"], single["f1"]])
        lines += _table(["category", "temporal", "support", "clip P", "clip R", "clip F1", "frame P", "frame R",
                         "frame F1"], rows)
    if "frames_to_alert" in tables:
        lines += ["## Frames-to-alert (frames at clip rate after the first frame past the event's start)", ""]
        rows = []
        per_clip = result["clip"]["frames_to_alert"]["per_category"]
        per_single = result["single_frame"]["frames_to_alert"]["per_category"]
        for c in per_clip:
            a, b = per_clip[c], per_single[c]
            rows.append([c, a["events"], a["detection_rate"], a["median_frames"], a["mean_frames"],
                         b["detection_rate"], b["median_frames"]])
        a, b = result["clip"]["frames_to_alert"], result["single_frame"]["frames_to_alert"]
        rows.append(["all", a["events"], a["detection_rate"], a["median_frames"], a["mean_frames"],
                     b["detection_rate"], b["median_frames"]])
        lines += _table(["category", "events", "clip detected", "clip median", "clip mean", "frame detected",
                         "frame median"], rows)
    if "qa" in tables:
        lines += ["## QA accuracy per kind", ""]
        rows = []
        qa_c, qa_s = result["clip"]["qa"], result["single_frame"]["qa"]
        for kind, row in qa_c["per_kind"].items():
            rows.append([kind, row["n"], row["accuracy"], qa_s["per_kind"][kind]["accuracy"]])
        rows.append(["temporal questions", qa_c["temporal"]["n"], qa_c["temporal"]["accuracy"],
                     qa_s["temporal"]["accuracy"]])
        for part, label in (("temporal_yes", "temporal, answer yes"), ("temporal_no", "temporal, answer no")):
            rows.append([label, qa_c[part]["n"], qa_c[part]["accuracy"], qa_s[part]["accuracy"]])
        rows.append(["static questions", qa_c["static"]["n"], qa_c["static"]["accuracy"],
                     qa_s["static"]["accuracy"]])
        rows.append(["all", qa_c["overall"]["n"], qa_c["overall"]["accuracy"], qa_s["overall"]["accuracy"]])
        lines += _table(["kind", "questions", "clip", "single frame"], rows)
    if "attributes" in tables:
        lines += ["## Caption attributes", ""]
        cap_c, cap_s = result["clip"]["caption"], result["single_frame"]["caption"]
        rows = [[k, row["n"], row["accuracy"], cap_s["per_attribute"].get(k, {}).get("accuracy")]
                for k, row in cap_c["per_attribute"].items()]
        rows.append(["all", cap_c["overall"]["n"], cap_c["overall"]["accuracy"], cap_s["overall"]["accuracy"]])
        rows.append(["exact caption", cap_c["clips"], cap_c["exact"], cap_s["exact"]])
        rows.append(["exact scene + objects", cap_c["clips"], cap_c["exact_static"], cap_s["exact_static"]])
        lines += _table(["attribute", "n", "clip", "single frame"], rows)
    return "\n".join(lines).rstrip() + "\n"


def write_plot(result: dict, path: str | Path) -> Path:
    """Per-category alert F1, clip vs single frame (state categories hatched), and the frames-to-alert histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cats = list(result["clip"]["alerts"]["per_category"])
    f1 = {m: [result[m]["alerts"]["per_category"][c]["f1"] or 0.0 for c in cats] for m in MODES}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(cats))
    colours = {"clip": "#2a6fb0", "single_frame": "#e08a2c"}
    labels = {"clip": f"clip ({result['meta']['num_frames']} frames)", "single_frame": "single frame"}
    for i, m in enumerate(MODES):
        bars = ax1.bar(x + (i - 0.5) * 0.4, f1[m], 0.4, color=colours[m], label=labels[m])
        for bar, c in zip(bars, cats):
            if not tasks.CATEGORIES[c].temporal:
                bar.set_hatch("//")
    ax1.set_xticks(x, [c.replace("_", "\n") for c in cats], fontsize=7)
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel("alert F1")
    ax1.set_title("Alert F1 per category (hatched: state categories)")
    ax1.legend(loc="upper right", fontsize=8)

    hists = {m: result[m]["frames_to_alert"]["histogram"] for m in MODES}
    meta = result["meta"]
    longest = meta["stretch_frames"] - meta["num_frames"] - 1  # last window end - first frame after the start
    longest = max([longest] + [int(k) for h in hists.values() for k in h if k != "miss"])
    bins = [str(v) for v in range(0, longest + 1)] + ["miss"]
    xb = np.arange(len(bins))
    for i, m in enumerate(MODES):
        ax2.bar(xb + (i - 0.5) * 0.4, [hists[m].get(b, 0) for b in bins], 0.4, color=colours[m], label=labels[m])
    ax2.set_xticks(xb, bins, fontsize=8)
    ax2.set_xlabel("frames after the event's start frame (clip rate)")
    ax2.set_ylabel("events")
    ax2.set_title("Frames-to-alert")
    ax2.legend(fontsize=8)
    fig.suptitle(f"vila-ros eval: {meta['model_dir']}, {meta['split']} split, {meta['count']} scenarios",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(result: dict, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "eval.json", out / "eval.md", out / "eval.png"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(result), encoding="utf-8")
    write_plot(result, paths[2])
    return paths
