"""``vila-ros init-model``, ``vila-ros resize-vision`` and ``vila-ros average-weights``. torch is imported inside the
handlers only."""
from __future__ import annotations

import argparse
import json
import time
from typing import Any


def register(subparsers: Any) -> None:
    init = subparsers.add_parser("init-model", help="write a randomly initialised VILA1.5 or NVILA-Lite checkpoint")
    init.add_argument("--preset", required=True,
                      help="tiny | default-small | mid | vila1.5-3b | tiny-nvila-lite | nvila-lite-2b | nvila-lite-8b")
    init.add_argument("--out", required=True, help="output directory")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--corpus", help="text file (one sample per line) to train the tokenizer on")
    init.set_defaults(func=_init_model)

    resize = subparsers.add_parser(
        "resize-vision", help="copy a checkpoint with its vision tower's input at another size (position embeddings "
                              "resampled): a starting point for fine-tuning at that size, tower trained")
    resize.add_argument("--model", required=True, help="checkpoint directory")
    resize.add_argument("--image-size", type=int, required=True, help="the tower's new input size in pixels")
    resize.add_argument("--out", required=True, help="output directory")
    resize.set_defaults(func=_resize_vision)

    average = subparsers.add_parser(
        "average-weights", help="write the uniform average of checkpoints fine-tuned from one starting point (a "
                                "model soup); choose its alert thresholds again on stream_val")
    average.add_argument("--models", nargs="+", required=True, help="two or more checkpoint directories")
    average.add_argument("--out", required=True, help="output directory")
    average.set_defaults(func=_average_weights)


def _init_model(args: argparse.Namespace) -> int:
    from vila_ros.model.checkpoint import checkpoint_bytes
    from vila_ros.model.presets import init_model

    corpus = None
    if args.corpus:
        with open(args.corpus, encoding="utf-8") as f:
            corpus = [line.rstrip("\n") for line in f if line.strip()]
    t0 = time.perf_counter()
    out = init_model(args.preset, args.out, seed=args.seed, tokenizer_corpus=corpus)
    print(json.dumps({"out": str(out), "preset": args.preset, "bytes": checkpoint_bytes(out),
                      "seconds": round(time.perf_counter() - t0, 2)}))
    return 0


def _resize_vision(args: argparse.Namespace) -> int:
    from vila_ros.model.checkpoint import read_config
    from vila_ros.model.resize import resize_vision_input

    out = resize_vision_input(args.model, args.out, args.image_size)
    config = read_config(out)
    print(json.dumps({"out": str(out), "image_size": config.image_size, "tokens_per_frame": config.tokens_per_image}))
    return 0


def _average_weights(args: argparse.Namespace) -> int:
    from vila_ros.model.average import average_checkpoints
    from vila_ros.model.checkpoint import checkpoint_bytes

    out = average_checkpoints(args.models, args.out)
    print(json.dumps({"out": str(out), "models": args.models, "bytes": checkpoint_bytes(out)}))
    return 0
