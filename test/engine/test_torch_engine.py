"""The torch engine against plain transformers computations, on a real tiny checkpoint."""
import pytest
import torch

from vila_ros.engine import GenerationConfig, create_engine
from vila_ros.model.prompt import IMAGE_TOKEN_INDEX, build_prompt_ids


def reference_greedy(model, question, frames, n, stop_id):
    """Independent greedy decode: HF SiglipVisionModel hidden_states + projector + embedding splice by torch.cat,
    then argmax over LlamaForCausalLM logits of the whole sequence at every step (no KV cache)."""
    with torch.no_grad():
        px = model.preprocess(frames)
        hidden = model.vision_tower.model(px, output_hidden_states=True).hidden_states[-2]
        feats = model.mm_projector(hidden)
        ids = build_prompt_ids(question, len(frames), model.tokenizer, "vicuna_v1")
        emb = model.llm.get_input_embeddings()
        parts, run, k = [], [], 0
        for t in ids + [None]:
            if t is None or t == IMAGE_TOKEN_INDEX:
                if run:
                    parts.append(emb(torch.tensor(run)))
                    run = []
                if t is not None:
                    parts.append(feats[k])
                    k += 1
            else:
                run.append(t)
        x = torch.cat(parts)[None]
        out = []
        for _ in range(n):
            nxt = int(model.llm(inputs_embeds=x).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == stop_id:
                break
            x = torch.cat([x, emb(torch.tensor([[nxt]]))], dim=1)
    return out


def test_greedy_equals_plain_transformers(tiny_engine, frames):
    model = tiny_engine.model
    ref = reference_greedy(model, "What happens here?", frames[:2], 12, model.tokenizer.eos_token_id)
    got = tiny_engine.generate("What happens here?", tiny_engine.encode_frames(frames[:2]),
                               GenerationConfig(max_new_tokens=12, use_prefix_cache=False))
    assert got.token_ids == ref
    # raw frames are accepted too and encoded inside generate (timed as vision time)
    raw = tiny_engine.generate("What happens here?", frames[:2], GenerationConfig(max_new_tokens=12))
    assert raw.token_ids == ref and raw.vision_ms > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decoder_logits_match_transformers_step_by_step(tiny_engine, frames, kernel, dtype):
    """Our KV-cache forward (chunked prefill at an offset, then single-token steps) against HF's full-sequence
    forward: same logits at every position, so a RoPE/mask/cache bug cannot hide behind a lucky argmax. On both
    one-token attention paths (aten's SDPA, our kernel) and in bf16 (where they keep different caches)."""
    import copy

    from vila_ros.engine.decoder import LlamaDecoder

    feats = tiny_engine.encode_frames(frames[:2])
    ids = tiny_engine.prompt_ids("Describe.", 2, GenerationConfig())
    x = tiny_engine.embed(ids, feats)[None]
    extra = tiny_engine.decoder.embed(torch.tensor([[5, 77, 300, 12]]))
    full = torch.cat([x, extra], dim=1)
    with torch.no_grad():
        ref = tiny_engine.model.llm(inputs_embeds=full).logits[0]
    dec = LlamaDecoder(copy.deepcopy(tiny_engine.model.llm).to(dtype))
    assert (dec._kernels is not None) == (kernel == "vila_ros")
    full, extra = full.to(dtype), extra.to(dtype)
    cache = dec.new_cache(1, full.shape[1])
    split = 9
    dec.forward(full[:, :split], cache)
    got = [dec.logits(dec.forward(full[:, split:x.shape[1]], cache))[0]]
    for i in range(extra.shape[1]):
        got.append(dec.logits(dec.forward(extra[:, i:i + 1], cache))[0])
    got = torch.cat(got)
    tolerance = 1e-4 if dtype == torch.float32 else 0.05 * float(ref.abs().max())  # bf16 weights and activations
    assert torch.allclose(got, ref[split:], atol=tolerance), (got - ref[split:]).abs().max()


def test_fused_bf16_layer_step_equals_the_general_path(tiny_engine, frames, our_kernels):
    """bf16 one-token steps through our layer-step kernels against the same decoder's aten ops: identical KV caches
    and logits but for fp32 sums taken in another order inside attention."""
    import copy

    from vila_ros.engine.decoder import LlamaDecoder
    from vila_ros.engine.layer_steps import AtenStep

    feats = tiny_engine.encode_frames(frames[:2])
    x = tiny_engine.embed(tiny_engine.prompt_ids("Describe.", 2, GenerationConfig()), feats)[None]
    dec = LlamaDecoder(copy.deepcopy(tiny_engine.model.llm).to(torch.bfloat16))
    assert set(dec.step_names) == {"bf16_kernels"}
    kernel_steps, aten_steps = dec.steps, [AtenStep(step.ops) for step in dec.steps]
    steps = dec.embed(torch.tensor([[5, 77, 300, 12, 9, 41]]))

    def run(fused: bool):
        dec.steps = kernel_steps if fused else aten_steps
        cache = dec.new_cache(1, x.shape[1] + steps.shape[1])
        logits = [dec.logits(dec.forward(x.to(torch.bfloat16), cache)[:, -1])]
        for i in range(steps.shape[1]):
            logits.append(dec.logits(dec.forward(steps[:, i:i + 1], cache)[:, -1]))
        return torch.cat(logits), cache

    (fused, fused_cache), (general, general_cache) = run(True), run(False)
    assert not torch.equal(fused[1:], torch.zeros_like(fused[1:]))
    n = fused_cache.length
    assert all(torch.allclose(a[:, :, :n].float(), b[:, :, :n].float(), atol=0.02, rtol=0.02)
               for a, b in zip(fused_cache.k + fused_cache.v, general_cache.k + general_cache.v))
    assert torch.allclose(fused, general, atol=0.005 * float(general.abs().max())), (fused - general).abs().max()


def test_fused_fp32_layer_step_equals_the_general_path(tiny_engine, frames, our_kernels):
    """fp32 one-token steps through one f32_layer_step call per layer against the same decoder's aten ops: the same
    KV caches and logits to fp32 rounding (sums in another order)."""
    import copy

    from vila_ros.engine.decoder import LlamaDecoder
    from vila_ros.engine.layer_steps import AtenStep

    feats = tiny_engine.encode_frames(frames[:2])
    x = tiny_engine.embed(tiny_engine.prompt_ids("Describe.", 2, GenerationConfig()), feats)[None]
    dec = LlamaDecoder(copy.deepcopy(tiny_engine.model.llm).float())
    assert set(dec.step_names) == {"f32_layer_step"}
    kernel_steps, aten_steps = dec.steps, [AtenStep(step.ops) for step in dec.steps]
    steps = dec.embed(torch.tensor([[5, 77, 300, 12, 9, 41]]))

    def run(fused: bool):
        dec.steps = kernel_steps if fused else aten_steps
        cache = dec.new_cache(1, x.shape[1] + steps.shape[1])
        logits = [dec.logits(dec.forward(x.float(), cache)[:, -1])]
        for i in range(steps.shape[1]):
            logits.append(dec.logits(dec.forward(steps[:, i:i + 1], cache)[:, -1]))
        return torch.cat(logits), [t.clone() for t in cache.k + cache.v], cache.length

    (fused, fused_kv, n), (general, general_kv, _) = run(True), run(False)
    assert all(torch.allclose(a[:, :, :n], b[:, :, :n], atol=1e-5, rtol=1e-5) for a, b in zip(fused_kv, general_kv))
    assert torch.allclose(fused, general, atol=1e-4, rtol=1e-4), (fused - general).abs().max()


def prefill_logits(engine, question, feats):
    cfg = GenerationConfig()
    ids = engine.prompt_ids(question, len(feats), cfg)
    return engine.prefill(engine.embed(ids, feats)[None])[0][0]


def test_image_order_matters(tiny_engine, frames):
    a, b = tiny_engine.encode_frames(frames[:2])
    ab, ba = prefill_logits(tiny_engine, "q", [a, b]), prefill_logits(tiny_engine, "q", [b, a])
    assert (ab - ba).abs().max() > 1e-3
    assert torch.allclose(ab, prefill_logits(tiny_engine, "q", [a, b]))


def test_sampling_is_reproducible_with_a_seed(tiny_engine, frames):
    feats = tiny_engine.encode_frames(frames[:1])

    def run(seed):
        config = GenerationConfig(max_new_tokens=16, temperature=1.5, seed=seed)
        return tiny_engine.generate("Describe.", feats, config).token_ids

    assert run(1) == run(1)
    assert run(1) != run(2)
    greedy = tiny_engine.generate("Describe.", feats, GenerationConfig(max_new_tokens=16)).token_ids
    nucleus = tiny_engine.generate("Describe.", feats, GenerationConfig(
        max_new_tokens=16, temperature=1.0, top_p=1e-6, seed=3)).token_ids
    assert nucleus == greedy  # top_p ~ 0 keeps only the most likely token


def test_stop_strings_ids_and_streaming(tiny_engine, frames):
    feats = tiny_engine.encode_frames(frames[:1])
    full = tiny_engine.generate("Describe.", feats, GenerationConfig(max_new_tokens=24))
    assert full.stop_reason == "max_new_tokens" and len(full.token_ids) == 24
    text = full.text
    stop = text[len(text) // 2: len(text) // 2 + 2]
    assert len(stop) == 2
    pieces = []
    cut = tiny_engine.generate("Describe.", feats, GenerationConfig(max_new_tokens=24, stop_strings=[stop]),
                               on_token=lambda tid, piece: pieces.append(piece))
    assert cut.stop_reason == "stop_string"
    assert cut.text == text[: text.index(stop)]
    assert "".join(pieces) == cut.text
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)]

    stop_id = full.token_ids[5]
    first = full.token_ids.index(stop_id)
    by_id = tiny_engine.generate("Describe.", feats, GenerationConfig(max_new_tokens=24, stop_token_ids=[stop_id]))
    assert by_id.stop_reason == "stop_token" and by_id.token_ids == full.token_ids[: first + 1]

    streamed = []
    tiny_engine.generate("Describe.", feats, GenerationConfig(max_new_tokens=24),
                         on_token=lambda tid, piece: streamed.append(piece))
    assert "".join(streamed) == text
    calls = []
    cancelled = tiny_engine.generate("Describe.", feats, GenerationConfig(max_new_tokens=24),
                                     on_token=lambda tid, piece: calls.append(tid) or len(calls) >= 3)
    assert cancelled.stop_reason == "cancelled" and len(cancelled.token_ids) == 3


