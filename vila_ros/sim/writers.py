"""Writers: LLaVA-style JSON datasets and rosbag2 recordings of simulated cameras with a ground-truth sidecar.

LLaVA records: ``{"id", "image": "images/x.jpg" | ["images/x_0.jpg", ...] (absent for text-only),
"conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}``; image paths
are relative to the JSON file's folder, one ``<image>`` token per image in the first human turn(s).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from vila_ros import tasks
from vila_ros.sim.clips import clip_window
from vila_ros.sim.generate import make_scenario
from vila_ros.sim.splits import split_seeds
from vila_ros.sim.world import SCENARIO_DURATION
from vila_ros.tasks import NANOSECONDS

DATASET_KINDS = ("single", "multi", "video", "text")
MIX_WEIGHTS = {"single": 0.2, "multi": 0.15, "video": 0.55, "text": 0.1}
IMAGE_TOKEN = "<image>"


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    Path(path).write_bytes(buf.tobytes())


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _turns(pairs: Sequence[tuple[str, str]], image_prefix: str) -> list[dict]:
    conv = []
    for i, (question, answer) in enumerate(pairs):
        conv.append({"from": "human", "value": (image_prefix + question) if i == 0 else question})
        conv.append({"from": "gpt", "value": answer})
    return conv


def _qa_pairs(truth, rng, count: int, temporal_ok: bool) -> list[tuple[str, str]]:
    qa = [q for q in truth.qa if temporal_ok or not q["temporal"]]
    if not qa:
        return []
    idx = rng.choice(len(qa), size=min(count, len(qa)), replace=False)
    return [(qa[i]["question"], qa[i]["answer"]) for i in idx]


def _record_single(seed, rng, img_dir, rel, size, family):
    scenario = make_scenario(seed, family)
    t = float(rng.uniform(0.0, scenario.duration))
    truth = scenario.truth([t])
    name = f"s{seed}.jpg"
    write_jpeg(img_dir / name, scenario.render(t, size, size))
    pairs = [(tasks.DESCRIBE_PROMPT, truth.static_caption)] + _qa_pairs(truth, rng, 2, temporal_ok=False)
    order = [pairs[0]] + pairs[1:] if rng.random() < 0.5 else pairs[1:] + [pairs[0]]
    return {"id": f"single-{seed}", "image": f"{rel}/{name}", "conversations": _turns(order, IMAGE_TOKEN + "\n")}, truth


def _record_video(seed, rng, img_dir, rel, size, family, num_frames, clip_fps):
    scenario = make_scenario(seed, family)
    stamps = clip_window(scenario, seed, num_frames, clip_fps)
    truth = scenario.truth(stamps)
    names = []
    for i, t in enumerate(stamps):
        names.append(f"v{seed}_{i}.jpg")
        write_jpeg(img_dir / names[-1], scenario.render(t, size, size))
    pairs = [(tasks.ALERT_PROMPT, truth.alert_answer), (tasks.DESCRIBE_PROMPT, truth.caption)]
    if rng.random() < 0.5:
        pairs.reverse()
    pairs += _qa_pairs(truth, rng, 2, temporal_ok=True)
    prefix = (IMAGE_TOKEN + "\n") * len(names)
    return {"id": f"video-{seed}", "image": [f"{rel}/{n}" for n in names],
            "conversations": _turns(pairs, prefix)}, truth


def _record_multi(seed, rng, img_dir, rel, size, family, num_frames, clip_fps):
    """Interleaved text and images: before/after frames of one clip, or two scenes, each with text between."""
    scenario = make_scenario(seed, family)
    if rng.random() < 0.5:
        stamps = clip_window(scenario, seed, num_frames, clip_fps)
        pair = [stamps[0], stamps[-1]]
        truth = scenario.truth(stamps)
        names = [f"m{seed}_0.jpg", f"m{seed}_1.jpg"]
        for n, t in zip(names, pair):
            write_jpeg(img_dir / n, scenario.render(t, size, size))
        human = (f"{IMAGE_TOKEN}\nThis is the scene at first.\n{IMAGE_TOKEN}\n"
                 f"This is the same scene {stamps[-1] - stamps[0]:.0f} seconds later. What happened?")
        answer = tasks.event_sentence(truth.family, truth.attributes["event"])
    else:
        other = make_scenario(seed + 1, family)
        ta, tb = float(rng.uniform(0, scenario.duration)), float(rng.uniform(0, other.duration))
        truth_a, truth = scenario.truth([ta]), other.truth([tb])
        names = [f"m{seed}_a.jpg", f"m{seed}_b.jpg"]
        write_jpeg(img_dir / names[0], scenario.render(ta, size, size))
        write_jpeg(img_dir / names[1], other.render(tb, size, size))
        human = f"{IMAGE_TOKEN}\n{truth_a.static_caption}\n{IMAGE_TOKEN}\n{tasks.DESCRIBE_PROMPT}"
        answer = truth.static_caption
    conv = [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]
    return {"id": f"multi-{seed}", "image": [f"{rel}/{n}" for n in names], "conversations": conv}, truth


def text_instructions() -> list[tuple[str, str]]:
    """Every text-only instruction pair about the domain (categories, severities, prompts)."""
    pairs = []
    for name, c in tasks.CATEGORIES.items():
        pairs.append((f"What is the corner case {name}?", c.description))
        pairs.append((f"How severe is {name}?", tasks.SEVERITY_NAMES[c.severity]))
        pairs.append((f"Which corner case is this: {c.description}", name))
        pairs.append((f"Does {name} need several frames to see?", "yes" if c.temporal else "no"))
    for family, where in (("road", "on a road"), ("warehouse", "in a warehouse aisle")):
        pairs.append((f"Which corner cases can happen {where}?", ", ".join(tasks.categories_for(family))))
    pairs.append(("What is the answer when no corner case happens?", tasks.NO_ALERT_ANSWER))
    pairs.append(("Which corner cases are critical?",
                  ", ".join(n for n, c in tasks.CATEGORIES.items() if c.severity == tasks.CRITICAL)))
    return pairs


def _record_text(seed, rng):
    pairs = text_instructions()
    chosen = rng.choice(len(pairs), size=2, replace=False)
    return {"id": f"text-{seed}", "conversations": _turns([pairs[i] for i in chosen], "")}, None


def write_llava_dataset(out_dir: str | Path, kind: str = "mix", split: str = "train", count: int = 100,
                        size: int = 112, num_frames: int = 8, clip_fps: float = tasks.CLIP_FPS,
                        family: str | None = None, seed_offset: int = 0, with_truth: bool = True) -> Path:
    """Write ``count`` LLaVA records of ``kind`` (single, multi, video, text, mix) from ``split`` seeds.

    Returns the JSON path ``out_dir/{kind}_{split}.json``; images go to ``out_dir/images/``; with ``with_truth``
    the ground truth of each record goes to ``out_dir/{kind}_{split}.truth.jsonl`` (one JSON object a line).
    """
    if kind not in DATASET_KINDS + ("mix",):
        raise ValueError(f"unknown dataset kind {kind!r}")
    out = Path(out_dir)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    seeds = split_seeds(split, count, seed_offset)
    records, truths = [], []
    names, weights = list(MIX_WEIGHTS), np.array(list(MIX_WEIGHTS.values()))
    for seed in seeds:
        rng = np.random.default_rng([seed, 99])
        k = kind if kind != "mix" else names[int(rng.choice(len(names), p=weights / weights.sum()))]
        if k == "single":
            rec, truth = _record_single(seed, rng, img_dir, "images", size, family)
        elif k == "video":
            rec, truth = _record_video(seed, rng, img_dir, "images", size, family, num_frames, clip_fps)
        elif k == "multi":
            rec, truth = _record_multi(seed, rng, img_dir, "images", size, family, num_frames, clip_fps)
        else:
            rec, truth = _record_text(seed, rng)
        records.append(rec)
        truths.append({"id": rec["id"], "truth": truth.to_dict() if truth is not None else None})
    path = out / f"{kind}_{split}.json"
    path.write_text(json.dumps(records, indent=1))
    if with_truth:
        with open(out / f"{kind}_{split}.truth.jsonl", "w") as fh:
            for t in truths:
                fh.write(json.dumps(t) + "\n")
    return path


def write_clip(out_dir: str | Path, clip, prefix: str = "frame") -> list[Path]:
    """Frames of a clip as JPEGs ``prefix_XX.jpg`` plus ``truth.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(clip.frames):
        paths.append(out / f"{prefix}_{i:02d}.jpg")
        write_jpeg(paths[-1], frame)
    (out / "truth.json").write_text(json.dumps(clip.truth.to_dict(), indent=1))
    return paths


