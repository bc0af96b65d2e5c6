"""`vila-ros eval-stream`: the node's own frame path and schedule, in-process and faster than real time, on the
held-out stream split (or on recorded bags), scored on what the node would publish.

Per camera, frames go through what the node runs: `ros/camera.py` `Camera.ingest` (the clip-rate grid of
`ros/frame_buffer.py` `CameraBuffer` decides before decoding, then decode and shrink), and
`ros/worker.py` `InferenceWorker` with the node's settings (`ros/parameters.py` defaults plus overrides: prompts,
window, describe and alert cadence) and its `ros/events.py` tracker; `InferenceWorker.run_due` runs what is due
after each kept frame, so cadence follows frame stamps exactly as in the node, and nothing waits on a wall clock.
The stale-camera monitor counts wall-time silence, which a replay at full speed has no notion of: it is off, as in
`replay-test`. Generated streams render only the frames the buffer keeps (the node decodes only those).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from vila_ros.ros.conversion import ns_to_stamp, stamp_to_ns
from vila_ros.sim.writers import DEFAULT_START_NS, frame_stamp_ns
from vila_ros.tools.stream_scoring import score_alerts, score_descriptions

if TYPE_CHECKING:
    from vila_ros.ros.events import TrackerSettings
    from vila_ros.ros.worker_types import WorkerSettings

# A camera's 4:3 frame, squashed to the model's square by the model's own resize as the node's frames are (a square
# render at the model's size differs at edges and distant detail, and the model scores it differently).
RENDER_SIZE = (320, 240)
CAMERA_FPS = 10.0


@dataclass
class NodeRecords:
    alerts: list[dict] = field(default_factory=list)
    descriptions: list[dict] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)  # alert checks with the model's category probabilities
    unfamiliar_checks: int = 0  # alert checks whose window the world gate found outside the model's world
    unfamiliar_descriptions: int = 0  # and descriptions


def node_values(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The node's parameter values: its declared defaults, then `overrides`."""
    from vila_ros.ros.parameters import PARAMETERS

    values = {name: spec[0] for name, spec in PARAMETERS.items()}
    values.update(overrides or {})
    return values


def engine_for(model_dir: str, precision: str, overrides: dict[str, Any] | None = None):
    """The torch engine the in-process node runs: the checkpoint at `model_dir` at `precision`, with the image
    resize the `image_resize` override names (as the node's configure reads it). The node's other configure-time
    parameters pick what the eval's own options pick, so they are refused rather than silently ignored."""
    from vila_ros.engine import create_engine
    from vila_ros.resources import resolve_model_dir
    from vila_ros.ros.parameters import CONFIGURE_TIME

    fixed = sorted((CONFIGURE_TIME - {"image_resize"}) & (overrides or {}).keys())
    if fixed:
        raise ValueError(f"{', '.join(fixed)}: not node parameters of the in-process eval, which runs the torch "
                         "engine on the CPU (the model: --model, its precision: --precision)")
    return create_engine(resolve_model_dir(model_dir), precision=precision,
                         resize=(overrides or {}).get("image_resize") or None)


def node_settings(engine, overrides: dict[str, Any] | None = None,
                  probabilities: bool = False) -> tuple[dict[str, Any], WorkerSettings, TrackerSettings]:
    """(parameter values, WorkerSettings, TrackerSettings) as the node's configure builds them from its
    parameters. With `probabilities` no thresholds are read unless `overrides` name a file: every check asks the
    alert prompt, and the probe records each category's probability (at thresholds it records what the node scores)."""
    from vila_ros.ros import parameters

    if probabilities:
        overrides = {"alert_thresholds_file": "", **(overrides or {})}
    values = node_values(overrides)
    return (values, parameters.worker_settings(None, engine.num_video_frames, values, engine),
            parameters.tracker_settings(None, values))


