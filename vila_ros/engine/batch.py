"""Several prompts through the torch engine as one batch: one weight stream per decode step for all rows.

Decode is memory-bound (every step streams all the LLM's weights), so B rows cost about what one does. Layout of
row b in the KV cache: [head | pad_b | tail_b]. The head is the prompt up to and including its last image slot
(system prompt, frames); when every row's head has the same length (the node's periodic jobs: same template, same
frame count) it is prefilled once per distinct head (rows asking different questions about the same frames share
it) and copied into each row, and its text part before the first image comes from the engine's prefix cache.
Tails (the question and the assistant turn) are left-padded so they end together; pads are masked out of
attention and RoPE positions continue from the head, so each row computes what generate() would for it alone.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from vila_ros.engine.decoder import KVCache
from vila_ros.engine.sampling import TextStream, mask_to, sample_next
from vila_ros.engine.types import GenerationConfig, GenerationResult, TokenCallback
from vila_ros.model.prompt import IMAGE_TOKEN_INDEX, text_prefix


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _head(ids: Sequence[int]) -> int:
    """Length of the ids up to and including the last image slot (0 without images)."""
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] == IMAGE_TOKEN_INDEX:
            return i + 1
    return 0


@torch.inference_mode()
def generate_batch(engine: Any, questions: Sequence[str], image_features: Sequence[Sequence[Any]],
                   config: GenerationConfig | None = None,
                   max_new_tokens: Sequence[int] | None = None,
                   on_token: Sequence[TokenCallback | None] | None = None,
                   output_regexes: Sequence[str | None] | None = None) -> list[GenerationResult]:
    """One result per question, each as generate() alone would give it (greedy: the same tokens). `max_new_tokens`:
    a limit per row (default: `config.max_new_tokens` for all); the batch runs until its longest row is done.
    `output_regexes`: an expression (or None) per row in place of `config.output_regex`.
    `on_token`: a callback per row (or None), called as generate() calls its own; True cancels that row only."""
    config = config or GenerationConfig()
    if len(questions) != len(image_features):
        raise ValueError("one list of images per question")
    bsz = len(questions)
    if bsz == 0:
        return []
    limits = [config.max_new_tokens] * bsz if max_new_tokens is None else [int(n) for n in max_new_tokens]
    if len(limits) != bsz:
        raise ValueError("one max_new_tokens per question")
    callbacks = [None] * bsz if on_token is None else list(on_token)
    if len(callbacks) != bsz:
        raise ValueError("one on_token callback (or None) per question")
    regexes = [config.output_regex] * bsz if output_regexes is None else list(output_regexes)
    if len(regexes) != bsz:
        raise ValueError("one output_regex (or None) per question")
    for regex in dict.fromkeys(regexes):  # a bad schema or expression is refused before any model work
        engine.schemas.check(config.json_schema, regex)
    tiled = [engine.tile_single_frame(q, items) for q, items in zip(questions, image_features)]  # as generate() does
    questions, image_features = [q for q, _ in tiled], [items for _, items in tiled]
    decoder, dev = engine.decoder, engine.decoder.device
    vision_ms = 0.0
    row_features = []
    for items in image_features:
        feats, v_ms = engine._features(items)
        vision_ms += v_ms
        row_features.append(feats)
    t0 = time.perf_counter()
    per_image = engine.tokens_per_image
    row_ids = [engine.prompt_ids(q, len(f), config) for q, f in zip(questions, row_features)]
    heads = [_head(ids) for ids in row_ids]
    images_in_head = [sum(1 for t in ids[:h] if t == IMAGE_TOKEN_INDEX) for ids, h in zip(row_ids, heads)]
    head_lengths = {h + n * (per_image - 1) for h, n in zip(heads, images_in_head)}
    shared = len(head_lengths) == 1 and heads[0] > 0
    if not shared:  # heads differ in length: every row is one left-padded tail
        heads, images_in_head = [0] * bsz, [0] * bsz
    head_len = head_lengths.pop() if shared else 0
    tails = [engine.embed(ids[h:], feats[n:])
             for ids, h, n, feats in zip(row_ids, heads, images_in_head, row_features)]
    lengths = torch.tensor([t.shape[0] for t in tails], device=dev)
    longest = int(lengths.max())
    cache = decoder.new_cache(bsz, engine._capacity(head_len + longest, max(limits)))
    cached = _prefill_heads(engine, cache, row_ids, heads, row_features, images_in_head, head_len, config)

    embeds = tails[0].new_zeros(bsz, longest, tails[0].shape[1])
    valid = torch.zeros(bsz, cache.capacity, dtype=torch.bool, device=dev)
    valid[:, :head_len] = True
    for b, tail in enumerate(tails):
        embeds[b, longest - tail.shape[0]:] = tail
        valid[b, head_len + longest - tail.shape[0]: head_len + longest] = True
    pad = longest - lengths
    positions = head_len + (torch.arange(longest, device=dev)[None] - pad[:, None]).clamp_min(0)
    slots = torch.arange(head_len + longest, device=dev)
    queries = head_len + torch.arange(longest, device=dev)
    # A pad query attends to itself only, so no row of the mask is empty (an empty row gives NaN).
    mask = ((slots[None] <= queries[:, None])[None] & valid[:, None, :head_len + longest]) | (
        slots[None] == queries[:, None])[None]
    logits, cache = engine.prefill(embeds, cache, positions=positions, mask=mask[:, None])
    prefill_ms = _ms(t0)

    stop_ids, stop_strings = engine._stops(config)
    generator = engine._generator(config)
    room = cache.capacity - cache.length + 1  # tokens the cache leaves room for
    guides = [engine.schemas.guide(config.json_schema, min(n, room), stop_ids, regex)
              for n, regex in zip(limits, regexes)]
    streams = [TextStream(engine.tokenizer, () if guide is not None else stop_strings) for guide in guides]
    out_ids: list[list[int]] = [[] for _ in range(bsz)]
    reasons: list[str | None] = [None] * bsz
    texts = [""] * bsz
    t1 = time.perf_counter()
    next_pos = head_len + lengths
    for step in range(max(limits)):
        if any(g is not None for g in guides):  # finished rows' tokens are ignored: any of theirs will do
            logits = torch.stack([row if g is None else mask_to(row, g.allowed() if r is None and len(o) < n else [0])
                                  for row, g, r, o, n in zip(logits, guides, reasons, out_ids, limits)])
        tokens = sample_next(logits, config.temperature, config.top_p, generator)
        for b, token in enumerate(tokens.tolist()):
            if reasons[b] is not None or len(out_ids[b]) >= limits[b]:
                continue
            out_ids[b].append(token)
            if token in stop_ids:
                reasons[b] = "stop_token"
                delta = streams[b].finish()
                texts[b] += delta
                if callbacks[b] is not None:
                    callbacks[b](token, delta)
                continue
            delta = streams[b].push(token)
            texts[b] += delta
            if callbacks[b] is not None and callbacks[b](token, delta):
                reasons[b] = "cancelled"
            elif guides[b] is not None and guides[b].advance(token):
                reasons[b] = "schema_complete"
            elif streams[b].stopped:
                reasons[b] = "stop_string"
        if all(r is not None or len(o) >= n for r, o, n in zip(reasons, out_ids, limits)):
            break
        if cache.length >= cache.capacity:
            for b in range(bsz):
                if reasons[b] is None and len(out_ids[b]) < limits[b]:
                    reasons[b] = "context_full"
            break
        valid[:, cache.length] = True
        logits = engine.decode_step(tokens, cache, step + 1, positions=next_pos[:, None],
                                    mask=valid[:, None, None, : cache.length + 1])
        next_pos += 1
    decode_ms = _ms(t1)
    results = []
    for b in range(bsz):
        reason = reasons[b] or "max_new_tokens"
        if reason in ("max_new_tokens", "context_full", "schema_complete"):
            tail = streams[b].finish()
            texts[b] += tail
            if tail and callbacks[b] is not None:
                callbacks[b](-1, tail)  # flush of held-back text, as generate() does
        results.append(GenerationResult(
            text=texts[b], token_ids=out_ids[b], vision_ms=vision_ms, prefill_ms=prefill_ms, decode_ms=decode_ms,
            stop_reason=reason, prompt_tokens=head_len + int(lengths[b]), cached_prefix_tokens=cached,
        ))
    return results


def _prefill_heads(engine: Any, cache: KVCache, row_ids: list[list[int]], heads: list[int],
                   row_features: list[list[torch.Tensor]], images_in_head: list[int], head_len: int,
                   config: GenerationConfig) -> int:
    """Prefill each distinct head once and copy it into its rows' positions [0, head_len) -> prefix-cache hits."""
    if head_len == 0:
        return 0
    decoder = engine.decoder
    groups: dict[tuple, int] = {}
    firsts: list[int] = []
    row_group = []
    for b, (ids, h, n) in enumerate(zip(row_ids, heads, images_in_head)):
        # Same ids and the very same feature tensors: the same head (a window's features are cached objects).
        key = (tuple(ids[:h]), tuple(id(f) for f in row_features[b][:n]))
        if key not in groups:
            groups[key] = len(firsts)
            firsts.append(b)
        row_group.append(groups[key])
    head_embeds = torch.stack([engine.embed(row_ids[b][:heads[b]], row_features[b][:images_in_head[b]])
                               for b in firsts])
    head = KVCache(len(decoder.layers), len(firsts), decoder.num_kv_heads, head_len, decoder.head_dim,
                   decoder.cache_dtype, decoder.device)
    prefixes = {text_prefix(row_ids[b]) for b in firsts}
    prefix = prefixes.pop() if config.use_prefix_cache and len(prefixes) == 1 else ()
    cached = 0
    if prefix:
        snapshot = engine._prefix_cache.get(prefix)
        if snapshot is not None:
            engine._prefix_cache.move_to_end(prefix)
            head.restore(snapshot)  # [1, ...] broadcast over the distinct heads
            cached = len(prefix)
        else:
            decoder.forward(head_embeds[:, : len(prefix)], head)
            n = len(prefix)
            engine._prefix_cache[prefix] = ([k[:1, :, :n].clone() for k in head.k],
                                            [v[:1, :, :n].clone() for v in head.v])
            while len(engine._prefix_cache) > engine.prefix_cache_size:
                engine._prefix_cache.popitem(last=False)
    decoder.forward(head_embeds[:, head.length:], head)
    index = torch.tensor(row_group, device=decoder.device)
    for dst, src in zip(cache.k + cache.v, head.k + head.v):
        dst[:, :, :head_len].copy_(src.index_select(0, index))
    cache.length = head_len
    return cached
