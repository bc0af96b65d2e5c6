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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vila_ros.tasks import NANOSECONDS

# The node harness (rclpy), psutil and the simulator are imported where a soak runs: `vila-ros --help` reads this
# module's arguments.
if TYPE_CHECKING:
    from vila_ros.tools.harness import Listener

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


class RssSampler:
    """Samples a process's RSS in the background, with how many frames were published by then."""

    def __init__(self, pid: int, progress: Callable[[], int], period_s: float = 0.2) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.progress = progress
        self.period_s = period_s
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, rss bytes, frames published)
        self.vanished = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        rss = self.process.memory_info().rss
        self.samples.append((time.monotonic(), rss, self.progress()))
        return rss

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self.period_s):
            try:
                self.sample()
            except psutil.NoSuchProcess:
                self.vanished = True
                return

    def __enter__(self) -> "RssSampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


class Pacer:
    """Called after each published frame: stops the camera at the planned stamps, and stays at most `window`
    frames ahead of what the node reports received. Image subscriptions are best effort, so an unpaced replay
    mostly feeds DDS's drop counter; paced, full speed means as fast as the node takes frames."""

    def __init__(self, listener: Listener, stops: list[int], stop_s: float, window: int,
                 alive: Callable[[], bool]) -> None:
        self.listener, self.pending, self.stop_s, self.window, self.alive = listener, list(stops), stop_s, window, alive
        self.published = 0
        self.given_up = 0  # frames DDS dropped: never reported received, so no longer waited for

    def received(self) -> int:
        return int(self.listener.latest_diagnostics().get(f"camera {CAMERA}", {}).get("received", 0))

    def __call__(self, topic: str, stamp_ns: int) -> None:
        self.published += 1
        if self.pending and stamp_ns >= self.pending[0]:
            self.pending.pop(0)
            time.sleep(self.stop_s)  # the camera goes silent: nothing is published meanwhile
        if self.window <= 0:
            return
        deadline = time.monotonic() + 2.0
        while self.published - self.given_up - self.received() > self.window:
            if time.monotonic() > deadline or not self.alive():
                self.given_up = self.published - self.received()
                return
            time.sleep(0.002)


def run_soak(out_dir: Path, config: SoakConfig = SoakConfig(), printer: Callable[[str], None] = print,
             node_parameters: dict[str, str] | None = None) -> dict:
    """Write the recording, run the node on it at full speed, and return (and write) the report."""
    from vila_ros.tools.harness import Listener, isolated_node, start_node, stop_node, wait_for_node
    from vila_ros.tools.replay import replay_bag
    from vila_ros.tools.scoring import load_truth

    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    bag = write_soak_bag(out_dir / "soak_bag", config)
    truth = load_truth(bag)
    stops = planned_stops(truth)
    printer(f"[soak] wrote {config.frames} frames ({config.frames / config.fps:.0f} s of camera time) in "
            f"{time.monotonic() - started:.0f} s; {len(truth['cameras'][CAMERA]['events'])} events, {len(stops)} stops")
    parameters = {"camera_names": f"[{CAMERA}]", "camera_topics": f"[{truth['cameras'][CAMERA]['topic']}]",
                  "event_log_path": str(out_dir / "alerts.jsonl"), "stale_after_s": str(config.stale_after_s),
                  "diagnostics_period_s": "0.1", "annotated_image_topic": "''",
                  "image_qos_depth": str(max(5, 2 * config.window))}
    if config.model_dir:
        parameters["model_dir"] = config.model_dir
    parameters.update(node_parameters or {})
    log_path = out_dir / "node.log"
    (out_dir / "alerts.jsonl").unlink(missing_ok=True)
    process = start_node(log_path, parameters)
    listener = Listener()
    crashed_during_run = False
    try:
        if not wait_for_node(listener, process, timeout=120):
            raise RuntimeError(f"the perception node did not come up; see {log_path}:\n{log_path.read_text()[-2000:]}")
        pacer = Pacer(listener, stops, config.stop_s, config.window, alive=lambda: process.poll() is None)
        with RssSampler(process.pid, progress=lambda: pacer.published) as rss:
            replay_started = time.monotonic()
            with isolated_node("vila_ros_soak_replay") as node:
                stats = replay_bag(node, bag, rate=config.rate, on_publish=pacer)
            replay_s = time.monotonic() - replay_started
            time.sleep(3.0)  # the last alert checks run on the newest frames
            crashed_during_run = process.poll() is not None or rss.vanished
            if not crashed_during_run:
                rss.sample()
        diagnostics = listener.latest_diagnostics()
        node_stats = diagnostics.get(f"camera {CAMERA}", {})
        inference = diagnostics.get("inference", {})
    finally:
        listener.close()
        code = stop_node(process)
    report = _report(config, truth, listener, stops, rss, stats.published, replay_s, node_stats, inference,
                     out_dir, code, crashed_during_run)
    report["wall_s"] = round(time.monotonic() - started, 1)
    report.update({"bag": str(bag), "node_log": str(log_path)})
    (out_dir / "soak.json").write_text(json.dumps(report, indent=2))
    return report


