"""Where the decoder keeps what a decode step streams: CPU weights of 2 MiB or more and the KV cache on huge pages
(vila_ros.kernels.huge_pages), without changing a single logit or untying tied weights."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vila_ros.engine.decoder import LlamaDecoder
from vila_ros.kernels.huge_pages import HUGE_PAGE_BYTES


def test_big_weights_move_to_huge_pages_with_the_same_logits_and_ties():
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=4, vocab_size=4096,
                                       max_position_embeddings=1024, tie_word_embeddings=True)).eval()
    ids = torch.tensor([[5, 77, 1023, 9, 4000]])
    with torch.inference_mode():
        before = llm(ids).logits
    head = llm.lm_head.weight  # 4096 x 256 fp32: 4 MiB, tied to the embedding
    small = llm.model.layers[0].mlp.up_proj.weight  # 512 KiB: stays where it is
    small_ptr = small.data_ptr()
    dec = LlamaDecoder(llm)
    assert llm.lm_head.weight is head and llm.model.embed_tokens.weight is head
    assert head.data_ptr() % HUGE_PAGE_BYTES == 0
    assert small.data_ptr() == small_ptr
    with torch.inference_mode():
        assert torch.equal(llm(ids).logits, before)
        cache = dec.new_cache(1, 600)  # 2 x 2 layers x 4 heads x 600 x 64 fp32: 4.7 MiB
        hidden = dec.forward(dec.embed(ids), cache)
        assert torch.allclose(dec.logits(hidden[:, -1]), before[:, -1], atol=1e-4, rtol=1e-4)
    assert all(k.is_contiguous() and v.is_contiguous() for k, v in zip(cache.k, cache.v))
    assert cache.k[0].data_ptr() % HUGE_PAGE_BYTES == 0  # one buffer for every layer's keys and values


def test_caches_share_the_decoders_buffer_only_one_at_a_time():
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=2, vocab_size=64,
                                       max_position_embeddings=64)).eval()
    dec = LlamaDecoder(llm)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        first = dec.new_cache(1, 8)
        second = dec.new_cache(1, 8)  # the first still lives: a cache of its own, no shared rows
        assert second.k[0].data_ptr() != first.k[0].data_ptr()
        hidden = dec.forward(dec.embed(ids), first)
        dec.forward(dec.embed(torch.tensor([[9, 9, 9, 9]])), second)
        again = dec.forward(dec.embed(ids), dec.new_cache(1, 8))  # the second still lives too
        assert torch.equal(hidden, again)
        address = first.k[0].data_ptr()
        del first
        reused = dec.new_cache(1, 6)  # the buffer is free again: lent to the next cache
        assert reused.k[0].data_ptr() == address
        assert torch.equal(dec.forward(dec.embed(ids), reused), hidden)
