"""The perception node's parameters: declared with descriptions and ranges, read into plain settings."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from vila_ros import tasks
from vila_ros.ros.events import TrackerSettings
from vila_ros.ros.worker import AlertRule, InferenceWorker, WorkerSettings

# Which model to load: fixed while configured, settable while unconfigured, so that after a failed configure an
# operator can point the node at a good checkpoint and configure again without restarting the process.
CONFIGURE_TIME = frozenset({"model_dir", "engine", "precision", "device", "image_resize", "remote_base_url",
                            "remote_model", "remote_api_key_env", "remote_api_key_file", "remote_timeout_s",
                            "remote_max_concurrency"})

# name -> (default, description, (min, max) or None, read_only)
PARAMETERS: dict[str, tuple[object, str, tuple | None, bool]] = {
    "camera_names": (["front"], "Camera names used in messages and queries, one per topic.", None, True),
    "camera_topics": (["/cameras/front/image_raw"],
                      "Image topics, one per camera; a topic ending in /compressed is read as CompressedImage.",
                      None, True),
    "camera_clip_fps": ([0.0], "Per-camera keep rate, parallel to camera_names; 0 or missing = clip_fps.", None,
                        True),
    "image_qos_depth": (5, "Queue depth of the (best-effort, sensor-data) image subscriptions.", (1, 100), True),
    "model_dir": ("", "VILA1.5 checkpoint directory; empty = the embedded default model. Can be set only while "
                  "the node is unconfigured.", None, False),
    "engine": ("torch", "Inference engine: torch, tensorrt_llm or openai (a remote OpenAI-protocol server). Can be "
               "set only while unconfigured.", None, False),
    "remote_base_url": ("http://127.0.0.1:8000/v1", "engine openai: the server's base URL.", None, False),
    "remote_model": ("", "engine openai: the served model's name; empty = the server's first.", None, False),
    "remote_api_key_env": ("OPENAI_API_KEY", "engine openai: environment variable holding the API key (the key is "
                           "never a parameter).", None, False),
    "remote_api_key_file": ("", "engine openai: file holding the API key, when the variable is unset.", None, False),
    "remote_timeout_s": (60.0, "engine openai: seconds before a request counts as failed.", (0.1, 3600.0), False),
    "remote_max_concurrency": (4, "engine openai: requests in flight at most.", (1, 256), False),
    "precision": ("fp32", "fp32, bf16 or int4 (AWQ) for the LLM. Can be set only while unconfigured.", None, False),
    "device": ("cpu", "cpu, cuda or cuda:N. Can be set only while unconfigured.", None, False),
    "image_resize": ("", "Image resize of the model's preprocessing: empty = what the checkpoint's "
                     "preprocessor_config.json names (PIL bicubic for public VILA checkpoints), pil, opencv "
                     "(faster, close) or nearest (point samples). Can be set only while unconfigured.", None, False),
    "num_threads": (0, "torch CPU threads; 0 = torch's default.", (0, 256), True),
    "clip_fps": (tasks.CLIP_FPS, "Rate at which frames are kept per camera (the model's training clip rate).",
                 (0.1, 60.0), True),
    "num_frames": (0, "Frames per description / alert check; 0 = the model's num_video_frames.", (0, 64), True),
    "buffer_seconds": (10.0, "Age bound of each camera's frame buffer.", (0.5, 3600.0), True),
    "buffer_max_frames": (64, "Frame-count bound of each camera's buffer.", (1, 10000), True),
    "buffer_max_megabytes": (256.0, "Memory bound of each camera's buffer (frames + cached features).",
                             (1.0, 65536.0), True),
    "frame_max_side": (448, "Kept frames are downscaled so their longer side is at most this (0 = keep).",
                       (0, 8192), True),
    "describe_period_s": (2.0, "Seconds of camera time between descriptions; 0 disables them.", (0.0, 3600.0), False),
    "describe_prompt": (tasks.DESCRIBE_PROMPT, "Prompt of the periodic descriptions.", None, False),
    "describe_max_new_tokens": (48, "Length bound of a description.", (1, 4096), False),
    "describe_regex_file": ("model", "Text file holding a regular expression every description matches whole "
                            "(constrained decoding: never text outside the model's description grammar). 'model' = "
                            "the description_regex.txt stored with the checkpoint, when it has one and the engine "
                            "can constrain decoding (engine torch); empty = free text.", None, False),
    "alert_period_s": (1.0, "Seconds of camera time between alert checks; 0 disables them.", (0.0, 3600.0), False),
    "alert_prompt": (tasks.ALERT_PROMPT, "Prompt that asks which corner cases happen.", None, False),
    "alert_categories": (list(tasks.CATEGORY_NAMES), "Categories the alert prompt may report; empty = none.",
                         None, False),
    "alert_rule_categories": ([""], "Extra yes/no rules: category names (parallel to alert_rule_questions).",
                              None, False),
    "alert_rule_questions": ([""], "Extra yes/no rules: the questions; a yes raises the category.", None, False),
    "alert_thresholds_file": ("model", "Per-category probability thresholds (JSON; `vila-ros eval-stream "
                              "--probabilities` chooses them on the validation streams): alerts decide on the model's "
                              "probability of each category. 'model' = the alert_thresholds.json stored with the "
                              "checkpoint, when it has one and the engine gives logits (not engine openai); empty = "
                              "decide on the generated answer.", None, False),
    "world_gate_file": ("model", "The model's world gate (safetensors; `vila-ros fit-world-gate` fits it): a window "
                        "whose newest frame's image features lie beyond its threshold from the model's training "
                        "renders is described as an unfamiliar scene and raises no scene alert (lens faults still). "
                        "'model' = the world_gate.safetensors stored with the checkpoint, when it has one and the "
                        "engine gives image features (not engine openai); empty = no gate.", None, False),
    "alert_confirm": (1, "Consecutive detections needed to BEGIN an alert.", (1, 100), False),
    "alert_clear": (2, "Consecutive checks without the category needed to END it.", (1, 100), False),
    "alert_ongoing_period_s": (2.0, "Seconds between ONGOING reports of an active alert.", (0.0, 3600.0), False),
    "alert_cooldown_s": (0.0, "Seconds after END before the same category may BEGIN again.", (0.0, 3600.0), False),
    "query_max_new_tokens": (64, "Default answer length bound of QueryScene.", (1, 4096), False),
    "query_max_new_tokens_limit": (256, "Longest answer a QueryScene request may ask for (max_new_tokens above it "
                                   "is clamped): one request must not hold the model for minutes.", (1, 4096), False),
    "query_max_waiting": (4, "Scene queries that may wait for the model at once; more are refused as busy.",
                          (1, 64), True),
    "query_timeout_s": (60.0, "How long QueryScene waits for the model before failing.", (0.1, 3600.0), False),
    "query_max_question_chars": (8192, "Longer QueryScene questions are refused at once (tokenizing megabytes "
                                 "would hold up the model thread).", (1, 1000000), False),
    "service_qos_depth": (100, "Request/response queue depth of the query services. Fast DDS drops the oldest "
                          "requests of a burst larger than this, so it must exceed the concurrent calls expected.",
                          (10, 100000), True),
    "retry_backoff_initial_s": (1.0, "Wait before retrying a failed description / alert check of a camera; "
                                "doubled after each further failure in a row.", (0.01, 3600.0), False),
    "retry_backoff_max_s": (30.0, "Longest wait between retries of a failing job.", (0.01, 86400.0), False),
    "description_topic": ("~/description", "SceneDescription output (plus <topic>_text as std_msgs/String).",
                          None, True),
    "alert_topic": ("~/alerts", "CornerCaseAlert output (reliable, transient local).", None, True),
    "alert_history_depth": (100, "Alerts a late-joining subscriber still receives (transient local depth).",
                            (1, 100000), True),
    "annotated_image_topic": ("~/annotated_image", "Latest frame with description and active alerts drawn; "
                              "empty = off.", None, True),
    "event_log_path": ("$ROS_HOME/vila_ros/alerts.jsonl", "Every alert appended as a JSON line; empty = off. "
                       "$ROS_HOME is the ROS_HOME environment variable, or ~/.ros without it. A restarted node "
                       "continues its alert ids from this log and ENDs the alerts it left open.", None, True),
    "stamp_max_future_s": (10.0, "Frames stamped further ahead of the node's clock than this are dropped and "
                           "counted (future_stamps on /diagnostics); 0 = no bound.", (0.0, 1.0e9), True),
    "diagnostics_window_s": (10.0, "A camera's /diagnostics level reflects the frames of this many seconds: it "
                             "returns to OK once no frame has been dropped for that long.", (0.5, 3600.0), True),
    "stale_after_s": (2.0, "A camera silent this long (wall time) is reported stale (diagnostics + sensor_stale "
                      "alert); 0 = off.", (0.0, 3600.0), True),
    "history_size": (1000, "Descriptions and alerts kept per kind for QueryEvents.", (1, 1000000), True),
    "diagnostics_period_s": (1.0, "Period of /diagnostics.", (0.1, 60.0), True),
    "autostart": (True, "Configure and activate on start (no lifecycle manager needed).", None, True),
}


def declare_parameters(node: Node) -> None:
    for name, (default, description, bounds, read_only) in PARAMETERS.items():
        descriptor = ParameterDescriptor(description=description, read_only=read_only)
        if bounds is not None and isinstance(default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(bounds[0]),
                                                                  to_value=float(bounds[1]))]
        elif bounds is not None and isinstance(default, int):
            descriptor.integer_range = [IntegerRange(from_value=bounds[0], to_value=bounds[1], step=1)]
        node.declare_parameter(name, default, descriptor)


def value(node: Node, name: str):
    return node.get_parameter(name).value


def resolve_log_path(text: str) -> str:
    """`event_log_path` with a leading $ROS_HOME (or ${ROS_HOME}) replaced as ROS itself does (the ROS_HOME
    environment variable, else ~/.ros) and ~ expanded; "" stays "" (off)."""
    if not text:
        return ""
    for variable in ("${ROS_HOME}", "$ROS_HOME"):
        if text.startswith(variable):
            text = (os.environ.get("ROS_HOME") or "~/.ros") + text[len(variable):]
            break
    return os.path.expanduser(text)


# What rclpy's type names mean to someone typing `ros2 param set` (it says "expected 'Type.DOUBLE' got ...").
_TYPE_WORDS = {1: "a bool (true or false)", 2: "an integer (e.g. 2)", 3: "a double (with a decimal point, e.g. 1.0)",
               4: "a string", 5: "a byte array", 6: "a bool array", 7: "an integer array (e.g. [1, 2])",
               8: "a double array (e.g. [1.0, 2.0])", 9: "a string array (e.g. [a, b])", 0: "not set"}


def explain_refusal(node: Node, changed: list, reason: str) -> str:
    """rclpy's own refusal `reason` (wrong type, read-only) of setting `changed`, said with the parameter's name,
    the type it needs and what it is for."""
    for parameter in changed:
        if not node.has_parameter(parameter.name):
            continue
        descriptor = node.describe_parameter(parameter.name)
        if reason.startswith("Trying to set a read-only") and descriptor.read_only:
            return (f"{parameter.name} is read only while the node runs: set it at start (-p {parameter.name}:=... "
                    f"or the parameters file). {descriptor.description} (rclpy: {reason})")
        if reason.startswith("Wrong parameter type") and parameter.type_.value != descriptor.type:
            return (f"{parameter.name} must be {_TYPE_WORDS.get(descriptor.type, descriptor.type)}, got "
                    f"{_TYPE_WORDS.get(parameter.type_.value, parameter.type_.value)} {parameter.value!r}. "
                    f"{descriptor.description} (rclpy: {reason})")
    return reason


@dataclass(frozen=True)
class CameraSpec:
    name: str
    topic: str
    compressed: bool
    clip_fps: float


def camera_specs(node: Node) -> list[CameraSpec]:
    names, topics = list(value(node, "camera_names")), list(value(node, "camera_topics"))
    if len(names) != len(topics) or not names:
        raise ValueError(f"camera_names ({len(names)}) and camera_topics ({len(topics)}) must be non-empty lists "
                         "of the same length")
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        raise ValueError(f"camera names must be unique and non-empty: {names}")
    rates = [float(r) for r in value(node, "camera_clip_fps")]
    if any(r < 0 or r > 60 for r in rates):
        raise ValueError(f"camera_clip_fps must be within 0..60: {rates}")
    rates += [0.0] * (len(names) - len(rates))
    default = value(node, "clip_fps")
    return [CameraSpec(n, t, t.rstrip("/").endswith("/compressed"), r or default)
            for n, t, r in zip(names, topics, rates)]


def _getter(node: Node, overrides: dict | None):
    def get(name):
        return overrides[name] if overrides and name in overrides else value(node, name)
    return get


def tracker_settings(node: Node, overrides: dict | None = None) -> TrackerSettings:
    """How detections become events (TrackerSettings validates them); `overrides` as in `worker_settings`."""
    get = _getter(node, overrides)
    return TrackerSettings(confirm=get("alert_confirm"), clear=get("alert_clear"),
                           ongoing_period_s=get("alert_ongoing_period_s"), cooldown_s=get("alert_cooldown_s"))


def _decision_file(source: str, model_dir: str, name: str, engine_uses_it: bool) -> Path | None:
    """The file a `*_file` parameter names: None when it is empty, or when it is 'model' and the engine cannot use
    the file or the checkpoint stores none (`name` beside its weights)."""
    if not source:
        return None
    if source != "model":
        return Path(source).expanduser()
    if not engine_uses_it:
        return None
    from vila_ros.resources import resolve_model_dir

    path = resolve_model_dir(model_dir) / name
    return path if path.is_file() else None


def alert_thresholds(source: str, model_dir: str, engine: Any = None) -> tuple[tuple[str, float], ...]:
    """The thresholds `alert_thresholds_file` names; () = alerts decide on the generated answer."""
    import json

    from vila_ros.resources import ALERT_THRESHOLDS_FILE

    # Probabilities come from the answer tokens' logits: an engine without the torch engine's steps (a remote
    # server) cannot give them, and a checkpoint without stored thresholds has none to use.
    logits = engine is not None and all(hasattr(engine, step) for step in ("embed_prompt", "prefill", "decode_step"))
    path = _decision_file(source, model_dir, ALERT_THRESHOLDS_FILE, logits)
    if path is None:
        return ()
    try:
        loaded = json.loads(path.read_text())
        thresholds = tuple((str(c), float(t)) for c, t in loaded.items())
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"alert_thresholds_file {path}: {error}") from None
    bad = [f"{c}={t}" for c, t in thresholds if c not in tasks.CATEGORIES or not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f"alert_thresholds_file {path}: not a known category with a threshold in [0, 1]: "
                         f"{', '.join(bad)}")
    return thresholds


def world_gate(source: str, model_dir: str, engine: Any = None) -> Any:
    """The `WorldGate` `world_gate_file` names, None for none."""
    from vila_ros.resources import WORLD_GATE_FILE

    # The gate reads the engine's per-frame image features: a remote server gives none.
    features = engine is not None and hasattr(engine, "encode_frames") and hasattr(engine, "embed_prompt")
    path = _decision_file(source, model_dir, WORLD_GATE_FILE, features)
    if path is None:
        return None
    from vila_ros.model.world_gate import WorldGate

    try:
        return WorldGate.load(path)
    except ValueError as error:
        raise ValueError(f"world_gate_file: {error}") from None


def describe_regex(source: str, model_dir: str, engine: Any = None) -> str:
    """The expression `describe_regex_file` names, checked against the engine's vocabulary; "" = free text."""
    from vila_ros.resources import DESCRIPTION_REGEX_FILE

    # A remote server or TensorRT-LLM engine cannot constrain decoding: its descriptions stay free text.
    constrains = engine is not None and hasattr(engine, "check_output_regex")
    path = _decision_file(source, model_dir, DESCRIPTION_REGEX_FILE, constrains)
    if path is None:
        return ""
    from vila_ros.engine.json_schema import read_regex_file

    try:
        regex = read_regex_file(path)
    except ValueError as error:
        raise ValueError(f"describe_regex_file: {error}") from None
    if not regex:
        raise ValueError(f"describe_regex_file {path} is empty (describe_regex_file:='' for free text)")
    if engine is not None:
        if not hasattr(engine, "check_output_regex"):
            raise ValueError(f"describe_regex_file {path}: this engine cannot constrain decoding (engine torch can); "
                             "describe_regex_file:='' for free text")
        try:
            engine.check_output_regex(regex)
        except ValueError as error:  # RequestError: the reason the expression is refused
            raise ValueError(f"describe_regex_file {path}: {error}") from None
    return regex