def test_prefix_cache_equals_no_cache_and_is_not_mutated(tiny_dir, frames):
    engine = create_engine(tiny_dir)
    feats = engine.encode_frames(frames[:2])
    # seeded sampling at temperature 1 makes the output depend on the exact logits, not just on their argmax
    cfg = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=5,
                           system_prompt="You watch a warehouse robot camera. Be brief.")
    off = GenerationConfig(**{**cfg.__dict__, "use_prefix_cache": False})
    first = engine.generate("Describe.", feats, cfg)
    assert first.cached_prefix_tokens == 0 and first.token_ids == engine.generate("Describe.", feats, off).token_ids
    (key, snapshot), = engine._prefix_cache.items()
    saved = [k.clone() for k in snapshot[0]]
    # another system prompt in between: its KV now sits in recently freed memory
    other = engine.generate("Describe.", feats, GenerationConfig(max_new_tokens=12, system_prompt="Other words here."))
    assert other.cached_prefix_tokens == 0 and len(engine._prefix_cache) == 2
    for question in ("Is the path blocked?", "Describe."):
        hit = engine.generate(question, feats[::-1], cfg)
        assert hit.cached_prefix_tokens == len(key) > 10
        assert hit.token_ids == engine.generate(question, feats[::-1], off).token_ids
    assert all(torch.equal(a, b) for a, b in zip(saved, engine._prefix_cache[key][0]))


