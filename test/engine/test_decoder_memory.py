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
