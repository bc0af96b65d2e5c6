"""`vila-ros serve` over real HTTP with the official openai client, and the remote engine against it."""
import concurrent.futures

import httpx
import numpy as np
import openai
import pytest

from vila_ros.engine import GenerationConfig, RemoteEngineError, RemoteRequestError, create_engine
from vila_ros.engine.openai_engine import encode_jpeg
from vila_ros.serve.launch import free_port, running_server


@pytest.fixture(scope="module")
def server(tiny_dir):
    # A gather window long enough for concurrent test clients to meet in one batch on a loaded 2-core machine
    # (with the default 5 ms the server now and then took them one by one and the batching tests failed).
    with running_server(tiny_dir, "--served-model-name", "tiny", "--gather-ms", "150") as base:
        yield base


def frames(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


def jpeg_roundtrip(frame):
    import cv2

    data = encode_jpeg(frame).data
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def user(text, images=()):
    parts = [{"type": "image_url", "image_url": {"url": encode_jpeg(f).data_url()}} for f in images]
    return [{"role": "user", "content": parts + [{"type": "text", "text": text}]}]


def client(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=60)


def test_health_and_models(server):
    assert httpx.get(server + "/health").json()["status"] == "ok"
    models = client(server).models.list().data
    assert [m.id for m in models] == ["tiny"]
    assert models[0].model_extra["num_video_frames"] >= 1


def test_stream_and_non_stream_agree(server):
    c = client(server)
    msgs = user("What is happening?", frames())
    whole = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=12, temperature=0)
    assert whole.choices[0].finish_reason in ("length", "stop")
    text = whole.choices[0].message.content
    assert text
    pieces = [ch.choices[0].delta.content or "" for ch in
              c.chat.completions.create(model="tiny", messages=msgs, max_tokens=12, temperature=0, stream=True)
              if ch.choices]
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == text


def test_concurrent_clients_are_batched_and_match_single(server, tiny_dir):
    local = create_engine(tiny_dir)
    questions = [f"Question {i}: what moves?" for i in range(6)]
    imgs = [frames(1, seed=i) for i in range(6)]
    expected = [local.generate(q, [jpeg_roundtrip(f) for f in im], GenerationConfig(max_new_tokens=10)).text
                for q, im in zip(questions, imgs)]
    before = httpx.get(server + "/health").json()["batched_rows"]

    def ask(i):
        return client(server).chat.completions.create(model="tiny", messages=user(questions[i], imgs[i]),
                                                      max_tokens=10, temperature=0).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        got = list(pool.map(ask, range(6)))
    assert got == expected
    assert httpx.get(server + "/health").json()["batched_rows"] > before


def test_streaming_clients_share_decode_steps_each_with_its_own_limit(server, tiny_dir):
    local = create_engine(tiny_dir)
    limits = [4, 7, 10, 12]
    imgs = [frames(1, seed=10 + i) for i in range(4)]
    expected = [local.generate("What moves?", [jpeg_roundtrip(f) for f in im], GenerationConfig(max_new_tokens=n)).text
                for im, n in zip(imgs, limits)]
    before = httpx.get(server + "/health").json()["batched_rows"]

    def ask(i):
        chunks = client(server).chat.completions.create(model="tiny", messages=user("What moves?", imgs[i]),
                                                        max_tokens=limits[i], temperature=0, stream=True)
        return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(ask, range(4)))
    assert got == expected
    assert httpx.get(server + "/health").json()["batched_rows"] > before


@pytest.mark.parametrize("url, why", [
    ("https://example.com/cat.jpg", "not fetched"),
    ("data:image/jpeg;base64,@@@", "base64"),
    ("data:image/jpeg;base64,aGVsbG8=", "not a decodable"),
])
def test_bad_image_is_400(server, url, why):
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "hi"}]}]
    with pytest.raises(openai.BadRequestError) as info:
        client(server).chat.completions.create(model="tiny", messages=msgs, max_tokens=4)
    assert why in str(info.value)