def test_batch_equals_individual(tiny_engine, frames):
    feats = tiny_engine.encode_frames(frames)
    questions = ["Describe.", "Is there a person in the image? Answer yes or no.", "What?"]
    images = [feats[:2], feats[2:3], feats[1:4]]
    cfg = GenerationConfig(max_new_tokens=10, use_prefix_cache=False)
    batch = tiny_engine.generate_batch(questions, images, cfg)
    for q, imgs, got in zip(questions, images, batch):
        single = tiny_engine.generate(q, imgs, cfg)
        assert got.token_ids == single.token_ids
        assert got.text == single.text and got.stop_reason == single.stop_reason


def test_batch_streams_each_row_through_its_own_callback_and_cancels_one_row_alone(tiny_engine, frames):
    feats = tiny_engine.encode_frames(frames[:3])
    questions, images = ["Describe.", "What?", "Describe."], [feats[:2], feats[2:3], feats[1:3]]
    cfg = GenerationConfig(max_new_tokens=10, use_prefix_cache=False)
    pieces: list[list[str]] = [[], [], []]

    def keep(row):
        def on_token(_token_id, text):
            pieces[row].append(text)
            return row == 1 and len(pieces[row]) == 2  # the second row cancels after two tokens
        return on_token

    batch = tiny_engine.generate_batch(questions, images, cfg, on_token=[keep(0), keep(1), None])
    for row in (0, 2):
        single = tiny_engine.generate(questions[row], images[row], cfg)
        assert batch[row].token_ids == single.token_ids and batch[row].text == single.text
    assert "".join(pieces[0]) == batch[0].text and pieces[2] == []
    assert batch[1].stop_reason == "cancelled" and len(batch[1].token_ids) == 2
    assert "".join(pieces[1]) == batch[1].text
    with pytest.raises(ValueError, match="callback"):
        tiny_engine.generate_batch(questions, images, cfg, on_token=[None])


