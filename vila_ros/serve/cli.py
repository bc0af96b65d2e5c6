"""``vila-ros serve``: the torch engine behind the OpenAI chat-completions protocol. Heavy imports in the handler."""
from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="serve a checkpoint over the OpenAI chat-completions protocol")
    p.add_argument("--model", required=True, help="VILA1.5 checkpoint directory")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 to serve other machines)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", help="model id clients send (default: the directory's name)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int4"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-queue", type=int, default=32, help="requests waiting beyond this are refused with 429")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together in one step")
    p.add_argument("--gather-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    p.add_argument("--max-tokens-limit", type=int, default=1024)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    import uvicorn

    from vila_ros.engine import create_engine
    from vila_ros.serve.app import create_app

    engine = create_engine(args.model, engine="torch", precision=args.precision, device=args.device)
    name = args.served_model_name or Path(args.model).resolve().name
    app = create_app(engine, name, max_queue=args.max_queue, max_batch=args.max_batch, gather_ms=args.gather_ms,
                     max_tokens_limit=args.max_tokens_limit)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
