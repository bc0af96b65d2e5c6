"""``vila-ros bench decode``: our greedy decode loop vs HF ``generate`` on the same model and prompt, same run.

Both sides get the same spliced prompt embeddings (one synthetic frame + a question in the checkpoint's template)
and produce exactly ``--new-tokens`` tokens (no stop ids). Decode speed is measured as
(N - 1) / (t(N tokens) - t(1 token)): the difference removes prefill and setup from both sides alike; t(1 token)
is each side's time to first token from the prompt embeddings (prefill + the first greedy step).
Runs alternate between the two implementations so load from other processes hits both equally.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Callable


def add_parser(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser("decode", help="greedy decode tok/s: ours vs transformers generate")
    p.add_argument("--model", required=True, help="VILA1.5 checkpoint directory")
    p.add_argument("--json", required=True, help="output JSON file")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.set_defaults(func=run)


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    import transformers

    from vila_ros.bench.common import cpu_kernels_status, write_report
    from vila_ros.engine.torch_engine import PRECISIONS, TorchEngine
    from vila_ros.engine.types import GenerationConfig
    from vila_ros.model.checkpoint import load_vila

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_vila(args.model, dtype=PRECISIONS[args.precision], device=args.device)
    engine = TorchEngine(model, model_id=Path(args.model).resolve().name)
    size = model.config.image_size
    frame = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    features = engine.encode_frames([frame])
    config = GenerationConfig(max_new_tokens=args.new_tokens, use_prefix_cache=False)
    ids = engine.prompt_ids("Describe the scene in detail.", 1, config)
    embeds = engine.embed(ids, features)[None]
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0

    @torch.inference_mode()
    def ours(n: int) -> list[int]:
        logits, cache = engine.prefill(embeds, max_new_tokens=n)
        return engine.decode(cache, logits, GenerationConfig(max_new_tokens=n), stop_ids=(), stop_strings=()).token_ids

    @torch.inference_mode()
    def hf(n: int) -> list[int]:
        gen_config = transformers.GenerationConfig(
            max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=pad_id,
        )
        out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=gen_config)
        return out[0, -n:].tolist()

    n = args.new_tokens
    ours_ids, hf_ids = ours(n), hf(n)  # warm-up, and the outputs to compare
    t_ours_n, t_ours_1, t_hf_n, t_hf_1 = [], [], [], []
    for _ in range(args.repeats):  # alternate so background load affects both alike
        t_ours_n.append(_median_seconds(lambda: ours(n), 1))
        t_hf_n.append(_median_seconds(lambda: hf(n), 1))
        t_ours_1.append(_median_seconds(lambda: ours(1), 1))
        t_hf_1.append(_median_seconds(lambda: hf(1), 1))
    med = statistics.median

    def rate(tn: list[float], t1: list[float]) -> float:
        return (n - 1) / max(med(tn) - med(t1), 1e-9)

    ours_rate, hf_rate = rate(t_ours_n, t_ours_1), rate(t_hf_n, t_hf_1)
    eos = model.tokenizer.eos_token_id
    # HF's min_new_tokens suppresses EOS (it takes the runner-up there); ours only ignores it: compare up to it.
    first_eos = ours_ids.index(eos) if eos in ours_ids else len(ours_ids)
    report = {
        "model": engine.model_id,
        "llm_parameters": sum(p.numel() for p in model.llm.parameters()),
        "precision": args.precision,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "prompt_positions": int(embeds.shape[1]),
        "new_tokens": n,
        "ours": {"decode_tok_s": round(ours_rate, 2), "time_n_s": round(med(t_ours_n), 4),
                 "time_to_first_token_ms": round(med(t_ours_1) * 1000, 2)},
        "hf_generate": {"decode_tok_s": round(hf_rate, 2), "time_n_s": round(med(t_hf_n), 4),
                        "time_to_first_token_ms": round(med(t_hf_1) * 1000, 2)},
        "speedup": round(ours_rate / hf_rate, 3),
        "time_to_first_token_ratio": round(med(t_hf_1) / max(med(t_ours_1), 1e-9), 3),
        "tokens_match": ours_ids[:first_eos] == hf_ids[:first_eos],
        # 16-bit arithmetic in another order (our kernels vs aten's) can flip a near-tie argmax, and a random
        # checkpoint's logits are nearly all ties: how far the two agree says more than a yes/no there.
        "matching_leading_tokens": next((i for i, (a, b) in enumerate(zip(ours_ids[:first_eos], hf_ids)) if a != b),
                                        min(first_eos, len(hf_ids))),
        "cpu_kernels": cpu_kernels_status(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    write_report(args.json, report, "vila-ros bench decode: ours vs transformers generate", {
        "decode tok/s, ours / HF": f"{report['ours']['decode_tok_s']} / {report['hf_generate']['decode_tok_s']}",
        "decode speed-up": report["speedup"],
        "time to first token ms, ours / HF": f"{report['ours']['time_to_first_token_ms']} / "
                                             f"{report['hf_generate']['time_to_first_token_ms']}",
        "same tokens": f"{report['tokens_match']} ({report['matching_leading_tokens']} leading tokens agree)",
    })
    return 0
