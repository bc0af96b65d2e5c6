"""The HTTP side of ``vila-ros serve``: OpenAI chat completions (streaming as server-sent events, or not),
``/v1/models`` and ``/health``. Images come only as base64 data URLs: the server never fetches a URL."""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import time
import uuid
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from vila_ros.engine.errors import EngineError, PromptTooLongError
from vila_ros.engine.types import GenerationConfig, GenerationResult
from vila_ros.serve.scheduler import Job, QueueFull, Scheduler

IMAGE_PLACEHOLDER = "<image>"
MAX_IMAGE_BYTES = 16 * 1024 * 1024


class BadRequest(ValueError):
    pass


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "code": status}})


def decode_image(url: Any) -> np.ndarray:
    import cv2

    if not isinstance(url, str):
        raise BadRequest("image_url.url must be a string")
    if url.startswith(("http://", "https://")):
        raise BadRequest("image URLs are not fetched: send the image as a data:image/jpeg;base64,... URL")
    if not url.startswith("data:image/") or ";base64," not in url:
        raise BadRequest("images must be data:image/...;base64,... URLs")
    try:
        raw = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the image's base64 data does not decode") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise BadRequest(f"image over {MAX_IMAGE_BYTES} bytes")
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadRequest("the image data is not a decodable JPEG/PNG image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def parse_request(body: Any, max_tokens_limit: int) -> tuple[str, list[np.ndarray], GenerationConfig, bool]:
    """Chat request -> (question with <image> placeholders in the parts' order, frames, config, stream)."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        raise BadRequest("the request needs a non-empty 'messages' list")
    system = None
    question_parts: list[str] = []
    frames: list[np.ndarray] = []
    for message in body["messages"]:
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object")
        role, content = message.get("role"), message.get("content")
        if role == "system":
            if not isinstance(content, str):
                raise BadRequest("a system message's content must be a string")
            system = content
            continue
        if role != "user":
            raise BadRequest(f"only system and user messages are served (one turn), not {role!r}")
        question_parts = []
        frames = []
        if isinstance(content, str):
            question_parts.append(content)
            continue
        if not isinstance(content, list):
            raise BadRequest("a user message's content must be a string or a list of parts")
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                question_parts.append(part["text"])
            elif kind == "image_url" and isinstance(part.get("image_url"), dict):
                frames.append(decode_image(part["image_url"].get("url")))
                question_parts.append(IMAGE_PLACEHOLDER)
            else:
                raise BadRequest(f"unsupported content part {kind!r} (text and image_url are served)")
    if not question_parts:
        raise BadRequest("no user message")
    try:
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 64)
        temperature = float(body.get("temperature") if body.get("temperature") is not None else 0.0)
        top_p = float(body.get("top_p") if body.get("top_p") is not None else 1.0)
    except (TypeError, ValueError):
        raise BadRequest("max_tokens, temperature and top_p must be numbers") from None
    if not 1 <= max_tokens <= max_tokens_limit:
        raise BadRequest(f"max_tokens must be within 1..{max_tokens_limit}")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    seed = body.get("seed")
    config = GenerationConfig(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p,
                              seed=int(seed) if seed is not None else None, stop_strings=stop, system_prompt=system)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise BadRequest("response_format json_schema needs a 'schema' object")
        config.json_schema = json.dumps(spec["schema"])  # the engine refuses a schema it cannot use (400)
    elif response_format not in (None, {"type": "text"}):
        raise BadRequest("response_format: only json_schema and text are served")
    # Each image on its own line, as VILA's prompts put it when a question holds no placeholder.
    question = re.sub(re.escape(IMAGE_PLACEHOLDER) + "(?!\n)", IMAGE_PLACEHOLDER + "\n", "".join(question_parts))
    return question, frames, config, bool(body.get("stream"))


def _finish(result: GenerationResult) -> str:
    return "length" if result.stop_reason in ("max_new_tokens", "context_full") else "stop"


def create_app(engine: Any, model_name: str, max_queue: int = 32, max_batch: int = 8, gather_ms: float = 5.0,
               max_tokens_limit: int = 1024) -> FastAPI:
    scheduler = Scheduler(engine, max_queue=max_queue, max_batch=max_batch, gather_ms=gather_ms)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        yield
        scheduler.close()

    app = FastAPI(title="vila-ros serve", lifespan=lifespan)
    app.state.scheduler = scheduler
    started = int(time.time())

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "waiting": scheduler.waiting, "batches": scheduler.batches,
                "batched_rows": scheduler.batched_rows}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": model_name, "object": "model", "created": started, "owned_by": "vila-ros",
            "num_video_frames": engine.num_video_frames, "tokens_per_image": engine.tokens_per_image}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body is not JSON", "invalid_request_error")
        try:
            question, frames, config, stream = parse_request(body, max_tokens_limit)
        except BadRequest as error:
            return _error(400, str(error), "invalid_request_error")
        loop = asyncio.get_running_loop()
        rid = "chatcmpl-" + uuid.uuid4().hex
        events: asyncio.Queue = asyncio.Queue()
        cancelled = False

        def on_token(_token_id: int, text: str) -> bool:
            if text:
                loop.call_soon_threadsafe(events.put_nowait, ("token", text))
            return cancelled

        def done(result: GenerationResult | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("done", (result, error)))

        try:
            scheduler.submit(Job(question, frames, config, on_token if stream else None, done))
        except QueueFull as error:
            return _error(429, f"server busy: {error}; retry later", "rate_limit_error")
        if stream:
            async def sse() -> Any:
                nonlocal cancelled

                def chunk(delta: dict, finish: str | None) -> str:
                    data = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model_name, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                    return f"data: {json.dumps(data)}\n\n"

                try:
                    yield chunk({"role": "assistant", "content": ""}, None)
                    while True:
                        kind, value = await events.get()
                        if kind == "token":
                            yield chunk({"content": value}, None)
                            continue
                        result, error = value
                        if error is not None:
                            yield f"data: {json.dumps({'error': {'message': str(error)}})}\n\n"
                        else:
                            yield chunk({}, _finish(result))
                        yield "data: [DONE]\n\n"
                        return
                finally:
                    cancelled = True  # the client went away: the engine stops at its next token

            return StreamingResponse(sse(), media_type="text/event-stream")
        kind, (result, error) = await events.get()
        if error is not None:
            if isinstance(error, (PromptTooLongError, ValueError)):
                return _error(400, str(error), "invalid_request_error")
            kind_name = "engine_error" if isinstance(error, EngineError) else "server_error"
            return _error(500, f"{type(error).__name__}: {error}", kind_name)
        return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "finish_reason": _finish(result)}],
                "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": len(result.token_ids),
                          "total_tokens": result.prompt_tokens + len(result.token_ids)}}

    return app