class InProcessNode:
    """The node's cameras, buffers, worker and tracker without rclpy's executor: frames in, records out."""

    def __init__(self, engine, cameras: dict[str, str], overrides: dict[str, Any] | None = None,
                 probabilities: bool = False) -> None:
        from vila_ros.ros.camera import Camera
        from vila_ros.ros.events import EventTracker
        from vila_ros.ros.frame_buffer import CameraBuffer
        from vila_ros.ros.parameters import CameraSpec
        from vila_ros.ros.worker import InferenceWorker

        values, settings, tracker_settings = node_settings(engine, overrides, probabilities)
        self.values = values
        tracker = EventTracker(tracker_settings)
        max_bytes = int(values["buffer_max_megabytes"] * 1024 * 1024)
        self.clip_fps = float(values["clip_fps"])
        self.cameras = {name: Camera(CameraSpec(name, topic, topic.rstrip("/").endswith("/compressed"),
                                                self.clip_fps),
                                     CameraBuffer(name, 1.0 / self.clip_fps, values["buffer_seconds"],
                                                  values["buffer_max_frames"], max_bytes))
                        for name, topic in cameras.items()}
        self.records = NodeRecords()
        self.probe = None
        if probabilities:
            from vila_ros.tools.stream_calibration import ProbabilityProbe

            engine = self.probe = ProbabilityProbe(engine, settings.alert_prompt, settings.alert_categories)
        self.worker = InferenceWorker(engine, {n: c.buffer for n, c in self.cameras.items()}, settings,
                                      self._on_description, self._on_alert, tracker)
        self._max_side = values["frame_max_side"]

    def wants(self, camera: str, stamp_ns: int) -> bool:
        return self.cameras[camera].buffer.wants(stamp_ns)

    def feed(self, camera: str, message: Any) -> str:
        """One image message through `Camera.ingest`, then every job that became due; returns the outcome."""
        outcome = self.cameras[camera].ingest(message, time.time_ns, self._max_side).outcome
        if outcome == "kept":
            self.worker.run_due()
            self.records.unfamiliar_checks = self.worker.stats.unfamiliar_checks
            self.records.unfamiliar_descriptions = self.worker.stats.unfamiliar_descriptions
            if self.probe is not None and self.probe.pending:
                self.records.checks += self.probe.take(camera, self.cameras[camera].buffer.window())
        return outcome

    def _on_description(self, description) -> None:
        self.records.descriptions.append({"camera": description.camera, "text": description.text,
                                          "stamps_ns": [f.stamp_ns for f in description.frames]})

    def _on_alert(self, update) -> None:
        self.records.alerts.append({"camera": update.camera, "category": update.category, "state": update.state,
                                    "stamp_ns": update.stamp_ns, "alert_id": update.alert_id,
                                    "confidence": round(float(update.confidence), 4)})


def image_message(rgb, stamp_ns: int, frame_id: str):
    from sensor_msgs.msg import Image

    message = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3,
                    data=rgb.tobytes())
    message.header.stamp = ns_to_stamp(stamp_ns)
    message.header.frame_id = frame_id
    return message


def stream_camera(stream) -> tuple[str, str]:
    """(camera name, image topic) of a generated stream (`sim.streams.Stream`) as the eval runs it."""
    camera = f"{stream.family}{stream.number}"
    return camera, f"/cameras/{camera}/image_raw"


def camera_truths(streams: list, start_ns: int = DEFAULT_START_NS) -> dict[str, dict]:
    """The truth per camera of generated streams run from `start_ns`, as `run_streams` scores them."""
    return {camera: stream.camera_truth(topic, f"{camera}_camera", start_ns)
            for stream in streams for camera, topic in [stream_camera(stream)]}


