"""The engine's public steps (embed_prompt / embed, prefill, decode_step, decode) compose to what generate() returns,
on the session's tiny checkpoint."""
import pytest
import torch

from vila_ros.engine import GenerationConfig, PromptTooLongError
from vila_ros.model.prompt import IMAGE_TOKEN_INDEX


def test_steps_compose_to_generate(tiny_engine, frames):
    feats = tiny_engine.encode_frames(frames[:2])
    config = GenerationConfig(max_new_tokens=10, use_prefix_cache=False)
    ids, embeds = tiny_engine.embed_prompt("What happens here?", feats, config)
    assert ids.count(IMAGE_TOKEN_INDEX) == 2
    assert embeds.shape[0] == len(ids) - 2 + 2 * tiny_engine.tokens_per_image
    logits, cache = tiny_engine.prefill(embeds[None], max_new_tokens=config.max_new_tokens)
    assert cache.length == embeds.shape[0] and logits.shape == (1, tiny_engine.model.llm.config.vocab_size)
    decoded = tiny_engine.decode(cache, logits, config)
    expected = tiny_engine.generate("What happens here?", feats, config)
    assert decoded == (expected.token_ids, expected.stop_reason, expected.text)


def test_decode_steps_by_hand_equal_decode_without_stops(tiny_engine, frames):
    feats = tiny_engine.encode_frames(frames[:1])
    config = GenerationConfig(max_new_tokens=8)
    _, embeds = tiny_engine.embed_prompt("Describe.", feats, config)
    logits, cache = tiny_engine.prefill(embeds[None], max_new_tokens=8)
    snapshot = cache.snapshot(cache.length)
    decoded = tiny_engine.decode(cache, logits, config, stop_ids=(), stop_strings=())
    assert decoded.stop_reason == "max_new_tokens" and len(decoded.token_ids) == 8  # no stop: exactly N tokens

    by_hand = []
    with torch.inference_mode():  # the cache prefill made is an inference tensor
        cache.restore(snapshot)
        for step in range(8):
            token = logits.argmax(-1)
            by_hand.append(int(token[0]))
            if step < 7:
                logits = tiny_engine.decode_step(token, cache, step + 1)
    assert by_hand == decoded.token_ids


def test_prefill_refuses_a_prompt_that_fills_the_context(tiny_engine):
    decoder = tiny_engine.decoder
    embeds = torch.zeros(1, decoder.max_positions, tiny_engine.model.llm.config.hidden_size, dtype=decoder.dtype)
    with pytest.raises(PromptTooLongError):
        tiny_engine.prefill(embeds)
