"""``vila-ros quantize``, ``export-trtllm``, ``convert-awq``, ``quant-eval``. torch is imported in the handlers."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    q = subparsers.add_parser("quantize", help="int4 AWQ / round-to-nearest quantization of the LLM (llm/ only)")
    q.add_argument("--model", required=True, help="float VILA1.5 checkpoint directory")
    q.add_argument("--out", required=True, help="output directory (int4 checkpoint, format vila_ros_int4/v1)")
    q.add_argument("--calib", default="sim", help="'sim' (simulator clips) or a LLaVA JSON file (default sim)")
    q.add_argument("--group", type=int, default=128, help="input columns per quantization group (default 128)")
    q.add_argument("--method", default="awq", choices=("awq", "rtn"))
    q.add_argument("--scheme", default="asym", choices=("asym", "sym"),
                   help="asym: integer zero point per group (default); sym: zero 8, the layout ModelOpt exports")
    q.add_argument("--samples", type=int, default=16, help="calibration conversations (default 16)")
    q.add_argument("--frames", type=int, help="frames per calibration clip (default: the model's num_video_frames)")
    q.add_argument("--no-clip", action="store_true", help="skip the clipping search")
    q.add_argument("--grid", type=int, default=20, help="alpha grid points in [0, 1) (default 20)")
    q.add_argument("--max-tokens", type=int, default=512, help="token rows per layer for the search losses")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--threads", type=int, default=0,
                   help="torch threads for the search (0 = auto: 1 for small models, torch's default otherwise)")
    q.set_defaults(func=_quantize)

    e = subparsers.add_parser("export-trtllm",
                              help="int4 checkpoint -> TensorRT-LLM W4A16_AWQ checkpoint + vision ONNX")
    e.add_argument("--model", required=True, help="int4 checkpoint (vila-ros quantize output)")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--max-batch", type=int, default=1, help="requests per engine call (default 1)")
    e.add_argument("--frames", type=int, help="frames per request (default: the model's num_video_frames)")
    e.add_argument("--max-input-text", type=int, default=512, help="text tokens of a prompt besides the images")
    e.add_argument("--max-new-tokens", type=int, default=256)
    e.add_argument("--no-onnx", action="store_true", help="skip the vision ONNX export")
    e.set_defaults(func=_export)

    c = subparsers.add_parser("convert-awq", help="TinyChat / llm-awq int4 .pt (llm/*-awq-v2.pt) -> int4 safetensors")
    c.add_argument("src", help="VILA-layout AWQ checkpoint directory (or its llm/*.pt file)")
    c.add_argument("dst", help="output directory (int4 checkpoint, format vila_ros_int4/v1; must not exist)")
    c.add_argument("--group", type=int, help="quantization group (default: the -gN in the file name, else 128)")
    c.set_defaults(func=_convert_awq)

    v = subparsers.add_parser("quant-eval", help="held-out caption perplexity: fp32, bf16 and int4 checkpoints")
    v.add_argument("--model", required=True, help="float checkpoint (fp32 and bf16 rows, the logit reference)")
    v.add_argument("--int4", action="append", default=[], metavar="NAME=DIR", help="int4 checkpoint(s) to compare")
    v.add_argument("--samples", type=int, default=32)
    v.add_argument("--frames", type=int, help="frames per clip (default: the model's num_video_frames)")
    v.add_argument("--json", help="write the result here")
    v.add_argument("--markdown", action="store_true", help="print a markdown table")
    v.set_defaults(func=_quant_eval)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quantize(args: argparse.Namespace) -> int:
    from vila_ros.quant.pipeline import quantize_checkpoint

    result = quantize_checkpoint(
        args.model, args.out, method=args.method, group_size=args.group, scheme=args.scheme, calib=args.calib,
        samples=args.samples, clip=not args.no_clip, grid=args.grid, max_tokens=args.max_tokens,
        num_frames=args.frames, seed=args.seed, threads=args.threads, progress=_say)
    result.pop("report", None)
    print(json.dumps(result))
    return 0


def _export(args: argparse.Namespace) -> int:
    from vila_ros.quant.trtllm import export_trtllm

    report = export_trtllm(args.model, args.out, max_batch=args.max_batch, frames=args.frames,
                           max_input_text=args.max_input_text, max_new_tokens=args.max_new_tokens,
                           onnx=not args.no_onnx)
    print(json.dumps(report))
    return 0


def _convert_awq(args: argparse.Namespace) -> int:
    from vila_ros.model.checkpoint import CheckpointError
    from vila_ros.quant.tinychat import convert_awq

    try:
        print(json.dumps(convert_awq(args.src, args.dst, group=args.group)))
    except (CheckpointError, FileExistsError, ValueError) as error:
        _say(f"vila-ros convert-awq: {error}")
        return 2
    return 0


def _quant_eval(args: argparse.Namespace) -> int:
    from vila_ros.engine import create_engine
    from vila_ros.quant.calib import sim_samples
    from vila_ros.quant.evaluate import evaluate, markdown_table

    engines = {"fp32": create_engine(args.model, precision="fp32"), "bf16": create_engine(args.model, precision="bf16")}
    for item in args.int4:
        name, _, path = item.partition("=")
        if not path:
            name, path = f"int4 {item}", item
        engines[name] = create_engine(path, precision="int4")
    model = engines["fp32"].model
    samples = sim_samples(args.samples, model.tokenizer, model.conv_template, model.config.image_size,
                          int(args.frames or model.config.num_video_frames), split="test", kinds=("caption",))
    result = evaluate(engines, samples, reference="fp32")
    result["model"] = args.model
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    print(markdown_table(result) if args.markdown else json.dumps(result))
    return 0
