"""``vila-ros bench window``: one sliding-window description stage by stage, and what reusing the keys and values
of the frames still in the window would save and change.

Frames come from a simulated stream at the node's clip rate (4 fps), so consecutive windows overlap as the node's
do. Timed, for one description of ``--frames`` frames (greedy, ``--new-tokens`` tokens, no stop ids): vision for
the whole window (a window's first description) and for its newest frame alone (what the node pays per description:
it keeps every frame's features), the embedding splice, prefill of the whole prompt, decode.

Reuse: window k+1 shares frames 1..N-1 of window k. Their keys and values were computed at other positions (RoPE,
exactly undoable for keys) and after a frame that has left the window (causal attention: from layer 1 on every
token has read it; no undoing that). So reuse is an approximation. Measured: per layer, the relative change of
the shared frames' values between the two exact prefills; the prefill time if those frames' KV were taken over
(shifted by RoPE) and only the newest frame and the question prefilled; and, over ``--windows`` sliding windows,
how often the greedy answer of that approximate cache equals the exact one.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from vila_ros import tasks


def add_parser(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser("window", help="one sliding-window description: vision, prefill, decode; "
                                                   "what KV reuse across windows would save and change")
    p.add_argument("--model", required=True, help="VILA1.5 checkpoint directory (float; see --precision)")
    p.add_argument("--json", required=True, help="output JSON file")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int4"),
                   help="int4: round-to-nearest of --model's LLM in memory, or --int4")
    p.add_argument("--int4", help="an int4 checkpoint (vila-ros quantize) instead of RTN in memory")
    p.add_argument("--frames", type=int, default=0, help="window (default: the model's num_video_frames)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--windows", type=int, default=8, help="sliding windows for the reuse agreement (0 = skip)")
    p.add_argument("--repeats", type=int, default=2, help="timed descriptions (median)")
    p.add_argument("--family", default="road", choices=("road", "warehouse"))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.set_defaults(func=run)


def _engine(args: argparse.Namespace) -> Any:
    import torch

    from vila_ros.engine.torch_engine import TorchEngine
    from vila_ros.model.checkpoint import load_vila
    from vila_ros.model.int4_checkpoint import quantize_rtn

    if args.int4:
        return TorchEngine.from_dir(args.int4, precision="int4")
    if args.precision == "int4":
        model = load_vila(args.model, dtype=torch.bfloat16)
        quantize_rtn(model.llm, 128)
        return TorchEngine(model, "int4-rtn")
    return TorchEngine.from_dir(args.model, precision=args.precision)


def _slot_starts(engine: Any, ids: list[int]) -> list[int]:
    """Embedding positions where each image slot's features begin."""
    from vila_ros.model.prompt import IMAGE_TOKEN_INDEX

    slots = [i for i, tok in enumerate(ids) if tok == IMAGE_TOKEN_INDEX]
    return [index + n * (engine.tokens_per_image - 1) for n, index in enumerate(slots)]


def _shift_keys(keys: Any, cos: Any, sin: Any) -> Any:
    """Keys rotated back by the position offset whose RoPE tables are (cos, sin)."""
    from vila_ros.model.llama_math import rotate_half

    return keys * cos - rotate_half(keys) * sin


class Window:
    """One description's prompt over given frame features: exact prefill, and prefill over a cache built from the
    previous window's (approximate reuse)."""

    def __init__(self, engine: Any, features: list[Any], new_tokens: int):
        from vila_ros.engine.types import GenerationConfig
        from vila_ros.tasks import DESCRIBE_PROMPT

        self.engine, self.features = engine, features
        self.config = GenerationConfig(max_new_tokens=new_tokens, use_prefix_cache=False)
        self.ids, embeds = engine.embed_prompt(DESCRIBE_PROMPT, features, self.config)
        self.starts = _slot_starts(engine, self.ids)
        self.embeds = embeds[None]

    def prefill(self) -> tuple[Any, Any, float]:
        t0 = time.perf_counter()
        logits, cache = self.engine.prefill(self.embeds, max_new_tokens=self.config.max_new_tokens)
        return logits, cache, time.perf_counter() - t0

    def decode(self, cache: Any, logits: Any) -> tuple[list[int], float]:
        t0 = time.perf_counter()
        tokens = self.engine.decode(cache, logits, self.config, stop_ids=(), stop_strings=()).token_ids
        return tokens, time.perf_counter() - t0

    def prefill_reusing(self, previous: "Window", previous_cache: Any) -> tuple[Any, Any, float, float]:
        """The previous window's KV with its first frame dropped and the frames after it shifted back by RoPE,
        then only what follows them (the newest frame and the question) prefilled -> (logits, cache, copy
        seconds, prefill seconds). The copy is timed apart: a node would shift in place within one buffer."""
        import torch

        engine, tokens = self.engine, self.engine.tokens_per_image
        head = self.starts[0]  # system text and template before the first image: identical in both windows
        shared_from, shared_to = previous.starts[1], previous.starts[-1] + tokens
        keep = head + (shared_to - shared_from)  # the current window's shared frames end here
        cache = engine.decoder.new_cache(1, self.embeds.shape[1] + self.config.max_new_tokens)
        cos_t, sin_t = engine.decoder._rope_tables(shared_to)
        shift = shared_from - head
        cos, sin = cos_t[shift], sin_t[shift]
        t0 = time.perf_counter()
        with torch.inference_mode():
            for dst_k, dst_v, src_k, src_v in zip(cache.k, cache.v, previous_cache.k, previous_cache.v):
                dst_k[:, :, :head] = src_k[:, :, :head]
                dst_v[:, :, :head] = src_v[:, :, :head]
                shifted = _shift_keys(src_k[:, :, shared_from:shared_to].float(), cos.float(), sin.float())
                dst_k[:, :, head:keep] = shifted.to(dst_k.dtype)
                dst_v[:, :, head:keep] = src_v[:, :, shared_from:shared_to]
            cache.length = keep
            copy_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            logits, cache = engine.prefill(self.embeds[:, keep:], cache=cache)
        return logits, cache, copy_s, time.perf_counter() - t0


