"""`make demo` / `vila-ros demo`: the product end to end on the embedded default model.

Records two simulated cameras (a car's front camera on a road, a robot's camera in a warehouse aisle; both with
planted corner cases and a ground-truth sidecar) as rosbag2 files, starts the perception node as its own process,
replays both bags into it over DDS, prints descriptions and alerts as they arrive, asks it questions, and writes
a report: `report.md` (timeline of truth, descriptions and alerts) and `replay_test.json` (scores).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from vila_ros.tasks import NANOSECONDS


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="out/demo", help="output directory (bags, node log, report)")
    parser.add_argument("--model", default="", help="VILA1.5 checkpoint directory; default: the embedded model")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds recorded per camera")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--fps", type=float, default=10.0, help="camera rate of the recordings")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed factor")


def run(args) -> int:
    from vila_ros.resources import resolve_model_dir
    from vila_ros.sim.writers import truth_path, write_bag
    from vila_ros.tools.replay_test import run_replay_test

    model_dir = resolve_model_dir(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bags = []
    scenes = (("road", "front", "road", "jpeg"), ("warehouse", "aisle", "warehouse", "rgb8"))
    for name, camera, family, encoding in scenes:
        bag = out / name
        if bag.exists():
            shutil.rmtree(bag)
        truth_path(bag).unlink(missing_ok=True)
        print(f"[demo] recording {args.duration:.0f} s of the {family} camera '{camera}' into {bag}", flush=True)
        write_bag(bag, cameras=[camera], fps=args.fps, size=(640, 480), encoding=encoding, duration=args.duration,
                  seed=args.seed + len(bags), family=family, storage="mcap")
        bags.append(bag)
    start_ns = None

    from vila_ros.msg import CornerCaseAlert
    from vila_ros.ros.conversion import stamp_to_ns
    from vila_ros.ros.outputs import STATE_NAMES

    def show(message) -> None:
        nonlocal start_ns
        stamp = stamp_to_ns(message.header.stamp)
        start_ns = stamp if start_ns is None else min(start_ns, stamp)
        t = (stamp - start_ns) / NANOSECONDS
        if isinstance(message, CornerCaseAlert):
            state = STATE_NAMES[message.state]
            print(f"  t={t:5.1f}s  ALERT {state:7s} [{message.camera}] {message.category} ({message.alert_id})",
                  flush=True)
        else:
            print(f"  t={t:5.1f}s  [{message.cameras[0]}] {message.text}", flush=True)

    print(f"[demo] starting the perception node on {model_dir} and replaying at {args.rate}x", flush=True)
    report = run_replay_test(bags, out, model_dir=str(model_dir), rate=args.rate, printer=show,
                             questions=(("Describe the scene.", "front"), ("Describe the scene.", "aisle"),
                                        ("Is there a pedestrian?", "front")))
    for answer in report["answers"]:
        reply = answer["answer"] or answer["error_message"]
        print(f"[demo] QueryScene [{answer['camera']}] {answer['question']!r} -> {reply!r} "
              f"({answer['latency_ms']:.0f} ms, {answer['frames']} frames)", flush=True)
    print(f"[demo] {report['alerted']}/{report['events']} planted corner cases alerted, {report['false_alerts']} "
          f"false alerts, {report['descriptions']} descriptions; report: {out / 'report.md'}", flush=True)
    return 0 if report["node_exit_code"] == 0 else 1
