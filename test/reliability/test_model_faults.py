"""Broken checkpoints and a model that outputs NaN, in a real node process, over DDS: the node stays alive, says
why on /diagnostics and in its answers, backs off, and takes a good checkpoint without a restart.

"""
import json
import shutil
import time

from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import Transition

from vila_ros.tools.drivers import CameraFeed, Operator
from vila_ros.tools.harness import Diagnostics, isolated_node, running_node

PARAMS = {"camera_names": "[front]", "camera_topics": "[/cameras/front/image_raw]", "describe_period_s": "1.0",
          "alert_period_s": "1.0"}


def _broken_checkpoints(good, root):
    broken = {}
    truncated = root / "truncated"
    shutil.copytree(good, truncated)
    weights = truncated / "vision_tower" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    broken["truncated"] = (truncated, "CorruptCheckpointError")
    pickled = root / "pickle_only"
    shutil.copytree(good, pickled)
    (pickled / "mm_projector" / "model.safetensors").unlink()
    (pickled / "mm_projector" / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    broken["pickle"] = (pickled, "PickleRefusedError")
    shapes = root / "wrong_shapes"
    shutil.copytree(good, shapes)
    config = json.loads((shapes / "llm" / "config.json").read_text())
    config["intermediate_size"] += 8
    (shapes / "llm" / "config.json").write_text(json.dumps(config))
    top = json.loads((shapes / "config.json").read_text())
    top["llm_cfg"]["intermediate_size"] = config["intermediate_size"]
    (shapes / "config.json").write_text(json.dumps(top))
    broken["shapes"] = (shapes, "ShapeMismatchError")
    broken["missing"] = (root / "does_not_exist", "does not exist")
    return broken


def test_broken_checkpoints_leave_the_node_unconfigured_saying_why_until_a_good_one_is_set(tiny_dir, tmp_path):
    broken = _broken_checkpoints(tiny_dir, tmp_path)
    first, first_error = broken.pop("missing")
    params = {**PARAMS, "model_dir": str(first)}
    with running_node(tmp_path / "node", params, wait_ready=False, name="vila_broken") as (process, listener, log):
        diagnostics = Diagnostics(listener)
        with isolated_node("vila_ros_test_fault_operator") as node:
            operator = Operator(node, "/vila_broken")
            status = diagnostics.wait_for("node", lambda v, s: v.get("configure_error"), 60)
            assert status is not None, log.read_text()[-2000:]
            assert first_error in status[1]["configure_error"] and str(first) in status[1]["configure_error"]
            assert status[2].level == DiagnosticStatus.ERROR
            assert operator.state() == "unconfigured"
            response = operator.ask()
            assert not response.success and "configuration failed" in response.error_message
            for name, (directory, error) in broken.items():
                assert operator.set("model_dir", str(directory)).successful
                since = time.monotonic()
                assert not operator.transition(Transition.TRANSITION_CONFIGURE), name
                status = diagnostics.wait_for("node", lambda v, s: error in v.get("configure_error", ""),
                                              10, since)
                assert status is not None, (name, log.read_text()[-2000:])
                assert operator.state() == "unconfigured" and process.poll() is None
            assert operator.set("model_dir", str(tiny_dir)).successful
            assert operator.transition(Transition.TRANSITION_CONFIGURE)
            assert operator.transition(Transition.TRANSITION_ACTIVATE)
            feed = CameraFeed()
            try:
                assert operator.answers_within(30), log.read_text()[-2000:]
            finally:
                feed.close()
    text = log.read_text()
    for _, error in broken.values():
        assert error in text


def test_a_model_that_outputs_nan_is_reported_and_retried_and_the_node_lives(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    nan_dir = tmp_path / "nan_model"
    shutil.copytree(tiny_dir, nan_dir)
    for shard in (nan_dir / "llm").glob("*.safetensors"):
        tensors = load_file(str(shard))
        if "lm_head.weight" in tensors:
            tensors["lm_head.weight"][:] = float("nan")
            save_file(tensors, str(shard), metadata={"format": "pt"})
    params = {**PARAMS, "model_dir": str(nan_dir), "alert_period_s": "0.2", "retry_backoff_initial_s": "0.2",
              "retry_backoff_max_s": "0.8"}
    with running_node(tmp_path / "node", params, allow_tracebacks=True, name="vila_nan") as (process, listener, log):
        diagnostics = Diagnostics(listener)
        feed = CameraFeed()
        try:
            failing = diagnostics.wait_for(
                "inference", lambda v, s: int(v.get("consecutive_failures", 0)) >= 3, 60)
            assert failing is not None, log.read_text()[-3000:]
            values, status = failing[1], failing[2]
            assert status.level == DiagnosticStatus.ERROR and "NonFiniteOutputError" in values["last_error"]
            assert 0.2 <= float(values["backoff_s"]) <= 0.8 and "front/" in values["failing_jobs"]
            with isolated_node("vila_ros_test_nan_operator") as node:
                response = Operator(node, "/vila_nan").ask(max_new_tokens=2)
            assert not response.success and "NonFiniteOutputError" in response.error_message
            # Backing off: far fewer attempts than the 5 per second an alert period of 0.2 s would make.
            time.sleep(3.0)
            late = diagnostics.values("inference")[-1][1]
            assert int(late["failures"]) < 5 * 8 and float(late["backoff_s"]) == 0.8
            assert process.poll() is None
        finally:
            feed.close()
    text = log.read_text()
    # the first failure of each job's streak (alerts, describe) and the failed query: not one per retry
    assert text.count("Traceback") <= 3