def _value_change(previous: Window, prev_cache: Any, current: Window, cache: Any) -> list[float]:
    """Per layer: ||V_now - V_before|| / ||V_before|| over the tokens of the frames both windows hold."""
    tokens = previous.engine.tokens_per_image
    a0, a1 = previous.starts[1], previous.starts[-1] + tokens
    b0 = current.starts[0]
    b1 = b0 + (a1 - a0)
    out = []
    for v_before, v_now in zip(prev_cache.v, cache.v):
        before, now = v_before[:, :, a0:a1].float(), v_now[:, :, b0:b1].float()
        out.append(round(float((now - before).norm() / before.norm().clamp_min(1e-12)), 5))
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from vila_ros.bench.common import cpu_kernels_status, write_report
    from vila_ros.sim.streams import make_stream

    if args.threads:
        torch.set_num_threads(args.threads)
    engine = _engine(args)
    n = args.frames or engine.num_video_frames
    size = engine.model.config.image_size
    windows = max(args.windows, 1)
    stream = make_stream("stream_test", 0, args.family, (n + windows + 1) / tasks.CLIP_FPS)
    frames = [stream.render(i / tasks.CLIP_FPS, size, size) for i in range(n + windows)]

    warm = Window(engine, engine.encode_frames(frames[:1]), 2)
    warm_logits, warm_cache, _ = warm.prefill()
    warm.decode(warm_cache, warm_logits)
    del warm_cache
    vision_window, vision_newest, prefill, decode, reuse_prefill, reuse_copy = [], [], [], [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        features = engine.encode_frames(frames[:n])
        vision_window.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        engine.encode_frames(frames[n:n + 1])
        vision_newest.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        window = Window(engine, features, args.new_tokens)
        splice_s = time.perf_counter() - t0
        logits, cache, seconds = window.prefill()
        prefill.append(seconds)
        tokens, seconds = window.decode(cache, logits)
        decode.append(seconds)

    all_features = engine.encode_frames(frames)
    previous = Window(engine, all_features[:n], args.new_tokens)
    prev_logits, prev_cache, _ = previous.prefill()
    value_change: list[float] = []
    agree = 0
    for k in range(1, args.windows + 1):
        current = Window(engine, all_features[k:k + n], args.new_tokens)
        logits, cache, _ = current.prefill()
        approx_logits, approx_cache, copy_s, seconds = current.prefill_reusing(previous, prev_cache)
        reuse_copy.append(copy_s)
        reuse_prefill.append(seconds)
        if k == 1:
            value_change = _value_change(previous, prev_cache, current, cache)
        exact_tokens, _ = current.decode(cache, logits)
        approx_tokens, _ = current.decode(approx_cache, approx_logits)
        agree += exact_tokens == approx_tokens
        # decoding wrote only past the prompt: the prompt's KV is still the exact one the next window reuses
        previous, prev_cache = current, cache
        del approx_cache

    med = statistics.median  # seconds to the microsecond: a tiny model's newest frame takes well under 1 ms
    total_first = med(vision_window) + splice_s + med(prefill) + med(decode)
    total_steady = med(vision_newest) + splice_s + med(prefill) + med(decode)
    report = {
        "model": str(args.int4 or args.model), "precision": "int4" if args.int4 else args.precision,
        "frames": n, "tokens_per_image": engine.tokens_per_image, "prompt_positions": int(window.embeds.shape[1]),
        "new_tokens": len(tokens), "torch_threads": torch.get_num_threads(),
        "seconds": {"vision_window": round(med(vision_window), 6), "vision_newest_frame": round(med(vision_newest), 6),
                    "splice": round(splice_s, 6), "prefill": round(med(prefill), 6), "decode": round(med(decode), 6),
                    "total_first_description": round(total_first, 6),
                    "total_sliding_description": round(total_steady, 6)},
        "share_of_sliding_description": {
            "vision": round(med(vision_newest) / total_steady, 3), "prefill": round(med(prefill) / total_steady, 3),
            "decode": round(med(decode) / total_steady, 3)},
        "decode_tok_s": round((len(tokens) - 1) / max(med(decode), 1e-9), 3),
        "kv_reuse": {
            "value_change_per_layer": value_change,
            "prefill_s_reusing_shared_frames": round(med(reuse_prefill), 6) if reuse_prefill else None,
            "kv_copy_s": round(med(reuse_copy), 6) if reuse_copy else None,
            "prefill_saved": round(1 - med(reuse_prefill) / med(prefill), 3) if reuse_prefill else None,
            "windows": args.windows, "greedy_answers_equal": agree,
        },
        "cpu_kernels": cpu_kernels_status(),
        "versions": {"torch": torch.__version__},
    }
    write_report(args.json, report, "vila-ros bench window: one sliding-window description", {
        "sliding description s (vision newest / prefill / decode)":
            f"{total_steady:.2f} ({med(vision_newest):.2f} / {med(prefill):.2f} / {med(decode):.2f})",
        "prefill reusing shared frames' KV s": report["kv_reuse"]["prefill_s_reusing_shared_frames"],
        "approximate reuse: greedy answers equal": f"{agree} of {args.windows}",
    })
    return 0
