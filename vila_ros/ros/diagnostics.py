"""What /diagnostics says about faults: a configure that failed, and periodic jobs failing and backing off.

An operator reading `ros2 topic echo /diagnostics` (or rqt_robot_monitor) must see why the node is not working
without its log: the configure error names the file and the problem; a failing model shows its streak, back-off
and last error per camera and job.
"""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from vila_ros.ros.retry import JobHealth, JobKey

JOB_KINDS = ("alerts", "describe")
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


def unconfigured_status(configure_error: str, model_dir: str) -> DiagnosticStatus:
    """Published instead of the camera and inference statuses while the node has no model."""
    status = DiagnosticStatus(name=NODE_STATUS_NAME, hardware_id=model_dir or "embedded default model")
    if configure_error:
        status.level = DiagnosticStatus.ERROR
        status.message = f"unconfigured: configuration failed: {configure_error}"
    else:
        status.level, status.message = DiagnosticStatus.WARN, "unconfigured"
    status.values = key_values(state="unconfigured", model_dir=model_dir, configure_error=configure_error)
    return status


def camera_job_values(camera: str, health: dict[JobKey, JobHealth]) -> list[KeyValue]:
    values: dict[str, object] = {}
    for kind in JOB_KINDS:
        job = health.get((camera, kind), JobHealth())
        values[f"{kind}_failures"] = job.failures
        values[f"{kind}_consecutive_failures"] = job.consecutive_failures
        values[f"{kind}_backoff_s"] = round(job.backoff_s, 3)
    return key_values(**values)


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