def test_full_queue_is_429(tiny_dir):
    with running_server(tiny_dir, "--max-queue", "1", "--max-batch", "1", "--gather-ms", "0") as base:
        def ask(i):
            try:
                client(base).chat.completions.create(model="x", messages=user(f"q{i}", frames(1)), max_tokens=200)
                return 200
            except openai.RateLimitError as error:
                assert "busy" in str(error)
                return 429

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(ask, range(12)))
    assert 429 in codes and 200 in codes


def test_remote_engine_matches_in_process(server, tiny_dir):
    local = create_engine(tiny_dir)
    remote = create_engine("", engine="openai", remote={"base_url": server + "/v1", "timeout_s": 60})
    assert remote.model_id == "tiny" and remote.num_video_frames == local.num_video_frames
    fs = frames(2, seed=3)
    question = "Frame 1: <image>\nFrame 2: <image>\nDescribe the scene."
    cfg = GenerationConfig(max_new_tokens=12)
    want = local.generate(question, [jpeg_roundtrip(f) for f in fs], cfg).text
    assert remote.generate(question, remote.encode_frames(fs), cfg).text == want
    streamed = []
    result = remote.generate(question, fs, cfg, on_token=lambda _i, t: streamed.append(t))
    assert "".join(streamed) == result.text == want
    assert [r.text for r in remote.generate_batch([question, question], [fs, fs], cfg)] == [want, want]


def test_remote_engine_cancel_stops_the_stream(server):
    remote = create_engine("", engine="openai", remote={"base_url": server + "/v1"})
    seen = []
    result = remote.generate("Describe.", frames(1), GenerationConfig(max_new_tokens=50),
                             on_token=lambda _i, t: seen.append(t) or len(seen) >= 2)
    assert result.stop_reason == "cancelled" and len(seen) == 2


def test_remote_engine_typed_errors(server, tmp_path):
    remote = create_engine("", engine="openai", remote={"base_url": server + "/v1", "model": "tiny"})
    with pytest.raises(RemoteRequestError, match="HTTP 400"):
        remote.generate("hi", frames(1), GenerationConfig(max_new_tokens=100000))
    with pytest.raises(RemoteRequestError, match="placeholders"):
        remote.generate("<image> <image>", frames(1))
    dead = create_engine("", engine="openai", remote={"base_url": f"http://127.0.0.1:{_closed_port()}/v1",
                                                      "model": "m", "timeout_s": 2})
    with pytest.raises(RemoteEngineError, match="cannot reach"):
        dead.generate("hi", frames(1))
    key = tmp_path / "key"
    key.write_text("secret\n")
    assert create_engine("", engine="openai", remote={"base_url": server + "/v1", "model": "tiny",
                                                      "api_key_file": str(key)}).client.api_key == "secret"


def _closed_port():
    return free_port()


def test_json_schema_answers_through_server_and_remote_engine(server):
    import json

    schema = {"type": "object", "properties": {"hazard": {"type": "string", "enum": ["none", "person", "fire"]}},
              "required": ["hazard"], "additionalProperties": False}
    reply = client(server).chat.completions.create(
        model="tiny", messages=user("Any hazard?", frames(1)), max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    assert json.loads(reply.choices[0].message.content)["hazard"] in ("none", "person", "fire")
    remote = create_engine("", engine="openai", remote={"base_url": server + "/v1", "model": "tiny"})
    text = remote.generate("Any hazard?", frames(1), GenerationConfig(max_new_tokens=40,
                                                                      json_schema=json.dumps(schema))).text
    assert json.loads(text)["hazard"] in ("none", "person", "fire")
    with pytest.raises(RemoteRequestError, match="HTTP 400"):
        remote.generate("x", frames(1), GenerationConfig(json_schema='{"type": "nonsense"}'))
