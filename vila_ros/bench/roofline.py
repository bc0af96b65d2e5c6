"""``vila-ros bench roofline``: how close int4 decode comes to this machine's memory bandwidth.

At batch 1 every generated token reads every LLM weight once (plus the KV cache so far), so the fastest possible
decode is bandwidth / bytes-per-token. The bench measures, in one run and with the same torch threads:
  * read bandwidth: the best of several full passes summing a buffer far larger than the caches (STREAM takes the
    best too: the floor of what the memory system sustains, not an average of interruptions);
  * bytes read per token: the resident int4 kernel tensors and scales of every quantized Linear, the bf16 lm_head
    and norms, one embedding row, and the KV cache at the mean position of the timed steps;
  * decode tok/s of the int4 engine (and bf16, for the same figure at 16 bits).
fraction = tok/s x bytes/token / bandwidth: 1.0 means decode moves bytes as fast as the memory system allows. The
bandwidth is probed again right before and right after every timed decode (it swings on a shared VM) and the
reported fraction is the median over the decodes, each against the mean of its two probes.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any


def add_parser(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser("roofline", help="int4 decode vs this machine's memory bandwidth")
    p.add_argument("--model", required=True, help="float VILA1.5 checkpoint directory")
    p.add_argument("--int4", help="int4 checkpoint of the same model (default: RTN of --model in memory)")
    p.add_argument("--json", required=True, help="output JSON file (markdown beside it)")
    p.add_argument("--group", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--buffer-mib", type=int, default=1024, help="bandwidth probe size (far above the caches)")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 row (halves the memory needed)")
    p.set_defaults(func=run)


def read_bandwidth(buffer_mib: int, repeats: int = 7, src: Any = None, dst: Any = None) -> dict[str, float]:
    """Bytes/s of streaming reads (a float32 sum) and of copies (read + write counted, as STREAM does). Pass
    ``src``/``dst`` (float32, same size) to probe again without faulting in fresh pages."""
    if src is None:
        src, dst = probe_buffers(buffer_mib)
    reads, copies = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        src.sum()
        reads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dst.copy_(src)
        copies.append(time.perf_counter() - t0)
    nbytes = src.numel() * src.element_size()
    return {"read_bytes_s": nbytes / min(reads), "copy_bytes_s": 2 * nbytes / min(copies),
            "buffer_bytes": nbytes}


def probe_buffers(buffer_mib: int) -> tuple[Any, Any]:
    """Two float32 buffers of ``buffer_mib`` MiB for ``read_bandwidth``, on huge pages like the weights decode
    streams (on 4 KiB pages a 2-core cloud VM read some buffers at two thirds of the rate of others: the probe
    would understate the machine)."""
    import torch

    from vila_ros.kernels import huge_pages

    shape = (buffer_mib * (1 << 20) // 4,)
    return huge_pages.empty(shape, torch.float32).fill_(1.0), huge_pages.empty(shape, torch.float32).fill_(1.0)


def bytes_per_token(llm: Any, kv_positions: float, cache_dtype: Any = None) -> dict[str, int]:
    """Bytes one decode step reads from memory: weights (an embedding contributes one row) and the KV cache (of
    ``cache_dtype``, default the embedding's: the decoder keeps fp32 caches for 16-bit models without our kernels)."""
    import torch

    from vila_ros.model.int4 import Int4Linear

    weights = 0
    embed = llm.get_input_embeddings()
    for module in llm.modules():
        if isinstance(module, Int4Linear):
            weights += module.resident_bytes()
        elif module is embed:
            weights += embed.weight.shape[1] * embed.weight.element_size()
        else:
            weights += sum(t.numel() * t.element_size() for t in module.parameters(recurse=False))
    cfg = llm.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_dtype_bytes = torch.finfo(cache_dtype or embed.weight.dtype).bits // 8
    kv = int(2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * kv_positions * kv_dtype_bytes)
    return {"weights": int(weights), "kv_cache": kv, "total": int(weights) + kv}


def llm_parameters(llm: Any) -> int:
    """Weights of the LLM, int4 ones included (an Int4Linear holds them as buffers, not parameters)."""
    from vila_ros.model.int4 import Int4Linear

    quantized = sum(m.in_features * m.out_features for m in llm.modules() if isinstance(m, Int4Linear))
    return quantized + sum(p.numel() for p in llm.parameters())


def run(args: argparse.Namespace) -> int:
    import torch

    from vila_ros.bench.common import cpu_kernels_status, decode_session, synthetic_prompt, write_report
    from vila_ros.engine.torch_engine import TorchEngine
    from vila_ros.model.checkpoint import load_vila
    from vila_ros.model.int4_checkpoint import load_quantized_vila, quantize_rtn

    if args.threads:
        torch.set_num_threads(args.threads)
    bandwidth = read_bandwidth(args.buffer_mib)
    engines = {}
    if not args.no_bf16:
        engines["bf16"] = TorchEngine(load_vila(args.model, dtype=torch.bfloat16), "bf16")
    if args.int4:
        int4_model, source = load_quantized_vila(args.int4), f"checkpoint {args.int4}"
    else:
        int4_model = load_vila(args.model, dtype=torch.bfloat16)
        quantize_rtn(int4_model.llm, args.group)
        source = f"RTN group {args.group} in memory"
    engines["int4"] = TorchEngine(int4_model, "int4")
    ids, features = synthetic_prompt(engines["int4"])
    n = args.new_tokens
    sessions = {name: decode_session(engine, ids, features, n) for name, engine in engines.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    # On a shared cloud VM memory bandwidth swings by up to 2x within seconds (neighbours on the host): every timed
    # decode is bracketed by probes, the one before it and the one after (which is the next decode's "before"), and its
    # fraction is taken against their mean.
    probes: dict[str, list[tuple[float, float]]] = {name: [] for name in sessions}
    src, dst = probe_buffers(args.buffer_mib)

    def probe(src: Any = src, dst: Any = dst) -> float:
        return read_bandwidth(args.buffer_mib, 3, src, dst)["read_bytes_s"]

    before = probe()
    for _ in range(args.repeats):  # alternate so background load hits every row alike
        for name, (timed_decode, _, _) in sessions.items():
            times[name].append(timed_decode())
            after = probe()
            probes[name].append((before, after))
            before = after
    del probe, src, dst
    prompt_positions = len(ids) - 1 + engines["int4"].tokens_per_image
    mean_kv_positions = prompt_positions + n / 2
    rows = {}
    for name, engine in engines.items():
        tok_s = (n - 1) / max(statistics.median(times[name]), 1e-9)
        per_token = bytes_per_token(engine.model.llm, mean_kv_positions, engine.decoder.cache_dtype)
        achieved = tok_s * per_token["total"]
        fractions = sorted((n - 1) * per_token["total"] / (t * (a + b) / 2) for t, (a, b) in zip(times[name],
                                                                                           probes[name]))
        rows[name] = {
            "decode_tok_s": round(tok_s, 3),
            "bytes_per_token": per_token,
            "achieved_bytes_s": round(achieved),
            "roofline_tok_s": round(bandwidth["read_bytes_s"] / per_token["total"], 3),
            "bandwidth_fraction": round(statistics.median(fractions), 3),
            "bandwidth_fraction_range": [round(fractions[0], 3), round(fractions[-1], 3)],
            "bandwidth_probes_read_bytes_s": [[round(a), round(b)] for a, b in probes[name]],  # before, after
            "timed_decode_s": [round(t, 6) for t in times[name]],  # each between its two probes
        }
    report = {
        "model": str(args.model),
        "int4_source": source,
        "llm_parameters": llm_parameters(engines["int4"].model.llm),
        "torch_threads": torch.get_num_threads(),
        "prompt_positions": prompt_positions,
        "new_tokens": n,
        "repeats": args.repeats,
        "bandwidth": {key: round(value) for key, value in bandwidth.items()},
        **rows,
        "cpu_kernels": cpu_kernels_status(),
        "versions": {"torch": torch.__version__},
    }
    gb = 1e9
    headline = {"read bandwidth (GB/s)": round(bandwidth["read_bytes_s"] / gb, 2)}
    for name, row in rows.items():
        headline[f"{name}: MB read per token"] = round(row["bytes_per_token"]["total"] / 1e6, 1)
        headline[f"{name}: decode tok/s (roofline)"] = f"{row['decode_tok_s']} ({row['roofline_tok_s']})"
        headline[f"{name}: fraction of bandwidth"] = row["bandwidth_fraction"]
    write_report(args.json, report, "vila-ros bench roofline: decode vs memory bandwidth", headline)
    return 0
