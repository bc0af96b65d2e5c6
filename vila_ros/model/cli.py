"""``vila-ros init-model``. torch is imported inside the handler only."""
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
