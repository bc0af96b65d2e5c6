"""A remote engine: the Engine interface over an OpenAI-protocol chat-completions server (``vila-ros serve``,
trtllm-serve, SGLang, VILA's server, NIM).

Frames go as base64 JPEG ``image_url`` parts, interleaved with the prompt's text exactly where its ``<image>``
placeholders stand (a prompt without placeholders gets the images first, one per line, as in process), so the
server sees the frame order and labels our prompts use. ``encode_frames`` has no model features to compute
remotely: it JPEG-encodes the frames once (callers cache its result per frame, as they do features) and generate
sends those bytes. The API key comes from an environment variable or a file, never from a parameter value.
"""
from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vila_ros.engine.errors import RemoteEngineError, RemoteRequestError, refuse_constraints
from vila_ros.engine.types import GenerationConfig, GenerationResult, TokenCallback

IMAGE_PLACEHOLDER = "<image>"
RETRYABLE_STATUS = frozenset({408, 409, 429})


class JpegFrame:
    """One frame's JPEG bytes: what the remote engine's ``encode_frames`` returns. ``numel``/``element_size`` let
    the node's frame buffer count it like a feature tensor."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def numel(self) -> int:
        return len(self.data)

    def element_size(self) -> int:
        return 1

    def data_url(self) -> str:
        return "data:image/jpeg;base64," + base64.b64encode(self.data).decode("ascii")


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> JpegFrame:
    import cv2

    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError("frames must be HxWx3 uint8 RGB arrays")
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return JpegFrame(buf.tobytes())


def message_content(question: str, images: Sequence[JpegFrame]) -> list[dict[str, Any]]:
    """The user message's parts: text and images in the prompt's order."""
    if images and IMAGE_PLACEHOLDER not in question:
        question = (IMAGE_PLACEHOLDER + "\n") * len(images) + question
    pieces = question.split(IMAGE_PLACEHOLDER)
    if len(pieces) - 1 != len(images):
        raise RemoteRequestError(f"prompt holds {len(pieces) - 1} {IMAGE_PLACEHOLDER} placeholders but "
                                 f"{len(images)} images were given")
    parts: list[dict[str, Any]] = []
    for i, text in enumerate(pieces):
        if text:
            parts.append({"type": "text", "text": text})
        if i < len(images):
            parts.append({"type": "image_url", "image_url": {"url": images[i].data_url()}})
    return parts


def read_api_key(env: str = "", path: str = "") -> str:
    """The key from the environment variable ``env`` or the file ``path`` (first wins); servers without auth
    accept any, so the default is a placeholder."""
    if env and os.environ.get(env):
        return os.environ[env].strip()
    if path:
        try:
            return Path(path).expanduser().read_text().strip()
        except OSError as error:
            raise RemoteEngineError(f"cannot read the API key file {path}: {error.strerror}") from None
    return "none"


class OpenAIEngine:
    """Engine over an OpenAI chat-completions endpoint, with at most ``max_concurrency`` requests in flight."""

    def __init__(self, base_url: str, model: str = "", api_key_env: str = "", api_key_file: str = "",
                 timeout_s: float = 60.0, max_concurrency: int = 4, num_video_frames: int = 8,
                 tokens_per_image: int = 0, jpeg_quality: int = 90) -> None:
        import openai

        self._openai = openai
        self.base_url = base_url
        self.client = openai.OpenAI(base_url=base_url, api_key=read_api_key(api_key_env, api_key_file),
                                    timeout=timeout_s, max_retries=0)
        self.timeout_s = timeout_s
        self.jpeg_quality = jpeg_quality
        self._slots = threading.Semaphore(max(1, int(max_concurrency)))
        self.model_id = model
        self.num_video_frames = int(num_video_frames)
        self.tokens_per_image = int(tokens_per_image)
        if not model:
            self._discover()

    def _discover(self) -> None:
        """No model named: take the server's first, and its frame count when it reports one (vila-ros serve)."""
        models = self._call(lambda: self.client.models.list().data)
        if not models:
            raise RemoteEngineError(f"{self.base_url} serves no model")
        first = models[0]
        self.model_id = first.id
        extra = first.model_extra or {}
        self.num_video_frames = int(extra.get("num_video_frames", self.num_video_frames))
        self.tokens_per_image = int(extra.get("tokens_per_image", self.tokens_per_image))

    def _call(self, fn: Any) -> Any:
        """Run one client call, turning the client's exceptions into the engine's typed errors."""
        oa = self._openai
        try:
            return fn()
        except oa.APITimeoutError:
            raise RemoteEngineError(f"{self.base_url} timed out after {self.timeout_s:g} s") from None
        except oa.APIConnectionError as error:
            raise RemoteEngineError(f"cannot reach {self.base_url}: {error.__cause__ or error}") from None
        except oa.APIStatusError as error:
            status = error.status_code
            msg = f"{self.base_url} answered HTTP {status}: {_detail(error)}"
            if 400 <= status < 500 and status not in RETRYABLE_STATUS:
                raise RemoteRequestError(msg, status) from None
            raise RemoteEngineError(msg, status) from None
        except (oa.APIError, ValueError, KeyError, AttributeError, TypeError) as error:
            raise RemoteEngineError(f"malformed reply from {self.base_url}: {error}") from None

    def encode_frames(self, frames: Sequence[np.ndarray]) -> list[JpegFrame]:
        return [encode_jpeg(f, self.jpeg_quality) for f in frames]

    def _images(self, items: Sequence[Any]) -> tuple[list[JpegFrame], float]:
        t0 = time.perf_counter()
        out = [x if isinstance(x, JpegFrame) else encode_jpeg(x, self.jpeg_quality) for x in items]
        return out, (time.perf_counter() - t0) * 1000.0

    def _request(self, question: str, images: Sequence[JpegFrame], config: GenerationConfig) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if config.system_prompt is not None:
            messages.append({"role": "system", "content": config.system_prompt})
        messages.append({"role": "user", "content": message_content(question, images)})
        req: dict[str, Any] = {"model": self.model_id, "messages": messages, "max_tokens": config.max_new_tokens,
                               "temperature": config.temperature, "top_p": config.top_p}
        if config.seed is not None:
            req["seed"] = config.seed
        if config.stop_strings:
            req["stop"] = list(config.stop_strings)
        refuse_constraints("openai", config, json_schema=True)
        schema = getattr(config, "json_schema", None)
        if isinstance(schema, str) and schema:
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as error:
                raise RemoteRequestError(f"json_schema is not JSON: {error}") from None
        if schema:
            req["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": "answer", "schema": schema, "strict": True}}
        return req

    def generate(self, question: str, image_features: Sequence[Any], config: GenerationConfig | None = None,
                 on_token: TokenCallback | None = None) -> GenerationResult:
        config = config or GenerationConfig()
        images, encode_ms = self._images(image_features)
        req = self._request(question, images, config)
        with self._slots:
            if on_token is None:
                return self._call(lambda: self._complete(req, encode_ms))
            return self._call(lambda: self._stream(req, encode_ms, on_token))

    def _complete(self, req: dict[str, Any], encode_ms: float) -> GenerationResult:
        t0 = time.perf_counter()
        reply = self.client.chat.completions.create(**req)
        choice = reply.choices[0]
        text = choice.message.content
        if not isinstance(text, str):
            raise ValueError("the reply holds no message content")
        usage = reply.usage
        ms = (time.perf_counter() - t0) * 1000.0
        return GenerationResult(text=text, token_ids=[], vision_ms=encode_ms, prefill_ms=0.0, decode_ms=ms,
                                stop_reason=_stop_reason(choice.finish_reason),
                                prompt_tokens=int(usage.prompt_tokens) if usage else 0)

    def _stream(self, req: dict[str, Any], encode_ms: float, on_token: TokenCallback) -> GenerationResult:
        t0 = time.perf_counter()
        first_ms = 0.0
        pieces: list[str] = []
        reason = "stop_token"
        stream = self.client.chat.completions.create(stream=True, **req)
        try:
            for chunk in stream:
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                text = choice.delta.content if choice.delta is not None else None
                if text:
                    if not pieces:
                        first_ms = (time.perf_counter() - t0) * 1000.0
                    pieces.append(text)
                    # Token ids are the server's business; a streamed piece carries -1 like released text does.
                    if on_token(-1, text):
                        reason = "cancelled"
                        break
                if choice.finish_reason:
                    reason = _stop_reason(choice.finish_reason)
        finally:
            stream.close()  # closing the connection is what stops the server's generation on cancel
        total = (time.perf_counter() - t0) * 1000.0
        return GenerationResult(text="".join(pieces), token_ids=[], vision_ms=encode_ms, prefill_ms=first_ms,
                                decode_ms=total - first_ms, stop_reason=reason)

    def generate_batch(self, questions: Sequence[str], image_features: Sequence[Sequence[Any]],
                       config: GenerationConfig | None = None,
                       max_new_tokens: Sequence[int] | None = None,
                       output_regexes: Sequence[str | None] | None = None) -> list[GenerationResult]:
        """Rows go as concurrent requests (the server batches them); results in order. `max_new_tokens`: a limit
        per row (default the config's); `output_regexes` are refused (not in the protocol)."""
        from concurrent.futures import ThreadPoolExecutor
        from dataclasses import replace

        if len(questions) != len(image_features):
            raise ValueError("one list of images per question")
        if not questions:
            return []
        config = config or GenerationConfig()
        refuse_constraints("openai", config, output_regexes, json_schema=True)
        limits = max_new_tokens or [config.max_new_tokens] * len(questions)
        with ThreadPoolExecutor(max_workers=len(questions)) as pool:
            futures = [pool.submit(self.generate, q, f, replace(config, max_new_tokens=n))
                       for q, f, n in zip(questions, image_features, limits)]
            return [f.result() for f in futures]


def _stop_reason(finish_reason: str | None) -> str:
    return {"length": "max_new_tokens", "stop": "stop_token"}.get(finish_reason or "stop", "stop_token")


def _detail(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
        if "detail" in body:
            return str(body["detail"])
    return str(getattr(error, "message", error))[:300]
