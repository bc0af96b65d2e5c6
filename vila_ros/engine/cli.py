"""``vila-ros describe``: one prompt about images or a video through an engine. torch is imported in the handler."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from vila_ros.model.config import RESIZES


def register(subparsers: Any) -> None:
    desc = subparsers.add_parser("describe", help="answer a prompt about images or a video")
    desc.add_argument("--model", required=True, help="VILA1.5 checkpoint directory")
    desc.add_argument("--image", action="append", default=[], help="image file (repeat for several, in order)")
    desc.add_argument("--video", help="video file; --frames frames sampled uniformly")
    desc.add_argument("--frames", type=int, help="frames taken from --video (default: the model's num_video_frames)")
    desc.add_argument("--prompt", required=True)
    desc.add_argument("--max-new-tokens", type=int, default=128)
    desc.add_argument("--temperature", type=float, default=0.0)
    desc.add_argument("--top-p", type=float, default=1.0)
    desc.add_argument("--seed", type=int)
    desc.add_argument("--conv-template", help="override the checkpoint's conversation template")
    desc.add_argument("--system", help="override the template's system prompt")
    desc.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int4"))
    desc.add_argument("--engine", default="torch")
    desc.add_argument("--device", default="cpu")
    desc.add_argument("--resize", choices=RESIZES,
                      help="image resize: pil (the checkpoint processor's own, exact), opencv (faster, close) or "
                           "nearest (point samples, for models trained on point-sampled renders); "
                           "default: what the checkpoint's preprocessor_config.json names")
    desc.add_argument("--json", action="store_true", help="print one JSON object instead of the text")
    desc.add_argument("--json-schema", metavar="FILE_OR_TEXT",
                      help="answer with JSON valid against this schema (a file, or the schema itself)")
    desc.add_argument("--regex-file", metavar="FILE",
                      help="answer with text matching this file's regular expression whole (e.g. a model's "
                           "description_regex.txt: its description grammar)")
    desc.set_defaults(func=_describe)


def read_image_rgb(path: str) -> Any:
    """The image as VILA reads it: PIL, converted to RGB, EXIF orientation not applied (cv2.imread would rotate)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as error:
        raise FileNotFoundError(f"cannot read image {path}: {error}") from error


def sample_video_frames(path: str, num_frames: int) -> list[Any]:
    """``num_frames`` RGB frames spread uniformly over the video (first and last included).

    Frames are read sequentially with grab() and decoded only when wanted: seeking with CAP_PROP_POS_FRAMES is
    inexact for many codecs, and a short clip costs little to scan.
    """
    import cv2
    import numpy as np

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:  # unknown length (some streams): decode everything, then sample
            frames = []
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                frames.append(frame)
            total = len(frames)
            wanted = np.linspace(0, total - 1, num_frames).round().astype(int).tolist() if total else []
            return [cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB) for i in wanted]
        wanted = np.linspace(0, total - 1, num_frames).round().astype(int).tolist()
        out, index = [], 0
        for target in wanted:
            while index <= target:
                if not cap.grab():
                    break
                index += 1
            if index <= target:
                break  # the container announced more frames than it has
            ok, frame = cap.retrieve()
            if ok:
                out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        return out
    finally:
        cap.release()


def read_schema_arg(value: str | None) -> str | None:
    """--json-schema: a path to a schema file, or the schema text itself (starts with "{")."""
    if not value or value.lstrip().startswith("{"):
        return value or None
    from pathlib import Path

    try:
        return Path(value).read_text()
    except OSError as error:
        raise FileNotFoundError(f"cannot read the JSON schema file {value}: {error.strerror}") from None


def _describe(args: argparse.Namespace) -> int:
    from vila_ros.engine import GenerationConfig, create_engine
    from vila_ros.engine.errors import RequestError
    from vila_ros.engine.json_schema import read_regex_file
    from vila_ros.model.checkpoint import CheckpointError

    t0 = time.perf_counter()
    try:
        schema = read_schema_arg(args.json_schema)
        regex = read_regex_file(args.regex_file) if args.regex_file else None
        engine = create_engine(args.model, engine=args.engine, precision=args.precision, device=args.device,
                               resize=args.resize)
        load_ms = (time.perf_counter() - t0) * 1000
        frames = [read_image_rgb(p) for p in args.image]
        if args.video:
            frames += sample_video_frames(args.video, args.frames or engine.num_video_frames)
    except (CheckpointError, FileNotFoundError, NotImplementedError, RuntimeError, ValueError) as error:
        print(f"vila-ros describe: {error}", file=sys.stderr)
        return 2
    t1 = time.perf_counter()
    # One image alone is tiled under NVILA-Lite's image_aspect_ratio: dynamic; the torch engine does that given pixels.
    tiles = len(frames) == 1 and hasattr(engine, "tile_single_frame")
    features = frames if tiles else engine.encode_frames(frames)
    vision_ms = (time.perf_counter() - t1) * 1000
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        conv_template=args.conv_template, system_prompt=args.system, json_schema=schema, output_regex=regex,
    )
    streaming = not args.json
    on_token = (lambda _tid, text: print(text, end="", flush=True)) if streaming else None
    try:
        result = engine.generate(args.prompt, features, config, on_token=on_token)
    except RequestError as error:
        print(f"vila-ros describe: {error}", file=sys.stderr)
        return 2
    if streaming:
        print()
        return 0
    decode_s = result.decode_ms / 1000
    print(json.dumps({
        "text": result.text,
        "token_ids": result.token_ids,
        "stop_reason": result.stop_reason,
        "num_images": len(frames),
        "prompt_tokens": result.prompt_tokens,
        "model": engine.model_id,
        "timings": {
            "load_ms": round(load_ms, 2),
            "vision_ms": round(result.vision_ms if tiles else vision_ms, 2),
            "prefill_ms": round(result.prefill_ms, 2),
            "decode_ms": round(result.decode_ms, 2),
            "decode_tokens_per_s": round(max(len(result.token_ids) - 1, 0) / decode_s, 2) if decode_s > 0 else None,
        },
    }))
    sys.stdout.flush()
    return 0
