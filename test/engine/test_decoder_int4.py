"""The one-call int4 layer step of our decoder against the same decoder's per-op path, on a small random Llama whose
projections are int4 in our kernels' layout (sizes multiples of 128: no padding, the case the step takes)."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vila_ros import kernels
from vila_ros.engine.decoder import LlamaDecoder
from vila_ros.quant.int4 import Int4Linear, quantize_weight


@pytest.fixture
def int4_llm(monkeypatch):
    if kernels._missing_requirement():
        pytest.skip(f"our CPU kernels cannot run here: {kernels._missing_requirement()}")
    monkeypatch.setenv("VILA_ROS_CPU_KERNELS", "require")
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=256, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=300, max_position_embeddings=128)
    llm = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    for layer in llm.model.layers:
        for parent, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                              (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for name in names:
                q, scales, zeros = quantize_weight(getattr(parent, name).weight.float(), 128)
                setattr(parent, name, Int4Linear.from_quantized(q, scales.to(torch.bfloat16), zeros, 128).prepare())
    return llm


def test_int4_layer_step_equals_the_per_op_path(int4_llm):
    dec = LlamaDecoder(int4_llm)
    assert all(step is not None for step in dec._int4_steps)
    prompt = dec.embed(torch.tensor([[1, 17, 42, 99, 7]]))
    tokens = dec.embed(torch.tensor([[3, 250, 11, 64]]))

    def run(one_call: bool):
        steps = dec._int4_steps
        dec._int4_steps = steps if one_call else [None] * len(steps)
        try:
            cache = dec.new_cache(1, prompt.shape[1] + tokens.shape[1])
            logits = [dec.logits(dec.forward(prompt, cache)[:, -1])]
            for i in range(tokens.shape[1]):
                logits.append(dec.logits(dec.forward(tokens[:, i:i + 1], cache)[:, -1]))
        finally:
            dec._int4_steps = steps
        return torch.cat(logits), cache

    (one_call, cache_a), (per_op, cache_b) = run(True), run(False)
    assert torch.equal(one_call, per_op)
    assert all(torch.equal(a, b) for a, b in zip(cache_a.k + cache_a.v, cache_b.k + cache_b.v))
    assert float(one_call[1:].abs().max()) > 0



def test_heads_wider_than_the_attention_kernels_take_aten_paths(monkeypatch):
    """head_dim 288 > the kernels' 256: the decoder must not hand them such heads (they would refuse every step)."""
    if kernels._missing_requirement():
        pytest.skip(f"our CPU kernels cannot run here: {kernels._missing_requirement()}")
    monkeypatch.setenv("VILA_ROS_CPU_KERNELS", "require")
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=576, intermediate_size=256, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=50, max_position_embeddings=32)
    llm = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    dec = LlamaDecoder(llm)
    assert dec._kernels is None and not dec._fused_step
    ids = torch.tensor([[1, 5, 9, 2]])
    cache = dec.new_cache(1, 4)
    dec.forward(dec.embed(ids[:, :3]), cache)
    got = dec.logits(dec.forward(dec.embed(ids[:, 3:]), cache)[:, -1])
    with torch.no_grad():
        ref = llm(ids).logits[:, -1].float()
    assert torch.allclose(got, ref, atol=0.05 * float(ref.abs().max()))