# ------------------------------------------------------------------------------------------------------ rosbag2
BAG_ENCODINGS = ("rgb8", "bgr8", "jpeg")
JPEG_FORMAT = "rgb8; jpeg compressed bgr8"  # image_transport's format string for a JPEG of an rgb8 image
DEFAULT_START_NS = 1_700_000_000 * NANOSECONDS  # fixed so that a bag and its sidecar are reproducible


def frame_stamp_ns(start_ns: int, index: int, fps: float) -> int:
    """The stamp of frame `index` of a camera at `fps` whose first frame is stamped `start_ns`: the stream bags'
    and the in-process stream eval's alike, so that a replayed bag and the eval see the same stamps."""
    return start_ns + int(round(index * NANOSECONDS / fps))


def camera_topic(camera: str, encoding: str) -> str:
    base = f"/cameras/{camera}/image_raw"
    return base + "/compressed" if encoding == "jpeg" else base


def segment_seed(seed: int, camera_index: int, segment_index: int) -> int:
    return int(seed) * 1000 + camera_index * 100 + segment_index


def write_bag(out: str | Path, cameras: Sequence[str] = ("front",), fps: float = 10.0,
              size: tuple[int, int] = (640, 480), encoding: str = "rgb8", duration: float = 10.0, seed: int = 0,
              family: str | None = None, storage: str = "mcap", segment: float = SCENARIO_DURATION,
              start_ns: int = DEFAULT_START_NS, jpeg_quality: int = 90,
              categories: Sequence[str | None] | None = None) -> Path:
    """Record simulated cameras into a rosbag2 (version 9) at ``out`` plus ``<out>.truth.json``.

    Each camera shows its own chain of scenarios, one per ``segment`` seconds (scenario seed
    ``segment_seed(seed, camera index, segment index)``), rendered at ``fps`` and ``size`` (width, height).
    encoding: rgb8 / bgr8 (sensor_msgs/Image on /cameras/NAME/image_raw) or jpeg (sensor_msgs/CompressedImage on
    /cameras/NAME/image_raw/compressed). Stamps: header.stamp = bag time = start_ns + frame index / fps.
    ``categories``: the event of each segment in turn, cycled (a category name, None for no event, "auto" for the
    seed's choice); default: every segment "auto".
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if encoding not in BAG_ENCODINGS:
        raise ValueError(f"encoding must be one of {BAG_ENCODINGS}")
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}.get(storage)
    if plugin is None:
        raise ValueError("storage must be mcap or sqlite3")
    cameras = list(cameras)
    if not cameras or len(set(cameras)) != len(cameras):
        raise ValueError("cameras must be distinct names")
    width, height = size
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists")
    ts = get_typestore(Stores.ROS2_KILTED)
    n_frames = int(math.floor(duration * fps + 1e-9))
    n_segments = max(1, int(math.ceil(duration / segment - 1e-9)))
    scenarios = {}
    truth_cams = {}
    for ci, cam in enumerate(cameras):
        segs = []
        for si in range(n_segments):
            seg_len = min(segment, duration - si * segment)
            category = categories[si % len(categories)] if categories else "auto"
            s = make_scenario(segment_seed(seed, ci, si), family, category=category, duration=segment)
            scenarios[(ci, si)] = s
            seg_start = start_ns + int(round(si * segment * NANOSECONDS))
            events = []
            if s.event is not None and s.event.start < seg_len:
                e = s.event
                # An open-ended event lasts to the end of the recording, or of its segment when another follows.
                open_ended = math.isinf(e.end) and si == n_segments - 1
                events.append({"category": e.category, "severity": e.severity,
                               "start_ns": seg_start + int(round(e.start * NANOSECONDS)),
                               "end_ns": None if open_ended else
                               seg_start + int(round(min(e.end, seg_len) * NANOSECONDS)),
                               "start_s": si * segment + e.start})
            times = [k / fps - si * segment for k in range(n_frames)
                     if si * segment <= k / fps < si * segment + seg_len]
            whole = s.truth(times) if times else None
            segs.append({"index": si, "seed": s.seed, "family": s.family, "start_ns": seg_start,
                         "end_ns": seg_start + int(round(seg_len * NANOSECONDS)), "events": events,
                         "truth": whole.to_dict() if whole else None})
        truth_cams[cam] = {"topic": camera_topic(cam, encoding), "frame_id": f"{cam}_camera", "segments": segs,
                           "events": [e for sg in segs for e in sg["events"]]}

    with Writer(out, version=9, storage_plugin=plugin) as writer:
        msgtype = "sensor_msgs/msg/CompressedImage" if encoding == "jpeg" else "sensor_msgs/msg/Image"
        conns = [writer.add_connection(camera_topic(c, encoding), msgtype, typestore=ts) for c in cameras]
        for k in range(n_frames):
            t = k / fps
            si = min(int(t // segment), n_segments - 1)
            stamp = start_ns + int(round(t * NANOSECONDS))
            for ci, cam in enumerate(cameras):
                rgb = scenarios[(ci, si)].render(t - si * segment, width, height)
                msg = _bag_image(ts, rgb, stamp, f"{cam}_camera", encoding, jpeg_quality)
                writer.write(conns[ci], stamp, ts.serialize_cdr(msg, msgtype))
    sidecar = {"bag": out.name, "storage": storage, "fps": fps, "width": width, "height": height,
               "encoding": encoding, "duration": duration, "seed": seed, "family": family, "segment": segment,
               "start_ns": start_ns, "num_frames": n_frames, "cameras": truth_cams}
    truth_path(out).write_text(json.dumps(sidecar, indent=1))
    return out


def _bag_image(ts, rgb: np.ndarray, stamp: int, frame_id: str, encoding: str, jpeg_quality: int):
    """A rosbags message of one frame: sensor_msgs/Image (rgb8, bgr8) or CompressedImage (jpeg)."""
    header = ts.types["std_msgs/msg/Header"](
        stamp=ts.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id)
    if encoding == "jpeg":
        data = np.frombuffer(encode_jpeg(rgb, jpeg_quality), np.uint8)
        return ts.types["sensor_msgs/msg/CompressedImage"](header=header, format=JPEG_FORMAT, data=data)
    pix = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    return ts.types["sensor_msgs/msg/Image"](header=header, height=rgb.shape[0], width=rgb.shape[1],
                                             encoding=encoding, is_bigendian=0, step=rgb.shape[1] * 3,
                                             data=np.ascontiguousarray(pix).reshape(-1))


def write_stream_bag(out: str | Path, stream, camera: str = "front", fps: float = 10.0,
                     size: tuple[int, int] = (320, 240), encoding: str = "rgb8", storage: str = "mcap",
                     start_ns: int = DEFAULT_START_NS, jpeg_quality: int = 90) -> Path:
    """A stream (``vila_ros.sim.streams.Stream``) recorded as one camera of a rosbag2 at ``out``, with its truth in
    ``<out>.truth.json`` (``write_bag``'s format; its segments also rebuild their scenes for window truth)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if encoding not in BAG_ENCODINGS:
        raise ValueError(f"encoding must be one of {BAG_ENCODINGS}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists")
    ts = get_typestore(Stores.ROS2_KILTED)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    msgtype = "sensor_msgs/msg/CompressedImage" if encoding == "jpeg" else "sensor_msgs/msg/Image"
    n_frames = int(math.floor(stream.duration * fps + 1e-9))
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        connection = writer.add_connection(camera_topic(camera, encoding), msgtype, typestore=ts)
        for k in range(n_frames):
            stamp = frame_stamp_ns(start_ns, k, fps)
            msg = _bag_image(ts, stream.render(k / fps, *size), stamp, f"{camera}_camera", encoding, jpeg_quality)
            writer.write(connection, stamp, ts.serialize_cdr(msg, msgtype))
    sidecar = {"bag": out.name, "storage": storage, "fps": fps, "width": size[0], "height": size[1],
               "encoding": encoding, "duration": stream.duration, "split": stream.split, "stream": stream.number,
               "family": stream.family, "start_ns": start_ns, "num_frames": n_frames,
               "cameras": {camera: stream.camera_truth(camera_topic(camera, encoding), f"{camera}_camera",
                                                       start_ns)}}
    truth_path(out).write_text(json.dumps(sidecar, indent=1))
    return out


def truth_path(bag: str | Path) -> Path:
    bag = Path(bag)
    return bag.with_name(bag.name + ".truth.json")