def worker_settings(node: Node, model_frames: int, overrides: dict | None = None,
                    engine: Any = None) -> WorkerSettings:
    """Settings from the current parameters; `overrides` holds values of a change being validated; `engine`: the
    node's (whether it can give probabilities), None before configure."""
    get = _getter(node, overrides)

    categories = tuple(c for c in get("alert_categories") if c)
    unknown = [c for c in categories if c not in tasks.CATEGORIES]
    if unknown:
        raise ValueError(f"unknown alert categories {unknown}; known: {', '.join(tasks.CATEGORY_NAMES)}")
    rule_categories = [c for c in get("alert_rule_categories")]
    rule_questions = [q for q in get("alert_rule_questions")]
    if len(rule_categories) != len(rule_questions):
        raise ValueError("alert_rule_categories and alert_rule_questions must have the same length")
    rules = tuple(AlertRule(c.strip(), q.strip()) for c, q in zip(rule_categories, rule_questions)
                  if c.strip() and q.strip())
    limit = get("query_max_question_chars")
    prompts = {"describe_prompt": get("describe_prompt"), "alert_prompt": get("alert_prompt"),
               **{f"alert_rule_questions[{i}]": rule.question for i, rule in enumerate(rules)}}
    for name, text in prompts.items():
        if len(text) > limit:  # the same bound as a query: a prompt that long would fail every periodic job
            raise ValueError(f"{name} is {len(text)} characters, at most {limit} (query_max_question_chars)")
    num_frames = get("num_frames") or model_frames
    thresholds = alert_thresholds(get("alert_thresholds_file"), get("model_dir"), engine)
    regex = describe_regex(get("describe_regex_file"), get("model_dir"), engine)
    gate = world_gate(get("world_gate_file"), get("model_dir"), engine)
    if get("retry_backoff_max_s") < get("retry_backoff_initial_s"):
        raise ValueError(f"retry_backoff_max_s ({get('retry_backoff_max_s')}) must be at least "
                         f"retry_backoff_initial_s ({get('retry_backoff_initial_s')})")
    return WorkerSettings(
        num_frames=num_frames, min_frames=num_frames,
        describe_period_s=get("describe_period_s"), describe_prompt=get("describe_prompt"),
        describe_max_new_tokens=get("describe_max_new_tokens"), describe_regex=regex,
        alert_period_s=get("alert_period_s"), alert_prompt=get("alert_prompt"), alert_categories=categories,
        alert_rules=rules, alert_thresholds=thresholds, world_gate=gate,
        query_max_new_tokens=get("query_max_new_tokens"), query_max_new_tokens_limit=get("query_max_new_tokens_limit"),
        backoff_initial_s=get("retry_backoff_initial_s"), backoff_max_s=get("retry_backoff_max_s"),
    )


