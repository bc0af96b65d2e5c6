"""Everything the node says on /diagnostics, assembled here: one status per camera, the inference status, description
latency, container sizes, or (without a model) why the node is unconfigured.

An operator reading `ros2 topic echo /diagnostics` (or rqt_robot_monitor) must see why the node is not working
without its log: the configure error names the file and the problem; a failing model shows its streak, back-off
and last error per camera and job; a container that keeps growing shows as a leak.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from vila_ros.ros.camera import Camera
from vila_ros.ros.node_stats import NodeStats
from vila_ros.ros.outputs import EventLog
from vila_ros.ros.retry import JobHealth, JobKey
from vila_ros.ros.worker import InferenceWorker

JOB_KINDS = ("alerts", "describe")
# Said at start (log) and on /diagnostics while the embedded default model runs: a real camera's view is none it
# knows (its world gate calls the photographs tried "An unfamiliar scene.", a view near enough to its renders would
# be described as one), and nothing else would tell the user why.
EMBEDDED_MODEL_NOTE = ("the embedded default model knows only the simulated road and warehouse worlds of this "
                       "package; real cameras need a real VILA checkpoint (set model_dir)")
NODE_STATUS_NAME = "node"


def status_prefix(fully_qualified_node_name: str) -> str:
    """What every /diagnostics status name of a node starts with, before ": " (diagnostic_updater's convention):
    two perception nodes in one system, e.g. in two namespaces, must not publish the same names."""
    return fully_qualified_node_name.lstrip("/")


def local_status_name(status_name: str, fully_qualified_node_name: str) -> str | None:
    """"camera front" for "vila_perception: camera front" of that node; None for another node's status."""
    prefix = status_prefix(fully_qualified_node_name) + ": "
    return status_name[len(prefix):] if status_name.startswith(prefix) else None


def key_values(**values: object) -> list[KeyValue]:
    return [KeyValue(key=key, value=str(value)) for key, value in values.items()]


@dataclass
class NodeView:
    """What the statuses are made of, read once per publication (lifecycle transitions may swap any of it)."""

    node_name: str  # fully qualified
    cameras: Sequence[Camera]
    worker: InferenceWorker | None
    model_id: str
    event_log: EventLog | None
    stats: NodeStats | None
    configure_error: str
    model_dir: str
    silent_since: float | None  # monotonic time silence counts from, while stale cameras are watched; else None
    now: float  # time.monotonic()
    window_s: float  # what "recent" means for a camera's level
    containers: dict[str, Any]  # objects whose container attributes are sized in "queues"


def statuses(view: NodeView) -> list[DiagnosticStatus]:
    """All statuses of the node, named "<node>: <status>"."""
    result = [] if view.worker is not None else [unconfigured_status(view.configure_error, view.model_dir)]
    health = view.worker.job_health() if view.worker is not None else {}
    result += [camera_status(camera, view, health) for camera in view.cameras]
    if view.worker is not None:
        result.append(inference_status(view, health))
        if view.stats is not None:
            result += stats_statuses(view)
    prefix = status_prefix(view.node_name)
    for status in result:
        status.name = f"{prefix}: {status.name}"
    return result


def unconfigured_status(configure_error: str, model_dir: str) -> DiagnosticStatus:
    """Published instead of the camera and inference statuses while the node has no model."""
    status = DiagnosticStatus(name=NODE_STATUS_NAME, hardware_id=model_dir or "embedded default model")
    note = {} if model_dir else {"model_note": EMBEDDED_MODEL_NOTE}
    if configure_error:
        status.level = DiagnosticStatus.ERROR
        status.message = f"unconfigured: configuration failed: {configure_error}"
    else:
        status.level, status.message = DiagnosticStatus.WARN, "unconfigured"
    status.values = key_values(state="unconfigured", model_dir=model_dir, configure_error=configure_error, **note)
    return status


def camera_status(camera: Camera, view: NodeView, health: dict[JobKey, JobHealth]) -> DiagnosticStatus:
    buffer, stats = camera.buffer, camera.buffer.stats
    silent = camera.silent_s(view.now, view.silent_since) if view.silent_since is not None else -1.0
    status = DiagnosticStatus(name=f"camera {camera.name}", hardware_id=camera.name)
    recent = stats.recent_errors(view.now, view.window_s)
    if camera.stale_alert_id is not None:
        status.level, status.message = DiagnosticStatus.WARN, f"stale: no frames for {max(0.0, silent):.1f} s"
    elif stats.kept == 0:
        status.level, status.message = DiagnosticStatus.WARN, "no frames received"
    elif recent:  # judged on a window: a camera whose frames are good again is OK again
        status.level = DiagnosticStatus.WARN
        status.message = f"{recent} frames dropped in the last {view.window_s:g} s: {stats.last_error}"
    else:
        status.level, status.message = DiagnosticStatus.OK, "receiving"
    status.values = key_values(received=stats.received, kept=stats.kept, skipped_rate=stats.skipped_rate,
                               skipped_out_of_order=stats.skipped_out_of_order, decode_errors=stats.decode_errors,
                               bad_stamps=stats.bad_stamps, future_stamps=stats.future_stamps,
                               recently_dropped=recent, last_error=stats.last_error,
                               time_resets=stats.time_resets, buffered_frames=len(buffer), buffered_bytes=buffer.nbytes,
                               seconds_since_last_frame=round(silent, 2))
    status.values += camera_job_values(camera.name, health)
    if view.stats is not None:
        status.values += key_values(**view.stats.camera_values(camera.name))
    return status


def camera_job_values(camera: str, health: dict[JobKey, JobHealth]) -> list[KeyValue]:
    values: dict[str, object] = {}
    for kind in JOB_KINDS:
        job = health.get((camera, kind), JobHealth())
        values[f"{kind}_failures"] = job.failures
        values[f"{kind}_consecutive_failures"] = job.consecutive_failures
        values[f"{kind}_backoff_s"] = round(job.backoff_s, 3)
    return key_values(**values)


def inference_status(view: NodeView, health: dict[JobKey, JobHealth]) -> DiagnosticStatus:
    stats, log = view.worker.stats, view.event_log
    status = DiagnosticStatus(name="inference", hardware_id=view.model_id)
    status.level, status.message, fault_values = inference_fault(health, stats.failures, stats.last_error, view.now)
    status.values = key_values(model=view.model_id, descriptions=stats.descriptions, alert_checks=stats.alert_checks,
                               queries=stats.queries, failures=stats.failures,
                               last_latency_ms=round(stats.last_latency_ms, 1), busy_seconds=round(stats.busy_s, 2),
                               event_log_written=log.written if log else 0,
                               event_log_errors=log.errors if log else 0) + fault_values
    if log is not None and log.errors and status.level == DiagnosticStatus.OK:
        status.level, status.message = DiagnosticStatus.WARN, f"event log: {log.last_error}"
    if not view.model_dir:
        status.values += key_values(model_note=EMBEDDED_MODEL_NOTE)
        status.message += " (embedded simulator-only model: real cameras need model_dir)"
    return status


def inference_fault(health: dict[JobKey, JobHealth], failures: int, last_error: str,
                    now: float) -> tuple[int, str, list[KeyValue]]:
    """(level, message, values) of the inference status: ERROR while a job is failing, WARN once recovered."""
    failing = {key: job for key, job in health.items() if job.consecutive_failures}
    values = key_values(consecutive_failures=max((j.consecutive_failures for j in failing.values()), default=0),
                        failing_jobs=",".join(f"{camera}/{kind}" for camera, kind in sorted(failing)),
                        backoff_s=round(max((j.backoff_s for j in failing.values()), default=0.0), 3),
                        retry_in_s=round(min((max(0.0, j.retry_at - now) for j in failing.values()), default=0.0), 3),
                        last_error=last_error)
    if failing:
        (camera, kind), job = max(failing.items(), key=lambda item: item[1].consecutive_failures)
        message = (f"failing: {kind} on {camera}, {job.consecutive_failures} in a row, retrying every "
                   f"{job.backoff_s:g} s: {job.last_error}")
        return DiagnosticStatus.ERROR, message, values
    if failures:
        return DiagnosticStatus.WARN, f"running; last failure: {last_error}", values
    return DiagnosticStatus.OK, "running", values


def stats_statuses(view: NodeView) -> list[DiagnosticStatus]:
    """Description latency minus model time, and the size of every container (one that keeps growing leaks)."""
    latency = DiagnosticStatus(name="description latency", level=DiagnosticStatus.OK,
                               message="ms since activation, from receipt of the newest frame to publication")
    latency.values = key_values(**view.stats.description_values())
    sizes = container_sizes(view.containers)
    for camera in view.cameras:
        buffer, name = camera.buffer, camera.name
        sizes.update({f"buffer.{name}.frames": len(buffer), f"buffer.{name}.frames.bound": buffer.max_frames,
                      f"buffer.{name}.bytes": buffer.nbytes, f"buffer.{name}.bytes.bound": buffer.max_bytes})
    queues = DiagnosticStatus(name="queues", level=DiagnosticStatus.OK,
                              message="sizes of containers that could grow; process memory")
    queues.values = key_values(**sizes, rss_bytes=process_rss_bytes(), threads=threading.active_count())
    return [latency, queues]


def container_sizes(objects: dict[str, Any]) -> dict[str, int]:
    """Length of every container attribute of `objects` (one level deep, plus dicts of containers); bounded
    ones also report their bound as `<name>.bound`."""
    sizes: dict[str, int] = {}
    for prefix, obj in objects.items():
        if obj is None:
            continue
        for name, value in sorted(vars(obj).items()):
            _size_of(f"{prefix}.{name.lstrip('_')}", value, sizes)
            if isinstance(value, dict) and 0 < len(value) <= 16:
                for key, inner in value.items():
                    if isinstance(key, str):
                        _size_of(f"{prefix}.{name.lstrip('_')}.{key}", inner, sizes)
    return sizes


def _size_of(name: str, value: Any, sizes: dict[str, int]) -> None:
    if isinstance(value, queue.Queue):
        sizes[name] = value.qsize()
        if value.maxsize > 0:
            sizes[f"{name}.bound"] = value.maxsize
    elif isinstance(value, (dict, list, set, deque)):
        sizes[name] = len(value)
        if isinstance(value, deque) and value.maxlen is not None:
            sizes[f"{name}.bound"] = value.maxlen


def process_rss_bytes() -> int | None:
    """Resident memory of this process (Linux, Jetson); None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def node_view(node: Any) -> NodeView:
    """The view of a PerceptionNode (read once: lifecycle transitions may swap its parts meanwhile)."""
    from vila_ros.ros import parameters

    engine, worker = node.engine, node.worker
    return NodeView(
        node_name=node.get_fully_qualified_name(), cameras=list(node.cameras.values()), worker=worker,
        model_id=engine.model_id if engine is not None else "", event_log=node.event_log, stats=node.node_stats,
        configure_error=node.configure_error, model_dir=parameters.value(node, "model_dir"),
        silent_since=node.stale.since if node.stale_watched else None, now=time.monotonic(),
        window_s=parameters.value(node, "diagnostics_window_s"),
        containers={"node": node, "worker": worker, "tracker": worker.tracker if worker else None,
                    "history": node.history, "overlay": node.overlay, "engine": getattr(engine, "inner", engine),
                    "stats": node.node_stats})
