"""Deterministic, fully populated instances of every vila_ros interface, shared by the tests and their peers."""
from builtin_interfaces.msg import Time

from vila_ros.msg import CornerCaseAlert, SceneDescription
from vila_ros.srv import QueryEvents, QueryScene


def stamp(sec: int, nanosec: int = 0) -> Time:
    return Time(sec=sec, nanosec=nanosec)


def scene_description(index: int = 0) -> SceneDescription:
    msg = SceneDescription()
    msg.header.stamp = stamp(1_700_000_010 + index, 250_000_000)
    msg.header.frame_id = "front_camera_optical"
    msg.cameras = ["front", "left"]
    msg.frame_stamps = [stamp(1_700_000_000 + i, 125_000_000 * (i % 8)) for i in range(8)]
    msg.frame_cameras = ["front"] * 4 + ["left"] * 4
    msg.text = f"A road at night in rain. Two cars and a pedestrian ({index}). Ünïcode ✓"
    msg.model_id = "vila-default@torch/fp32"
    msg.prompt_id = "describe"
    msg.vision_ms = 12.5
    msg.prefill_ms = 30.25
    msg.decode_ms = 101.5
    msg.generated_tokens = 17
    return msg


def corner_case_alert(index: int = 0) -> CornerCaseAlert:
    msg = CornerCaseAlert()
    msg.header.stamp = stamp(1_700_000_020 + index, 5)
    msg.header.frame_id = "front_camera_optical"
    msg.alert_id = f"front/pedestrian_crossing/{index}"
    msg.category = "pedestrian_crossing"
    msg.severity = CornerCaseAlert.CRITICAL
    msg.state = CornerCaseAlert.ONGOING
    msg.text = "A pedestrian steps onto the road."
    msg.confidence = 0.75
    msg.camera = "front"
    msg.evidence_stamps = [stamp(1_700_000_015, 0), stamp(1_700_000_016, 999_999_999)]
    return msg


def query_scene_request() -> QueryScene.Request:
    return QueryScene.Request(question="Is anyone in the aisle?", camera="front", window_seconds=2.5,
                              window_frames=6, max_new_tokens=32)


def query_scene_response(request: QueryScene.Request) -> QueryScene.Response:
    """What the test peer answers: everything derived from the request, so the caller can check both ways."""
    response = QueryScene.Response()
    response.success = True
    response.answer = f"echo: {request.question} [{request.camera}] {request.window_frames} {request.max_new_tokens}"
    response.error_message = ""
    response.frame_stamps = [stamp(1_700_000_000 + i) for i in range(request.window_frames)]
    response.frame_cameras = [request.camera] * request.window_frames
    response.latency_ms = request.window_seconds * 1000.0
    return response


def query_events_request() -> QueryEvents.Request:
    return QueryEvents.Request(start=stamp(1_700_000_000), end=stamp(1_700_000_100), window_seconds=0.0,
                               text_filter="pedestrian", kind="", max_results=3)


def query_events_response(request: QueryEvents.Request) -> QueryEvents.Response:
    response = QueryEvents.Response()
    response.success = True
    response.descriptions = [scene_description(i) for i in range(request.max_results)]
    response.alerts = [corner_case_alert(i) for i in range(request.max_results)]
    response.error_message = f"filter={request.text_filter}"
    return response