def run_streams(engine, streams: list, overrides: dict[str, Any] | None = None, fps: float = CAMERA_FPS,
                size: tuple[int, int] = RENDER_SIZE, start_ns: int = DEFAULT_START_NS,
                progress: Callable[[str], None] | None = None,
                probabilities: bool = False) -> tuple[dict[str, dict], NodeRecords, float]:
    """Each generated stream (`sim.streams.Stream`) as a camera of its own at `fps`; returns the truth per camera,
    what the node published and the seconds it took."""
    truth: dict[str, dict] = {}
    records = NodeRecords()
    started = time.perf_counter()
    for stream in streams:
        camera, topic = stream_camera(stream)
        truth.update(camera_truths([stream], start_ns))
        node = InProcessNode(engine, {camera: topic}, overrides, probabilities)
        for k in range(int(stream.duration * fps)):
            stamp_ns = frame_stamp_ns(start_ns, k, fps)
            if node.wants(camera, stamp_ns):  # render only what the buffer keeps: ingest decides again, the same
                node.feed(camera, image_message(stream.render(k / fps, *size), stamp_ns, f"{camera}_camera"))
        records.alerts += node.records.alerts
        records.descriptions += node.records.descriptions
        records.checks += node.records.checks
        records.unfamiliar_checks += node.records.unfamiliar_checks
        records.unfamiliar_descriptions += node.records.unfamiliar_descriptions
        if progress:
            progress(f"{camera}: {stream.duration:.0f} s, {time.perf_counter() - started:.0f} s so far")
    return truth, records, time.perf_counter() - started


def bag_messages(bag: Path) -> Iterator[tuple[str, int, Any]]:
    """(topic, receive time, rclpy message) of a bag in recorded order."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader

    from vila_ros.tools.replay import message_class

    with Reader(Path(bag)) as reader:
        classes = {c.id: message_class(c.msgtype) for c in reader.connections}
        for connection, timestamp, raw in reader.messages():
            yield connection.topic, timestamp, deserialize_message(raw, classes[connection.id])


def run_bags(engine, bags: Iterable[Path], overrides: dict[str, Any] | None = None,
             first_stamp_ns: int = 0) -> tuple[dict, NodeRecords, float]:
    """Recorded bags (with `.truth.json` sidecars) through one in-process node, as `replay-test` runs them;
    `first_stamp_ns`: leave out frames stamped before it (those a node over DDS did not receive)."""
    from vila_ros.tools.scoring import load_truth

    truths = [load_truth(Path(bag)) for bag in bags]
    cameras = {name: spec for truth in truths for name, spec in truth["cameras"].items()}
    node = InProcessNode(engine, {name: spec["topic"] for name, spec in cameras.items()}, overrides)
    by_topic = {spec["topic"]: name for name, spec in cameras.items()}
    started = time.perf_counter()
    messages = sorted((m for bag in bags for m in bag_messages(bag)), key=lambda m: m[1])
    for topic, _, message in messages:
        if topic in by_topic and stamp_to_ns(message.header.stamp) >= first_stamp_ns:
            node.feed(by_topic[topic], message)
    return cameras, node.records, time.perf_counter() - started


def records_from_messages(descriptions: list, alerts: list) -> NodeRecords:
    """What a DDS listener received (`harness.Listener`'s `Received` items) as scoring records."""
    return NodeRecords(
        alerts=[{"camera": r.message.camera, "category": r.message.category, "state": int(r.message.state),
                 "stamp_ns": stamp_to_ns(r.message.header.stamp), "alert_id": r.message.alert_id,
                 "confidence": round(float(r.message.confidence), 4)} for r in alerts],
        descriptions=[{"camera": ",".join(r.message.cameras), "text": r.message.text,
                       "stamps_ns": [stamp_to_ns(s) for s in r.message.frame_stamps]} for r in descriptions])


def score_records(cameras: dict[str, dict], records: NodeRecords, clip_fps: float) -> dict:
    report = {"alerts": score_alerts(cameras, records.alerts, clip_fps),
              "descriptions": score_descriptions(cameras, records.descriptions)}
    report["camera_seconds"] = report["alerts"]["camera_hours"] * 3600
    report["unfamiliar_checks"] = records.unfamiliar_checks
    report["unfamiliar_descriptions"] = records.unfamiliar_descriptions
    return report


def evaluate(model_dir: str = "", precision: str = "fp32", split: str = "stream_test", minutes: float = 32.0,
             overrides: dict[str, Any] | None = None, bags: list[Path] | None = None, out_dir: Path | None = None,
             min_scene: float = 20.0, max_scene: float = 60.0, stream_minutes: float = 4.0,
             progress: Callable[[str], None] | None = None, probabilities: bool = False,
             thresholds: dict[str, float] | None = None, events_per_category: int = 0,
             halvings: int = 0, frame_size: tuple[int, int] = RENDER_SIZE) -> dict:
    """Score the node on a stream split (or on `bags`); with `out_dir`, write stream_eval.json / .md / .png.
    `events_per_category` > 0: the split built per category instead of by `minutes` (``make_streams``);
    `halvings` > 0 (with `probabilities`): the rules of choosing thresholds cross-validated over that many halvings;
    `frame_size` (width, height): the generated streams' camera frames."""
    from vila_ros.resources import resolve_model_dir
    from vila_ros.sim.streams import make_streams

    engine = engine_for(model_dir, precision, overrides)
    # The node reads the thresholds stored with the model it runs (alert_thresholds_file: model).
    node_overrides = {"model_dir": str(resolve_model_dir(model_dir)), **(overrides or {})}
    if bags:
        cameras, records, seconds = run_bags(engine, bags, node_overrides)
    else:
        streams = make_streams(split, minutes, min_scene, max_scene, stream_minutes, events_per_category)
        cameras, records, seconds = run_streams(engine, streams, node_overrides, size=frame_size,
                                                progress=progress, probabilities=probabilities)
    values = node_values(overrides)
    report = score_records(cameras, records, float(values["clip_fps"]))
    report["meta"] = {"model_dir": str(resolve_model_dir(model_dir)), "precision": precision,
                      "source": [str(b) for b in bags] if bags else split,
                      "events_per_category": events_per_category, "overrides": dict(overrides or {}),
                      "frame_size": None if bags else list(frame_size),
                      "num_frames": values["num_frames"] or engine.num_video_frames, "clip_fps": values["clip_fps"],
                      "wall_s": round(seconds, 1),
                      "real_time_factor": round(report["camera_seconds"] / seconds, 2) if seconds else None}
    report["records"] = {"alerts": records.alerts, "descriptions": records.descriptions, "checks": records.checks}
    calibrated = None
    if probabilities:
        from vila_ros.tools import stream_calibration

        _, settings, tracker = node_settings(engine, node_overrides, probabilities=True)
        calibrated = stream_calibration.report(cameras, records.checks, thresholds, tracker, settings.alert_release,
                                               float(values["clip_fps"]), halvings, settings.alert_categories)
        report["probabilities"] = {key: value for key, value in calibrated.items()}
    if out_dir is not None:
        from vila_ros.tools.stream_report import write_report

        write_report(Path(out_dir), report, cameras)
        if calibrated is not None:
            streams = split if not bags else ", ".join(Path(b).name for b in bags)
            source = f"{streams} ({report['camera_seconds'] / 60:.1f} camera-minutes)"
            stream_calibration.write(Path(out_dir), calibrated, source)
    return report


def save_json(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=1))


