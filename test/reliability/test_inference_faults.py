"""A model that produces NaN: the real torch engine on a real checkpoint whose weights are corrupted in place
(and later repaired), driven through the real inference worker. Failures are reported, retried with back-off,
never crash the thread, and a repaired model is recovered from without a restart."""
import time

import numpy as np
import pytest
import torch

from vila_ros.engine import NonFiniteOutputError, create_engine
from vila_ros.ros.frame_buffer import CameraBuffer, Frame
from vila_ros.ros.retry import RetryTracker, backoff_seconds
from vila_ros.ros.worker import InferenceWorker, QueryError, SceneQuery, WorkerSettings

S = 1_000_000_000


def test_backoff_doubles_to_its_cap_and_never_overflows():
    assert [backoff_seconds(n, 0.5, 3.0) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff_seconds(10_000, 1.0, 30.0) == 30.0
    tracker = RetryTracker()
    key = ("front", "alerts")
    assert tracker.may_run(key, 0.0) and not tracker.is_retry(key)
    health = tracker.failed(key, "boom", now=100.0, initial_s=1.0, maximum_s=4.0)
    assert (health.consecutive_failures, health.backoff_s, health.retry_at) == (1, 1.0, 101.0)
    assert not tracker.may_run(key, 100.5) and tracker.may_run(key, 101.0) and tracker.is_retry(key)
    assert tracker.next_retry_at() == 101.0
    tracker.failed(key, "boom", now=101.0, initial_s=1.0, maximum_s=4.0)
    assert tracker.snapshot()[key].backoff_s == 2.0
    assert tracker.succeeded(key) == 2 and tracker.next_retry_at() is None and not tracker.is_retry(key)
    assert tracker.snapshot()[key].failures == 2  # the total stays for diagnostics


@pytest.fixture()
def engine(tiny_dir):
    return create_engine(tiny_dir)


def _buffer_with_frames(engine, count=8):
    buffer = CameraBuffer("front", keep_interval_s=0.0, max_age_s=3600.0, max_frames=64, max_bytes=1 << 28)
    size = engine.model.config.image_size
    rng = np.random.default_rng(0)
    for k in range(count):
        buffer.add(Frame("front", 1_700_000_000 * S + k * S // 4, "cam", rng.integers(0, 256, (size, size, 3),
                                                                                     dtype=np.uint8)))
    return buffer


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_nan_logits_are_an_error_not_a_stream_of_token_zero(engine):
    frame = np.zeros((engine.model.config.image_size,) * 2 + (3,), np.uint8)
    lm_head = engine.model.llm.lm_head.weight
    with torch.no_grad():
        lm_head[5, 0] = float("nan")
    with pytest.raises(NonFiniteOutputError, match="non-finite logits .* at prefill"):
        engine.generate("Describe the scene.", engine.encode_frames([frame]))


def test_failing_jobs_back_off_then_recover_when_the_model_is_repaired(engine):
    buffer = _buffer_with_frames(engine)
    settings = WorkerSettings(num_frames=4, min_frames=4, describe_period_s=0.0, alert_period_s=0.25,
                              backoff_initial_s=0.05, backoff_max_s=0.2)
    alerts = []
    worker = InferenceWorker(engine, {"front": buffer}, settings, lambda d: None, alerts.append)
    weight = engine.model.llm.lm_head.weight
    good = weight.detach().clone()
    with torch.no_grad():
        weight.fill_(float("nan"))
    worker.start()
    try:
        # No new frames arrive: only retries run the job again, each after a longer wait, capped.
        assert _wait(lambda: worker.job_health().get(("front", "alerts")) is not None
                     and worker.job_health()[("front", "alerts")].consecutive_failures >= 4, 10)
        health = worker.job_health()[("front", "alerts")]
        assert health.backoff_s == 0.2 and "NonFiniteOutputError" in health.last_error
        assert worker.stats.failures >= 4 and "non-finite logits" in worker.stats.last_error
        # A query meanwhile is answered with the error (its caller is waiting), and the thread lives on.
        failed = worker.submit_query(SceneQuery("Is there a car?", max_new_tokens=2))
        with pytest.raises(NonFiniteOutputError):
            failed.result(timeout=10)
        with torch.no_grad():
            weight.copy_(good)
        assert _wait(lambda: worker.job_health()[("front", "alerts")].consecutive_failures == 0, 5)
        assert worker.stats.alert_checks >= 1
        answer = worker.submit_query(SceneQuery("Is there a car?", max_new_tokens=2)).result(timeout=10)
        assert len(answer.frames) >= 1
    finally:
        worker.stop()


def test_a_query_past_its_deadline_is_not_run(engine):
    buffer = _buffer_with_frames(engine)
    worker = InferenceWorker(engine, {"front": buffer}, WorkerSettings(num_frames=4, min_frames=4,
                                                                       describe_period_s=0.0, alert_period_s=0.0),
                             lambda d: None, lambda a: None)
    worker.start()
    try:
        late = worker.submit_query(SceneQuery("Is there a car?", deadline=time.monotonic() - 1.0))
        with pytest.raises(QueryError, match="timed out"):
            late.result(timeout=10)
        assert worker.stats.queries == 0
    finally:
        worker.stop()


def test_a_query_asking_for_a_huge_answer_is_clamped(engine):
    buffer = _buffer_with_frames(engine)
    settings = WorkerSettings(num_frames=4, min_frames=4, describe_period_s=0.0, alert_period_s=0.0,
                              query_max_new_tokens_limit=5)
    worker = InferenceWorker(engine, {"front": buffer}, settings, lambda d: None, lambda a: None)
    worker.start()
    try:
        answer = worker.submit_query(SceneQuery("Describe the scene.", max_new_tokens=100_000)).result(timeout=30)
        assert 1 <= answer.timings.generated_tokens <= 5
    finally:
        worker.stop()
