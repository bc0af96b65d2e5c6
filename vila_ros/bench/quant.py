"""``vila-ros bench quant``: decode tokens/s and resident weight memory, bf16 against int4, in one run.

Both engines get the same spliced prompt (one synthetic frame + a question), prefilled once (``prefill_s``); each
repeat restores the prompt's KV and times ``--new-tokens`` greedy decode steps (no stop ids), alternating between
bf16 and int4 so background load hits both alike (decode tok/s = (N - 1) forward passes / median time). Weight
memory is the bytes of the LLM's parameters and buffers (int4: the kernel-layout tensors actually resident), for the
LLM and for the whole model.

int4 weights come from ``--int4 DIR`` (a ``vila-ros quantize`` checkpoint) or, by default, round-to-nearest of the
loaded bf16 weights in memory (same kernels and layout; the speed and memory of AWQ weights are identical).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any


def add_parser(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser("quant", help="decode tok/s and weight memory: bf16 vs int4")
    p.add_argument("--model", required=True, help="float VILA1.5 checkpoint directory")
    p.add_argument("--int4", help="int4 checkpoint of the same model (default: RTN of --model in memory)")
    p.add_argument("--json", required=True, help="output JSON file")
    p.add_argument("--group", type=int, default=128, help="group size of the in-memory RTN (default 128)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.set_defaults(func=run)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def run(args: argparse.Namespace) -> int:
    import torch

    from vila_ros.bench.common import cpu_kernels_status, decode_session, synthetic_prompt, write_report
    from vila_ros.engine.torch_engine import TorchEngine
    from vila_ros.model.checkpoint import load_vila
    from vila_ros.model.int4_checkpoint import load_quantized_vila, quantize_rtn, weight_bytes

    if args.threads:
        torch.set_num_threads(args.threads)
    rss0 = _rss()
    t0 = time.perf_counter()
    bf16_model = load_vila(args.model, dtype=torch.bfloat16)
    load_bf16_s = time.perf_counter() - t0
    rss1 = _rss()
    t0 = time.perf_counter()
    if args.int4:
        int4_model = load_quantized_vila(args.int4)
        source = f"checkpoint {args.int4}"
    else:
        int4_model = load_vila(args.model, dtype=torch.bfloat16)
        quantize_rtn(int4_model.llm, args.group)
        source = f"RTN group {args.group} in memory"
    load_int4_s = time.perf_counter() - t0
    rss2 = _rss()
    engines = {"bf16": TorchEngine(bf16_model, "bf16"), "int4": TorchEngine(int4_model, "int4")}
    ids, features = synthetic_prompt(engines["bf16"])
    n = args.new_tokens
    sessions = {name: decode_session(e, ids, features, n) for name, e in engines.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.repeats):  # alternate so background load hits both alike
        for name, (go, _, _) in sessions.items():
            times[name].append(go())
    med = statistics.median
    rows = {}
    for name, engine in engines.items():
        t = med(times[name])
        rows[name] = {
            # n decode steps: the first token comes from the prefill logits, so n - 1 forward passes
            "decode_tok_s": round((n - 1) / max(t, 1e-9), 3),
            "decode_s": round(t, 4), "prefill_s": round(sessions[name][1], 3),
            "llm_weight_bytes": weight_bytes(engine.model.llm),
            "model_weight_bytes": weight_bytes(engine.model),
        }
    outputs = {name: s[2] for name, s in sessions.items()}
    report = {
        "model": str(args.model),
        "int4_source": source,
        "llm_parameters": sum(p.numel() for p in bf16_model.llm.parameters()),
        "torch_threads": torch.get_num_threads(),
        "prompt_positions": len(ids) - 1 + engines["bf16"].tokens_per_image,
        "new_tokens": n,
        "bf16": rows["bf16"],
        "int4": rows["int4"],
        "decode_speedup": round(rows["int4"]["decode_tok_s"] / rows["bf16"]["decode_tok_s"], 3),
        "llm_weight_ratio": round(rows["int4"]["llm_weight_bytes"] / rows["bf16"]["llm_weight_bytes"], 4),
        "model_weight_ratio": round(rows["int4"]["model_weight_bytes"] / rows["bf16"]["model_weight_bytes"], 4),
        "rss_bytes": {"start": rss0, "after_bf16_load": rss1, "after_int4_load": rss2,
                      "bf16_load_delta": rss1 - rss0, "int4_load_delta": rss2 - rss1},
        "load_s": {"bf16": round(load_bf16_s, 2), "int4": round(load_int4_s, 2)},
        "greedy_tokens_equal_first_8": outputs["bf16"][:8] == outputs["int4"][:8],
        "cpu_kernels": cpu_kernels_status(),
        "versions": {"torch": torch.__version__},
    }
    write_report(args.json, report, "vila-ros bench quant: bf16 vs int4 decode", {
        "decode tok/s bf16 / int4": f"{rows['bf16']['decode_tok_s']} / {rows['int4']['decode_tok_s']}",
        "int4 decode speed-up": report["decode_speedup"],
        "LLM weight bytes, int4 / bf16": report["llm_weight_ratio"],
    })
    return 0
