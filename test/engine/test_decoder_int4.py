"""Our decoder's kernel paths on small random Llamas: the one-call int4 layer step against the same decoder's
per-op path (sizes multiples of 128: unpadded int4, the case the step takes), and heads the kernels cannot take."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vila_ros.engine.decoder import LlamaDecoder
from vila_ros.engine.layer_steps import Bf16KernelStep
from vila_ros.model.int4_checkpoint import quantize_rtn


def random_bf16_llama(**config) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**config)).to(torch.bfloat16).eval()


def test_int4_layer_step_equals_the_per_op_path(our_kernels):
    llm = quantize_rtn(random_bf16_llama(
        hidden_size=256, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=300, max_position_embeddings=128))
    dec = LlamaDecoder(llm)
    assert dec.step_names == ["int4_layer_step"] * 2
    one_call_steps = dec.steps
    per_op_steps = [Bf16KernelStep(step.ops, layer, our_kernels) for step, layer in zip(dec.steps, dec.layers)]
    prompt = dec.embed(torch.tensor([[1, 17, 42, 99, 7]]))
    tokens = dec.embed(torch.tensor([[3, 250, 11, 64]]))

    def run(one_call: bool):
        dec.steps = one_call_steps if one_call else per_op_steps
        cache = dec.new_cache(1, prompt.shape[1] + tokens.shape[1])
        logits = [dec.logits(dec.forward(prompt, cache)[:, -1])]
        for i in range(tokens.shape[1]):
            logits.append(dec.logits(dec.forward(tokens[:, i:i + 1], cache)[:, -1]))
        return torch.cat(logits), cache

    (one_call, cache_a), (per_op, cache_b) = run(True), run(False)
    assert torch.equal(one_call, per_op)
    assert all(torch.equal(a, b) for a, b in zip(cache_a.k + cache_a.v, cache_b.k + cache_b.v))
    assert float(one_call[1:].abs().max()) > 0


def test_heads_wider_than_the_attention_kernels_take_aten_paths(our_kernels):
    """head_dim 288 > the kernels' 256: the decoder must not hand them such heads (they would refuse every step)."""
    llm = random_bf16_llama(hidden_size=576, intermediate_size=256, num_hidden_layers=1, num_attention_heads=2,
                            num_key_value_heads=2, vocab_size=50, max_position_embeddings=32)
    dec = LlamaDecoder(llm)
    assert dec._kernels is None and dec.step_names == ["aten"]
    ids = torch.tensor([[1, 5, 9, 2]])
    cache = dec.new_cache(1, 4)
    dec.forward(dec.embed(ids[:, :3]), cache)
    got = dec.logits(dec.forward(dec.embed(ids[:, 3:]), cache)[:, -1])
    with torch.no_grad():
        ref = llm(ids).logits[:, -1].float()
    assert torch.allclose(got, ref, atol=0.05 * float(ref.abs().max()))
