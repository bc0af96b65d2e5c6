"""Gathers requests from several clients into shared decode steps.

One thread owns the engine. It takes the first waiting request, waits ``gather_ms`` for others, and runs those
that share a generation config (their token limits may differ) as one ``generate_batch``: one decode step for all
rows, streaming rows getting their tokens through their own callbacks as they are decoded. The queue is bounded: a
full queue refuses at once (the server answers 429) rather than letting latency grow without bound.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from typing import Any, Callable, Optional

from vila_ros.engine.types import GenerationConfig, GenerationResult


class QueueFull(RuntimeError):
    pass


@dataclasses.dataclass
class Job:
    question: str
    frames: list[Any]
    config: GenerationConfig
    on_token: Optional[Callable[[int, str], Optional[bool]]] = None  # set for streaming requests
    done: Callable[[Optional[GenerationResult], Optional[BaseException]], None] = lambda r, e: None
    queued_at: float = dataclasses.field(default_factory=time.perf_counter)


def _key(config: GenerationConfig) -> tuple:
    """Rows of one batch share everything but their token limit (`generate_batch` takes one per row)."""
    return tuple(sorted((k, repr(v)) for k, v in dataclasses.asdict(config).items() if k != "max_new_tokens"))


def _noting(on_token: Optional[Callable[[int, str], Optional[bool]]], row: int,
            streamed: set[int]) -> Optional[Callable[[int, str], Optional[bool]]]:
    if on_token is None:
        return None

    def noted(token_id: int, text: str) -> Optional[bool]:
        streamed.add(row)
        return on_token(token_id, text)
    return noted


class Scheduler:
    def __init__(self, engine: Any, max_queue: int = 32, max_batch: int = 8, gather_ms: float = 5.0) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.gather_s = gather_ms / 1000.0
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self.batches = 0
        self.batched_rows = 0
        self._thread = threading.Thread(target=self._run, name="vila-serve-scheduler", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} requests already waiting") from None

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)

    def _gather(self) -> list[Job]:
        try:
            jobs = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        deadline = time.perf_counter() + self.gather_s
        while len(jobs) < self.max_batch:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                jobs.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return jobs

    def _run(self) -> None:
        while not self._stop.is_set():
            jobs = self._gather()
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                groups.setdefault(_key(job.config), []).append(job)
            for group in groups.values():
                if len(group) == 1:
                    self._one(group[0])
                    continue
                streamed: set[int] = set()
                try:
                    results = self.engine.generate_batch(
                        [j.question for j in group], [j.frames for j in group], group[0].config,
                        max_new_tokens=[j.config.max_new_tokens for j in group],
                        on_token=[_noting(j.on_token, i, streamed) for i, j in enumerate(group)])
                except Exception as error:  # noqa: BLE001 - one bad row must not fail the others: run them alone
                    for i, job in enumerate(group):
                        if i in streamed:  # its client has part of an answer already: a rerun would repeat it
                            job.done(None, error)
                        else:
                            self._one(job)
                    continue
                self.batches += 1
                self.batched_rows += len(group)
                for job, result in zip(group, results):
                    job.done(result, None)

    def _one(self, job: Job) -> None:
        try:
            result = self.engine.generate(job.question, job.frames, job.config, on_token=job.on_token)
        except Exception as error:  # noqa: BLE001 - reported to that request's client, the server keeps serving
            job.done(None, error)
            return
        job.done(result, None)