def test_interface_and_errors(tiny_engine, tiny_dir, frames):
    assert tiny_engine.model_id == tiny_dir.name
    assert tiny_engine.num_video_frames == 4 and tiny_engine.tokens_per_image == 4
    feats = tiny_engine.encode_frames(frames[:3])
    assert [tuple(f.shape) for f in feats] == [(4, 64)] * 3
    with pytest.raises(Exception, match="vila-ros quantize"):
        create_engine(tiny_dir, precision="int4")  # a float checkpoint: quantize it first
    with pytest.raises(RuntimeError, match="GPU"):
        create_engine(tiny_dir, engine="tensorrt_llm")
    with pytest.raises(ValueError):
        create_engine(tiny_dir, engine="onnx")
    with pytest.raises(ValueError, match="placeholders"):
        tiny_engine.generate("<image> only one", feats[:2])
    bf16 = create_engine(tiny_dir, precision="bf16")
    assert bf16.encode_frames(frames[:1])[0].dtype == torch.bfloat16
    assert len(bf16.generate("Describe.", frames[:1], GenerationConfig(max_new_tokens=4)).token_ids) <= 4


def test_batch_shares_heads_and_prefix_cache_and_equals_individual(tiny_dir, frames):
    """The node's period: two cameras, each asked two questions about the same frames, with per-row limits; the
    shared head prefill and the prefix cache give each row what generate() alone gives."""
    engine = create_engine(tiny_dir)
    feats = engine.encode_frames(frames)
    first, second = feats[:2], feats[2:4]
    questions = ["Describe.", "Is there a person in the image? Answer yes or no.", "Describe.", "What?"]
    images = [first, first, second, second]
    limits = [12, 3, 12, 0]
    cfg = GenerationConfig(max_new_tokens=12, system_prompt="You watch a warehouse robot camera. Be brief.")
    cached = []
    for _ in range(2):  # a prefix-cache miss, then a hit
        batch = engine.generate_batch(questions, images, cfg, max_new_tokens=limits)
        cached.append({got.cached_prefix_tokens for got in batch})
        for q, imgs, limit, got in zip(questions, images, limits, batch):
            single = engine.generate(q, imgs, GenerationConfig(**{**cfg.__dict__, "max_new_tokens": limit}))
            assert got.token_ids == single.token_ids and len(got.token_ids) <= limit
            assert got.text == single.text and got.stop_reason == single.stop_reason
            assert got.prompt_tokens == single.prompt_tokens
    assert cached[0] == {0} and len(cached[1]) == 1 and cached[1].pop() > 10
    # Heads of different lengths (one frame against two): every row a left-padded tail, same answers.
    mixed = engine.generate_batch(["Describe.", "Describe."], [feats[:1], second], cfg)
    for imgs, got in zip([feats[:1], second], mixed):
        assert got.token_ids == engine.generate("Describe.", imgs, cfg).token_ids
