"""``vila-ros eval``: a VILA checkpoint on held-out simulator seeds, a clip against its last frame alone.

What is measured (greedy decoding, ``scenario seeds = split_seeds(split, count, offset)``):

1. captions: ``DESCRIBE_PROMPT`` on the clip; ``tasks.caption_attributes`` of the answer against the truth's
   attributes (per attribute and overall, also without ``event``), exact caption and exact static part;
2. QA: every question of the clip's truth; accuracy overall, per kind (yes_no, count, colour, weather), temporal
   against single-frame questions, per question key;
3. alerts: ``ALERT_PROMPT`` on the clip; ``tasks.parse_categories`` against the truth's events: precision / recall /
   F1 per category, micro and macro, exact set match and the false-alert rate on clips without an event;
4. frames-to-alert: for event scenarios the clip's frame grid is extended to ``stretch`` frames (``num_frames``
   frames before the event's start, the rest after it) and a ``num_frames`` window slides over it one frame at a
   time; the latency is ``last frame of the first alerting window - first frame after the start`` (0 = the first
   window that holds a frame after the start), counted over windows that end at or after that frame; windows that end
   before it (no event in them) give the pre-event false-alert rate. At 4 fps that first frame is 0.125 s after the
   start, before the truth's ``MIN_VISIBLE`` (0.2 s): latency 1 is the first window the truth says shows the event.
   Every frame is encoded once;
5. the same with ONE frame: the clip's last frame alone with the same prompts (frames-to-alert: the window's last
   frame alone). Questions about the clip as a whole (events, alerts, temporal QA, the caption's ``event``) are
   scored against the clip's truth; what one frame shows (counts, lights, static questions and the rest of the
   caption) against that frame's own truth (``scenario.truth([last stamp])``).

This module is the driver: ``evaluate`` builds the cases (``eval_cases``), renders and encodes every grid frame once,
generates the answers in batches (``eval_batch``) and scores them with the pure functions of ``eval_scoring``
(``prf``, ``score_alerts``, ``score_qa``, ``score_captions``, ``frames_to_alert``, ``summarize_frames_to_alert``,
re-exported here). Reports (markdown, plot) are in ``eval_report``; the command line is in ``train/cli.py``.

Module import stays light (standard library and ``tasks``): ``vila-ros --help`` imports it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from vila_ros import tasks
from vila_ros.train.eval_batch import Requests, engine_image_size, generate_answers
from vila_ros.train.eval_cases import DEFAULT_STRETCH, Case, build_case, mode_truth
from vila_ros.train.eval_scoring import (
    MODES,
    TARGETS,
    answer_correct,
    check_targets,
    frames_to_alert,
    pooled_recall,
    prf,
    score_alerts,
    score_captions,
    score_qa,
    summarize_frames_to_alert,
    summarize_results,
)

__all__ = ["CLIP_CHUNK", "DEFAULT_BATCH", "DEFAULT_COUNT", "DEFAULT_STRETCH", "MAX_NEW_TOKENS", "MODES", "TARGETS",
           "Case", "answer_correct", "build_case", "evaluate", "frames_to_alert", "pooled_recall", "prf",
           "score_alerts", "score_captions", "score_qa", "summarize_frames_to_alert"]

DEFAULT_COUNT = 200
DEFAULT_BATCH = 16
CLIP_CHUNK = 16  # scenarios rendered, encoded and generated together (fixed: results depend only on the seeds)
MAX_NEW_TOKENS = {"caption": 96, "alert": 48, "qa": 12}


def evaluate(model: Any, split: str = "test", count: int = DEFAULT_COUNT, family: str | None = None,
             offset: int = 0, num_frames: int | None = None, clip_fps: float = tasks.CLIP_FPS,
             stretch: int = DEFAULT_STRETCH, batch_size: int = DEFAULT_BATCH, precision: str = "fp32",
             device: str = "cpu", max_new_tokens: dict[str, int] | None = None, include_clips: bool = True,
             progress: Callable[[str], None] | None = None, resize: str | None = None) -> dict:
    """Evaluate ``model`` (a checkpoint directory or an engine) on ``count`` seeds of ``split``; returns the JSON-ready
    result (``meta``, ``summary``, ``targets``, ``clip``, ``single_frame``, ``temporal_recall``, ``clips``)."""
    import torch

    from vila_ros.engine import create_engine
    from vila_ros.sim import split_seeds

    if count < 1:
        raise ValueError("count must be >= 1")
    if family is not None and family not in tasks.FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(tasks.FAMILIES)}")
    if not 0 < clip_fps <= 60:
        raise ValueError(f"clip_fps must be a rate of frames per second in (0, 60]: {clip_fps!r}")
    tokens = dict(MAX_NEW_TOKENS, **(max_new_tokens or {}))
    timing = {"load_s": 0.0, "render_s": 0.0, "encode_s": 0.0, "generate_s": 0.0}
    t_all = time.perf_counter()
    if isinstance(model, (str, Path)):
        model_dir = str(model)
        t0 = time.perf_counter()
        engine = create_engine(model, "torch", precision, device, resize=resize)
        timing["load_s"] = time.perf_counter() - t0
    else:
        engine, model_dir = model, getattr(model, "model_id", "?")
    n = int(num_frames or engine.num_video_frames)
    size = engine_image_size(engine)
    stretch = max(stretch, n + 1)
    seeds = split_seeds(split, count, offset)
    say = progress or (lambda _msg: None)

    cases: list[Case] = []
    req = Requests()
    keys: list[dict] = []  # per case: request keys per mode
    generations = batches = 0
    for c0 in range(0, len(seeds), CLIP_CHUNK):
        chunk_seeds = seeds[c0:c0 + CLIP_CHUNK]
        t0 = time.perf_counter()
        chunk_cases = [build_case(s, family, n, clip_fps, stretch) for s in chunk_seeds]
        frames, ids = [], []
        for ci, case in enumerate(chunk_cases, start=len(cases)):
            for j, t in enumerate(case.stamps):
                frames.append(case.scenario.render(t, size, size))
                ids.append((ci, j))
        t1 = time.perf_counter()
        with torch.inference_mode():
            encoded = engine.encode_frames(frames)
        features = dict(zip(ids, encoded))
        t2 = time.perf_counter()
        timing["render_s"] += t1 - t0
        timing["encode_s"] += t2 - t1

        chunk_req = Requests()
        for ci, case in enumerate(chunk_cases, start=len(cases)):
            clip = [(ci, j) for j in case.clip_frames]
            last = [(ci, case.last_frame)]
            k: dict = {}
            for mode, frames_of in (("clip", clip), ("single_frame", last)):
                k[mode] = {
                    "caption": chunk_req.add(tasks.DESCRIBE_PROMPT, frames_of, "caption"),
                    "alert": chunk_req.add(tasks.ALERT_PROMPT, frames_of, "alert"),
                    "qa": [chunk_req.add(q["question"], frames_of, "qa") for q in case.truth.qa],
                    "windows": [],
                }
            for w in case.windows:
                k["clip"]["windows"].append(
                    chunk_req.add(tasks.ALERT_PROMPT, [(ci, j) for j in range(w, w + n)], "alert"))
                k["single_frame"]["windows"].append(chunk_req.add(tasks.ALERT_PROMPT, [(ci, w + n - 1)], "alert"))
            keys.append(k)
        todo = list(chunk_req.items.values())
        t3 = time.perf_counter()
        batches += generate_answers(engine, todo, features, batch_size, tokens)
        timing["generate_s"] += time.perf_counter() - t3
        generations += len(todo)
        req.items.update(chunk_req.items)
        cases += chunk_cases
        say(f"{len(cases)}/{len(seeds)} clips, {generations} generations, {time.perf_counter() - t_all:.1f}s")

    # ------------------------------------------------------------------------------------------------ scoring
    results: dict = {}
    per_clip: list[dict] = [{"seed": c.seed, "family": c.family, "event": c.category} for c in cases]
    for mode in MODES:
        truths = [mode_truth(c, mode) for c in cases]
        captions = [req.text(k[mode]["caption"]) for k in keys]
        alert_texts = [req.text(k[mode]["alert"]) for k in keys]
        alert_preds = [tasks.parse_categories(a) for a in alert_texts]
        qa_records, qa_wrong = [], []
        for k, t in zip(keys, truths):
            qa_wrong.append([])
            for q, key in zip(t["qa"], k[mode]["qa"]):
                qa_records.append(dict(q, predicted=req.text(key)))
                if not answer_correct(q["kind"], qa_records[-1]["predicted"], q["answer"]):
                    qa_wrong[-1].append(q["key"])
        families = sorted({c.family for c in cases})
        cats = [c for c in tasks.CATEGORY_NAMES if any(f in tasks.CATEGORIES[c].families for f in families)]
        alerts = score_alerts(alert_preds, [t["categories"] for t in truths], cats, alert_texts)
        latencies, pre, per_cat_lat = [], [], {}
        for ci, (case, k) in enumerate(zip(cases, keys)):
            rec = per_clip[ci].setdefault(mode, {})
            rec.update(caption=captions[ci], alert=alert_texts[ci],
                       alert_prompt_tokens=req.prompt_tokens(k[mode]["alert"]), qa_wrong=qa_wrong[ci])
            if case.start_frame is None:
                continue
            win_texts = [req.text(key) for key in k[mode]["windows"]]
            win_cats = [tasks.parse_categories(x) for x in win_texts]
            ends = [w + n - 1 for w in case.windows]
            lat = frames_to_alert(win_cats, ends, case.category, case.start_frame)
            latencies.append(lat)
            per_cat_lat.setdefault(case.category, []).append(lat)
            # windows that end before the first frame after the start hold no event (truth agrees: events_in)
            pre += [bool(c) for c, end in zip(win_cats, ends) if end < case.start_frame]
            rec.update(frames_to_alert=lat, windows=[", ".join(c) or "none" for c in win_cats])
        fta = summarize_frames_to_alert(latencies, clip_fps, pre)
        fta["per_category"] = {c: summarize_frames_to_alert(v, clip_fps) for c, v in sorted(per_cat_lat.items())}
        for v in fta["per_category"].values():
            for drop in ("histogram", "pre_event_windows", "pre_event_false_alert_rate"):
                v.pop(drop)
        results[mode] = {"caption": score_captions(captions, truths), "qa": score_qa(qa_records),
                         "alerts": alerts, "frames_to_alert": fta}
    for ci, case in enumerate(cases):
        per_clip[ci].update(truth_caption=case.truth.caption, truth_alert=case.truth.alert_answer,
                            start_frame=case.start_frame)

    temporal = {}
    for c in results["clip"]["alerts"]["per_category"]:
        rows = {m: results[m]["alerts"]["per_category"][c] for m in MODES}
        temporal[c] = {"temporal": tasks.CATEGORIES[c].temporal, "support": rows["clip"]["support"],
                       **{m: rows[m]["recall"] for m in MODES}}
    pooled = {kind: {m: pooled_recall(results[m]["alerts"], kind == "temporal") for m in MODES}
              for kind in ("temporal", "state")}
    summary = summarize_results(results, pooled)
    total = time.perf_counter() - t_all
    timing.update(total_s=total, per_clip_s=total / len(cases), generations=generations, batches=batches)
    meta = {"model_dir": model_dir, "model_id": getattr(engine, "model_id", None), "split": split, "count": count,
            "offset": offset, "family": family, "seeds": seeds, "num_frames": n, "clip_fps": clip_fps,
            "image_size": size, "stretch_frames": stretch, "decoding": "greedy", "max_new_tokens": tokens,
            "precision": precision, "device": device, "batch_size": batch_size,
            "torch_threads": torch.get_num_threads(), "event_clips": sum(c.category is not None for c in cases),
            "single_frame": "the clip's last frame alone; events, alerts, temporal QA and the caption's event are "
                            "scored against the clip's truth, the rest against that frame's truth",
            "timing": {k: round(v, 3) if isinstance(v, float) else v for k, v in timing.items()}}
    out = {"meta": meta, "summary": summary, "targets": check_targets(summary), **results,
           "temporal_recall": {"per_category": temporal, "pooled": pooled}}
    if include_clips:
        out["clips"] = per_clip
    return out
