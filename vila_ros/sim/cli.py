"""`vila-ros sim`: the scene simulator on the command line (clips, LLaVA datasets, rosbags, previews)."""
from __future__ import annotations

import argparse
import json
import sys

from vila_ros import tasks

DESCRIPTION = """\
Procedural camera scenes with ground truth, deterministic by seed.
Families: road (front camera: lanes, cars, pedestrians, cyclists, animals, traffic lights, signs, day/night,
rain/fog) and warehouse (robot camera in an aisle: shelves, boxes, people, forklifts).
Corner cases (need several frames): pedestrian_crossing, vehicle_cut_in, wrong_way_vehicle, falling_object,
red_light, animal_crossing, person_in_aisle, forklift_approaching, camera_blocked, camera_blurred.

  vila-ros sim clip --seed 3 --out clip3/          frames of one training clip as JPEGs + truth.json
  vila-ros sim dataset --kind mix --split train --count 1000 --out data/   LLaVA JSON + images
  vila-ros sim bag --out run.mcap --cameras front,left --fps 10 --size 640x480 --encoding jpeg --duration 30
  vila-ros sim preview --out grid.png               one clip per category in a grid
  vila-ros sim grammar --out MODEL/description_regex.txt   the caption grammar a model trained here speaks
  vila-ros sim bench                                render speed
"""


def size_argument(text: str) -> tuple[int, int]:
    """An image size on the command line: WIDTHxHEIGHT or N (N x N), both positive."""
    try:
        w, h = text.lower().split("x") if "x" in text else (text, text)
        size = int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT or N, not {text!r}") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, not {text!r}")
    return size


def register(subparsers) -> None:
    sim = subparsers.add_parser("sim", help="scene simulator: clips, LLaVA datasets, rosbags with ground truth",
                                description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = sim.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")
    sim.set_defaults(func=lambda args: (sim.print_help(), 0)[1])

    fam = dict(choices=["road", "warehouse"], default=None, help="scene family (default: chosen by seed)")

    p = sub.add_parser("clip", help="write the frames of one clip as JPEGs plus truth.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--family", **fam)
    p.add_argument("--category", default="auto", help="event category, 'none' or 'auto' (by seed)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--fps", type=float, default=tasks.CLIP_FPS, help="clip frame rate")
    p.add_argument("--size", type=size_argument, default=(112, 112), help="WIDTHxHEIGHT or N (default 112)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_clip)

    p = sub.add_parser("dataset", help="write a LLaVA-style JSON dataset with JPEG images")
    p.add_argument("--kind", choices=["single", "multi", "video", "text", "mix"], default="mix")
    p.add_argument("--split", choices=["train", "val", "test"], default="train")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--offset", type=int, default=0, help="first seed index inside the split")
    p.add_argument("--family", **fam)
    p.add_argument("--frames", type=int, default=8, help="frames per video clip")
    p.add_argument("--fps", type=float, default=tasks.CLIP_FPS, help="clip frame rate")
    p.add_argument("--size", type=int, default=112, help="square image size")
    p.add_argument("--out", required=True, help="output folder ({kind}_{split}.json, images/, truth .jsonl)")
    p.set_defaults(func=_dataset)

    p = sub.add_parser("bag", help="record simulated cameras into a rosbag2 plus <bag>.truth.json")
    p.add_argument("--out", required=True, help="bag folder to create")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    p.add_argument("--cameras", default="front", help="comma-separated camera names (topic /cameras/NAME/...)")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--size", type=size_argument, default=(640, 480), help="WIDTHxHEIGHT (default 640x480)")
    p.add_argument("--encoding", choices=["rgb8", "bgr8", "jpeg"], default="rgb8")
    p.add_argument("--duration", type=float, default=10.0, help="seconds")
    p.add_argument("--segment", type=float, default=10.0, help="seconds per scenario (a new scene after each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--family", **fam)
    p.set_defaults(func=_bag)

    p = sub.add_parser("preview", help="a PNG grid: one clip per category (rows) by frame (columns)")
    p.add_argument("--out", default="sim_preview.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=112)
    p.set_defaults(func=_preview)

    p = sub.add_parser("grammar", help="the caption grammar as a regular expression (a model's "
                                       "description_regex.txt: the node decodes descriptions under it)")
    p.add_argument("--out", help="file to write (default: standard output)")
    p.set_defaults(func=_grammar)

    p = sub.add_parser("bench", help="measure render speed")
    p.add_argument("--size", type=size_argument, default=(112, 112))
    p.add_argument("--frames", type=int, default=400)
    p.set_defaults(func=_bench)


def _category(text: str):
    return None if text == "none" else text


def _clip(args) -> int:
    from vila_ros.sim import make_clip
    from vila_ros.sim.writers import write_clip

    clip = make_clip(args.seed, args.family, num_frames=args.frames, clip_fps=args.fps, size=args.size,
                     category=_category(args.category))
    paths = write_clip(args.out, clip)
    print(f"wrote {len(paths)} frames and truth.json to {args.out}")
    print(clip.truth.caption)
    print("alerts:", clip.truth.alert_answer)
    return 0


def _dataset(args) -> int:
    from vila_ros.sim.writers import write_llava_dataset

    path = write_llava_dataset(args.out, kind=args.kind, split=args.split, count=args.count, size=args.size,
                               num_frames=args.frames, clip_fps=args.fps, family=args.family,
                               seed_offset=args.offset)
    print(f"wrote {args.count} records to {path}")
    return 0


def _bag(args) -> int:
    from vila_ros.sim.writers import truth_path, write_bag

    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    out = write_bag(args.out, cameras=cameras, fps=args.fps, size=args.size, encoding=args.encoding,
                    duration=args.duration, seed=args.seed, family=args.family, storage=args.storage,
                    segment=args.segment)
    truth = json.loads(truth_path(out).read_text())
    events = sum(len(c["events"]) for c in truth["cameras"].values())
    print(f"wrote {out} ({truth['num_frames']} frames x {len(cameras)} cameras, {events} events) "
          f"and {truth_path(out)}")
    return 0


def _grammar(args) -> int:
    from pathlib import Path

    if args.out:
        Path(args.out).write_text(tasks.caption_regex() + "\n")
        print(f"wrote the caption grammar to {args.out}")
    else:
        print(tasks.caption_regex())
    return 0


def _preview(args) -> int:
    import cv2
    import numpy as np

    from vila_ros.sim import make_clip

    rows = []
    for i, cat in enumerate(list(tasks.CATEGORY_NAMES) + [None]):
        clip = make_clip(args.seed + i, category=cat, size=args.size)
        rows.append(np.concatenate(clip.frames, 1))
    cv2.imwrite(args.out, cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}")
    return 0


def _bench(args) -> int:
    from vila_ros.sim.bench import bench_render

    result = bench_render(args.size[0], args.size[1], frames=args.frames)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0