def load_engine(node: Node):
    """The engine the parameters name (model_dir, engine, precision, device, num_threads)."""
    from vila_ros.engine import create_engine
    from vila_ros.resources import resolve_model_dir

    threads = value(node, "num_threads")
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    if value(node, "engine") == "openai":
        return create_engine("", engine="openai", remote={
            "base_url": value(node, "remote_base_url"), "model": value(node, "remote_model"),
            "api_key_env": value(node, "remote_api_key_env"), "api_key_file": value(node, "remote_api_key_file"),
            "timeout_s": value(node, "remote_timeout_s"), "max_concurrency": value(node, "remote_max_concurrency")})
    return create_engine(resolve_model_dir(value(node, "model_dir")), engine=value(node, "engine"),
                         precision=value(node, "precision"), device=value(node, "device"),
                         resize=value(node, "image_resize") or None)


def apply_change(node: Node, worker: InferenceWorker | None, engine: Any, changed: list) -> str:
    """Check a live parameter change (`changed`: the rclpy Parameters about to be set) and, when valid, hand the new
    settings to the worker and its tracker (`engine`: the node's, for its frame count). Returns why the change is
    refused, or "" when it is accepted."""
    overrides = {p.name: p.value for p in changed}
    configured = worker is not None and engine is not None
    frozen = sorted(CONFIGURE_TIME & overrides.keys())
    if frozen and configured:
        return f"{', '.join(frozen)} can be set only while the node is unconfigured (deactivate and clean up first)"
    # The same checks in every lifecycle state: a value refused while active is refused while unconfigured too,
    # instead of making the next configure fail.
    try:
        settings = worker_settings(node, engine.num_video_frames if configured else 1, overrides,
                                   engine if configured else None)
        tracker = tracker_settings(node, overrides)
    except ValueError as error:
        return str(error)
    if configured:
        worker.settings, worker.tracker.settings = settings, tracker
    return ""
