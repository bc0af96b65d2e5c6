"""The soak run itself (vila_ros.tools.soak has the recording, the configuration and the command line): the node
process, the paced replay, RSS sampling and the report."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable

import psutil

from vila_ros.tools.replay_test import Listener, load_truth, score, start_node, stop_node
from vila_ros.tools.soak import CAMERA, MB, STALE, S, SoakConfig, planned_stops, write_soak_bag


class RssSampler:
    """Samples a process's RSS in the background, with how many frames were published by then."""

    def __init__(self, pid: int, progress: Callable[[], int], period_s: float = 0.2) -> None:
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


def _wait_for_node(listener: Listener, process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if listener.wait_for_node(timeout=1.0):
            return True
    return False


def run_soak(out_dir: Path, config: SoakConfig = SoakConfig(), printer: Callable[[str], None] = print,
             node_parameters: dict[str, str] | None = None) -> dict:
    """Write the recording, run the node on it at full speed, and return (and write) the report."""
    from vila_ros.tools.client import isolated_node
    from vila_ros.tools.replay import replay_bag

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
        if not _wait_for_node(listener, process, timeout=120):
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

    scored = score([truth], listener.descriptions, listener.alerts, {})
    stale_begins = [stamp_to_ns(r.message.header.stamp) for r in listener.alerts
                    if r.message.category == STALE and r.message.state == CornerCaseAlert.BEGIN]
    # The stale alert is stamped with the newest frame kept before the silence: within a few frames of the stop.
    stale_events = [{"camera": CAMERA, "category": STALE, "start_ns": stop,
                     "alerted": any(stop - 2 * S <= stamp <= stop + S for stamp in stale_begins)} for stop in stops]
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