def photo_runs(engine, paths: Iterable[Path], seconds: float = 20.0, fps: float = CAMERA_FPS,
               overrides: dict[str, Any] | None = None) -> list[dict]:
    """Each image file held in front of a camera for `seconds` (the same frame at `fps`) through the in-process
    node: what it alerts and how it describes a world it was not trained on."""
    import cv2

    runs = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path} is not an image OpenCV can read")
        rgb = cv2.resize(bgr, RENDER_SIZE, interpolation=cv2.INTER_AREA)[:, :, ::-1].copy()
        node = InProcessNode(engine, {"photo": "/cameras/photo/image_raw"}, overrides)
        for k in range(int(seconds * fps)):
            stamp_ns = frame_stamp_ns(DEFAULT_START_NS, k, fps)
            if node.wants("photo", stamp_ns):
                node.feed("photo", image_message(rgb, stamp_ns, "photo_camera"))
        begins = [a for a in node.records.alerts if a["state"] == 0]
        texts = [d["text"] for d in node.records.descriptions]
        runs.append({"photo": str(path), "alert_begins": len(begins),
                     "alert_categories": sorted({a["category"] for a in begins}),
                     "unfamiliar_checks": node.records.unfamiliar_checks,
                     "unfamiliar_descriptions": node.records.unfamiliar_descriptions,
                     "descriptions": len(texts), "most_common_description": max(set(texts), key=texts.count,
                                                                                 default="")})
    return runs