def _report(config: SoakConfig, truth: dict, listener: Listener, stops: list[int], rss: RssSampler,
            published: int, replay_s: float, node_stats: dict, inference: dict, out_dir: Path, exit_code: int,
            crashed: bool) -> dict:
    from vila_ros.msg import CornerCaseAlert
    from vila_ros.ros.conversion import stamp_to_ns
    from vila_ros.tools.scoring import score

    scored = score([truth], listener.descriptions, listener.alerts, {})
    stale_begins = [stamp_to_ns(r.message.header.stamp) for r in listener.alerts
                    if r.message.category == STALE and r.message.state == CornerCaseAlert.BEGIN]
    # The stale alert is stamped with the newest frame kept before the silence: within a few frames of the stop.
    stale_events = [{"camera": CAMERA, "category": STALE, "start_ns": stop,
                     "alerted": any(stop - 2 * NANOSECONDS <= stamp <= stop + NANOSECONDS for stamp in stale_begins)}
                    for stop in stops]
    per_event = [{k: e[k] for k in ("camera", "category", "start_ns", "alerted", "seconds_to_alert")}
                 for e in scored["per_event"]] + stale_events
    logged = [json.loads(line) for line in (out_dir / "alerts.jsonl").read_text().splitlines()] \
        if (out_dir / "alerts.jsonl").is_file() else []
    received = {(r.message.alert_id, r.message.state) for r in listener.alerts}
    state_numbers = {"BEGIN": CornerCaseAlert.BEGIN, "ONGOING": CornerCaseAlert.ONGOING, "END": CornerCaseAlert.END}
    lost = [r for r in logged if (r["alert_id"], state_numbers[r["state"]]) not in received]
    values = [sample[1] for sample in rss.samples]
    warm_at = config.warmup_fraction * published
    warm = next((sample[1] for sample in rss.samples if sample[2] >= warm_at), values[0])
    rss_mb = {"start": values[0] / MB, "warm": warm / MB, "end": values[-1] / MB, "max": max(values) / MB,
              "growth": (values[-1] - warm) / MB, "growth_from_start": (values[-1] - values[0]) / MB,
              "slope_per_1000_frames": _slope([(f, r) for _, r, f in rss.samples if f >= warm_at]) * 1000 / MB,
              "samples": len(values)}
    failures = int(inference.get("failures", "0") or 0)
    alerted = sum(e["alerted"] for e in per_event)
    problems = []
    if crashed or exit_code != 0:
        problems.append(f"node crashed or exited with {exit_code}")
    if failures:
        problems.append(f"{failures} inference failures: {inference.get('last_error', '')}")
    if alerted < len(per_event):
        problems.append(f"{len(per_event) - alerted} planted events not alerted")
    if lost:
        problems.append(f"{len(lost)} logged alerts never reached a subscriber")
    if rss_mb["growth"] >= config.max_growth_mb:
        problems.append(f"RSS grew {rss_mb['growth']:.1f} MB after warm-up (limit {config.max_growth_mb} MB)")
    return {
        "passed": not problems, "problems": problems,
        "frames": published, "frames_planned": config.frames, "fps": config.fps, "size": list(config.size),
        "camera_seconds": round(config.frames / config.fps, 1), "rate": config.rate,
        "replay_s": round(replay_s, 1), "stops_wall_s": round(len(stops) * config.stop_s, 1),
        "frames_received": int(node_stats.get("received", 0)), "frames_kept": int(node_stats.get("kept", 0)),
        "decode_errors": int(node_stats.get("decode_errors", 0)),
        "alert_checks": int(inference.get("alert_checks", 0)), "descriptions": int(inference.get("descriptions", 0)),
        "inference_failures": failures,
        "rss_mb": {k: round(v, 1) if isinstance(v, float) else v for k, v in rss_mb.items()},
        "events_planted": len(per_event), "events_alerted": alerted, "per_event": per_event,
        "false_alerts": scored["false_alerts"], "stale_alerts": len(stale_begins),
        "alerts_logged": len(logged), "alerts_received": len(listener.alerts), "alerts_lost": len(lost),
        "crashed": crashed, "node_exit_code": exit_code,
        "config": {k: v for k, v in config.__dict__.items()},
    }


def _slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of RSS over frames published: a leak shows as a steady slope, warm-up steps do not."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
