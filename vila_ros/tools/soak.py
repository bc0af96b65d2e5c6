"""Soak test (`vila-ros soak`): a long recording replayed at full speed into a perception node process.

The recording is one simulated camera whose scenario segments alternate between an event the model sees reliably
(camera_blocked, camera_blurred: recall 1.0 in the default model's EVAL.md) and no event; in each event-free
segment the camera stops for a few seconds of wall time (the replay pauses), which the node must report with its
own sensor_stale alert. Events last many seconds of camera time, because at full speed a slow model skips ahead to
the newest frames: this measures that the node never loses an alert, not the model's recall.

Full speed means as fast as the node takes frames: the replay stays at most `window` frames ahead of the count the
node reports received. Its image subscription is best effort, so an unpaced replay (`--window 0`) mostly measures
DDS dropping frames the node never sees.

While it runs, the node process's resident memory is sampled (psutil); the report has frames published, received
and kept, RSS at start / after warm-up / end / max, planted events vs alerted, alerts logged vs received, crashes
and wall time. It passes when the node never crashed or failed an inference, every planted event was alerted,
nothing it logged was lost on the way, and RSS grew less than `max_growth_mb` after warm-up.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

S = 1_000_000_000
MB = 1024 * 1024
CAMERA = "front"
SEGMENT_CATEGORIES = ("camera_blocked", None, "camera_blurred", None)
STALE = "sensor_stale"


@dataclass(frozen=True)
class SoakConfig:
    frames: int = 20_000
    fps: float = 30.0
    size: tuple[int, int] = (160, 120)
    segment_s: float = 30.0  # an event lasts 10-20 s of camera time: several checks even when the model is slow
    stop_s: float = 3.0  # wall seconds the camera stays silent in each event-free segment
    stale_after_s: float = 1.0
    rate: float = 0.0  # 0 = as fast as the node takes frames (see Pacer)
    window: int = 50  # frames in flight at most (0 = unpaced); the node's image queue is made deeper than this
    warmup_fraction: float = 0.1  # RSS growth is measured from here, after buffers, caches and allocators filled
    max_growth_mb: float = 50.0
    seed: int = 7
    model_dir: str = ""

    def __post_init__(self) -> None:
        # At least an event segment, an event-free one with its stop, and the start of a third.
        if self.fps <= 0 or self.segment_s <= 0 or self.frames / self.fps <= 2 * self.segment_s:
            raise ValueError(f"a soak needs more than two segments of camera time: {self.frames} frames at "
                             f"{self.fps} fps is {self.frames / max(self.fps, 1e-9):.0f} s, segments are "
                             f"{self.segment_s} s")


def write_soak_bag(out: Path, config: SoakConfig) -> Path:
    from vila_ros.sim.writers import truth_path, write_bag

    if out.exists():
        shutil.rmtree(out)
    truth_path(out).unlink(missing_ok=True)
    return write_bag(out, cameras=[CAMERA], fps=config.fps, size=config.size, encoding="jpeg",
                     duration=config.frames / config.fps, seed=config.seed, family="road",
                     segment=config.segment_s, categories=SEGMENT_CATEGORIES)


def planned_stops(truth: dict) -> list[int]:
    """Stamps after which the camera stops: the middle of each event-free segment that ends before the recording."""
    segments = truth["cameras"][CAMERA]["segments"]
    return [(s["start_ns"] + s["end_ns"]) // 2 for s in segments[:-1] if not s["events"]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default = SoakConfig()
    parser.description = ("Records a simulated camera (planted camera_blocked / camera_blurred events and camera "
                          "stops), replays it into a perception node process as fast as the node takes frames, "
                          "samples the node's RSS, and checks that every planted event was alerted, nothing "
                          "crashed, and memory stayed flat. Exit code 0 when it passed.")
    parser.add_argument("--frames", type=int, default=default.frames, help="frames to replay (default %(default)s)")
    parser.add_argument("--fps", type=float, default=default.fps, help="camera rate of the recording")
    parser.add_argument("--size", default="x".join(map(str, default.size)), help="frame WIDTHxHEIGHT")
    parser.add_argument("--segment", type=float, default=default.segment_s,
                        help="seconds of camera time per scenario (every other one has an event)")
    parser.add_argument("--stop", type=float, default=default.stop_s,
                        help="wall seconds the camera stops in each event-free segment")
    parser.add_argument("--rate", type=float, default=default.rate,
                        help="replay speed factor; 0 = as fast as the node takes frames")
    parser.add_argument("--window", type=int, default=default.window,
                        help="frames in flight at most (0 = unpaced: DDS drops what the node cannot take)")
    parser.add_argument("--max-growth-mb", type=float, default=default.max_growth_mb,
                        help="RSS growth after warm-up that fails the soak")
    parser.add_argument("--model", default="", help="checkpoint directory (default: the embedded model)")
    parser.add_argument("--out", default="out/soak", help="directory for the bag, node log and alert log")
    parser.add_argument("--json", metavar="FILE", help="also write the report here")
    parser.set_defaults(func=run)


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--size must be WIDTHxHEIGHT, not {text!r}")
    return int(parts[0]), int(parts[1])


def run(args: argparse.Namespace) -> int:
    from vila_ros.tools.soak_runner import run_soak

    try:
        width, height = _size(args.size)
        config = SoakConfig(frames=args.frames, fps=args.fps, size=(width, height), segment_s=args.segment,
                            stop_s=args.stop, rate=args.rate, window=args.window, max_growth_mb=args.max_growth_mb,
                            model_dir=args.model)
        report = run_soak(Path(args.out), config)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"soak: {error}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    rss = report["rss_mb"]
    print(f"[soak] {'PASSED' if report['passed'] else 'FAILED'}: {report['frames']} frames published, "
          f"{report['frames_received']} received, {report['frames_kept']} kept in {report['replay_s']} s; "
          f"events alerted {report['events_alerted']}/{report['events_planted']}; RSS {rss['start']} -> "
          f"{rss['end']} MB (max {rss['max']}, growth after warm-up {rss['growth']} MB); "
          f"crashed: {report['crashed']}; wall {report['wall_s']} s", flush=True)
    for problem in report["problems"]:
        print(f"[soak]   {problem}", flush=True)
    return 0 if report["passed"] else 1
