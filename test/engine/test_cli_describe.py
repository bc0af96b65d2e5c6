"""`vila-ros describe` and `vila-ros bench decode` end to end, in subprocesses, on real JPEG/video files."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from vila_ros.engine import GenerationConfig


def vila_ros(*args, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "vila_ros.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_describe_images_and_video(tiny_dir, tiny_engine, tmp_path):
    rng = np.random.default_rng(11)
    paths, frames = [], []
    for i in range(2):
        bgr = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
        path = tmp_path / f"img{i}.jpg"
        assert cv2.imwrite(str(path), bgr)
        paths.append(path)
        frames.append(np.asarray(Image.open(path).convert("RGB")))  # as VILA reads images
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(10):
        writer.write(np.full((48, 64, 3), i * 25, np.uint8))
    writer.release()

    out = json.loads(vila_ros("describe", "--model", tiny_dir, "--image", paths[0], "--image", paths[1],
                              "--prompt", "What changed?", "--max-new-tokens", 6, "--json"))
    assert set(out) >= {"text", "token_ids", "timings", "stop_reason"}
    assert {"vision_ms", "prefill_ms", "decode_ms"} <= set(out["timings"])
    expected = tiny_engine.generate("What changed?", tiny_engine.encode_frames(frames),
                                    GenerationConfig(max_new_tokens=6))
    assert out["token_ids"] == expected.token_ids and out["text"] == expected.text
    assert out["num_images"] == 2

    vid = json.loads(vila_ros("describe", "--model", tiny_dir, "--video", video, "--frames", 3,
                              "--prompt", "Describe.", "--max-new-tokens", 4, "--conv-template", "plain", "--json"))
    assert vid["num_images"] == 3 and len(vid["token_ids"]) <= 4
    assert vid["prompt_tokens"] == 3 * tiny_engine.tokens_per_image + len(
        tiny_engine.model.tokenizer("\n\n\nDescribe.\n").input_ids)


def test_images_are_read_as_vila_reads_them(tmp_path):
    from vila_ros.engine.cli import read_image_rgb

    pixels = np.random.default_rng(2).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to display": VILA's PIL reading does not apply it; cv2.imread would
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    assert read_image_rgb(str(tmp_path / "rotated.jpg")).shape == (20, 40, 3)
    rgba = np.dstack([pixels, np.full((20, 40), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    assert np.array_equal(read_image_rgb(str(tmp_path / "alpha.png")), pixels)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(FileNotFoundError, match="bad.jpg"):
        read_image_rgb(str(tmp_path / "bad.jpg"))


def test_video_sampling_is_uniform(tmp_path):
    from vila_ros.engine.cli import sample_video_frames

    video = tmp_path / "ramp.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for i in range(9):
        writer.write(np.full((32, 32, 3), i * 30, np.uint8))
    writer.release()
    picked = sample_video_frames(str(video), 3)
    assert [int(round(f.mean() / 30)) for f in picked] == [0, 4, 8]


def test_bench_decode_and_init_model(tiny_dir, tmp_path):
    report = tmp_path / "bench.json"
    vila_ros("bench", "decode", "--model", tiny_dir, "--json", report, "--new-tokens", 8, "--repeats", 1)
    data = json.loads(report.read_text())
    assert data["new_tokens"] == 8 and data["ours"]["decode_tok_s"] > 0 and data["hf_generate"]["decode_tok_s"] > 0
    assert data["tokens_match"] is True
    assert data["ours"]["time_to_first_token_ms"] > 0 and data["time_to_first_token_ratio"] > 0
    assert "decode speed-up" in report.with_suffix(".md").read_text()
    info = json.loads(vila_ros("init-model", "--preset", "tiny", "--out", tmp_path / "t", "--seed", 1))
    assert (tmp_path / "t" / "llm" / "model.safetensors.index.json").is_file() and info["bytes"] > 0


def test_describe_json_schema_file_or_text(tiny_dir, tmp_path):
    from vila_ros.engine.json_schema import validate_answer

    image = tmp_path / "img.jpg"
    assert cv2.imwrite(str(image), np.full((40, 60, 3), 90, np.uint8))
    schema = '{"type": "object", "required": ["person"], "properties": {"person": {"type": "boolean"}}}'
    (tmp_path / "schema.json").write_text(schema)
    for arg in (tmp_path / "schema.json", schema):
        out = vila_ros("describe", "--model", tiny_dir, "--image", image, "--prompt", "Anyone?",
                       "--max-new-tokens", 24, "--json-schema", arg)
        validate_answer(out.strip(), schema)
    bad = subprocess.run([sys.executable, "-m", "vila_ros.cli", "describe", "--model", str(tiny_dir), "--image",
                          str(image), "--prompt", "Anyone?", "--json-schema", '{"type": "integer", "not": {}}'],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not" in bad.stderr and "cannot enforce" in bad.stderr, bad.stderr


def test_describe_keeps_to_a_regex_file(tiny_dir, tmp_path):
    image = tmp_path / "img.jpg"
    assert cv2.imwrite(str(image), np.full((40, 60, 3), 90, np.uint8))
    (tmp_path / "answers.txt").write_text("[ ]?(A box falls\\.|Nothing moves\\.)\n")
    for seed in (1, 2):  # random weights sampled hot say neither unconstrained
        out = vila_ros("describe", "--model", tiny_dir, "--image", image, "--prompt", "What happens?",
                       "--temperature", 1.5, "--seed", seed,
                       "--regex-file", tmp_path / "answers.txt")
        assert out.strip() in ("A box falls.", "Nothing moves."), out
    missing = subprocess.run([sys.executable, "-m", "vila_ros.cli", "describe", "--model", str(tiny_dir), "--image",
                              str(image), "--prompt", "What happens?", "--regex-file", str(tmp_path / "none.txt")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "none.txt" in missing.stderr, missing.stderr


def test_describe_tiles_one_image_for_nvila_lite(tmp_path):
    from vila_ros.engine.torch_engine import TorchEngine
    from vila_ros.model.checkpoint import load_vila
    from vila_ros.model.presets import init_model

    model_dir = init_model("tiny-nvila-lite", tmp_path / "nvila", seed=2)
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (60, 200, 3), dtype=np.uint8)).save(path)
    out = json.loads(vila_ros("describe", "--model", model_dir, "--image", path, "--prompt", "Describe.",
                              "--max-new-tokens", 5, "--json"))
    engine = TorchEngine(load_vila(model_dir))
    frame = np.asarray(Image.open(path).convert("RGB"))
    expected = engine.generate("Describe.", [frame], GenerationConfig(max_new_tokens=5))
    assert out["token_ids"] == expected.token_ids and out["prompt_tokens"] == expected.prompt_tokens
    assert out["prompt_tokens"] > 3 * engine.tokens_per_image  # several tiles and the thumbnail, not one view
