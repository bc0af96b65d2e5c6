"""export-trtllm: an independent dequantizing reader of rank0.safetensors reproduces our int4 logits; the vision
ONNX matches torch; the build commands carry the multimodal length; errors are clear."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from vila_ros.engine import create_engine


def read_trtllm_checkpoint(ckpt_dir) -> tuple[LlamaForCausalLM, dict]:
    """Written from the layout documented in engines/README.md only: int8 bytes holding signed int4 of two
    output rows (low nibble row 2r, high nibble row 2r+1), fp32 scales [out, in/G], optional zero [in/G, out],
    prequant scale applied to the inputs; qkv fused; mlp.fc = gate_proj, mlp.gate = up_proj, mlp.proj = down_proj."""
    cfg = json.loads((ckpt_dir / "config.json").read_text())
    qc = cfg["quantization"]
    assert cfg["architecture"] == "LlamaForCausalLM" and cfg["dtype"] == "float16"
    assert qc["quant_algo"] == "W4A16_AWQ"
    g = qc["group_size"]
    w = load_file(str(ckpt_dir / "rank0.safetensors"))

    def dequant(prefix):
        packed = w[prefix + ".weight"]
        assert packed.dtype == torch.int8
        b = packed.view(torch.uint8).to(torch.int32)
        lo, hi = b & 15, b >> 4
        rows = torch.empty(packed.shape[0] * 2, packed.shape[1], dtype=torch.int32)
        rows[0::2], rows[1::2] = lo, hi
        signed = torch.where(rows > 7, rows - 16, rows).float()
        scale = w[prefix + ".weights_scaling_factor"].float()
        deq = signed * scale.repeat_interleave(g, dim=1)
        if qc["has_zero_point"]:
            deq = deq + w[prefix + ".zero"].float().t().repeat_interleave(g, dim=1)
        return deq * w[prefix + ".prequant_scaling_factor"].float()[None]

    hf = LlamaConfig(hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
                     num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
                     num_key_value_heads=cfg["num_key_value_heads"], head_dim=cfg["head_size"],
                     vocab_size=cfg["vocab_size"], rms_norm_eps=cfg["norm_epsilon"],
                     rope_theta=cfg["rotary_base"], max_position_embeddings=cfg["max_position_embeddings"],
                     tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
    model = LlamaForCausalLM(hf).eval()
    q_rows = cfg["num_attention_heads"] * cfg["head_size"]
    kv_rows = cfg["num_key_value_heads"] * cfg["head_size"]
    state = {"model.embed_tokens.weight": w["transformer.vocab_embedding.weight"],
             "model.norm.weight": w["transformer.ln_f.weight"], "lm_head.weight": w["lm_head.weight"]}
    for i in range(cfg["num_hidden_layers"]):
        t, m = f"transformer.layers.{i}", f"model.layers.{i}"
        q, k, v = dequant(f"{t}.attention.qkv").split([q_rows, kv_rows, kv_rows])
        state.update({
            f"{m}.input_layernorm.weight": w[f"{t}.input_layernorm.weight"],
            f"{m}.post_attention_layernorm.weight": w[f"{t}.post_layernorm.weight"],
            f"{m}.self_attn.q_proj.weight": q, f"{m}.self_attn.k_proj.weight": k, f"{m}.self_attn.v_proj.weight": v,
            f"{m}.self_attn.o_proj.weight": dequant(f"{t}.attention.dense"),
            f"{m}.mlp.gate_proj.weight": dequant(f"{t}.mlp.fc"),
            f"{m}.mlp.up_proj.weight": dequant(f"{t}.mlp.gate"),
            f"{m}.mlp.down_proj.weight": dequant(f"{t}.mlp.proj"),
        })
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    return model, cfg


@pytest.fixture(scope="module")
def exported(awq_dir, tmp_path_factory):
    from vila_ros.quant.trtllm import export_trtllm

    out = tmp_path_factory.mktemp("trt") / "awq"
    return out, export_trtllm(awq_dir, out)


@pytest.mark.parametrize("which", ["asym", "sym"])
def test_reader_reproduces_int4_logits(which, awq_dir, awq_sym_dir, exported, heldout, tmp_path):
    from vila_ros.model.prompt import IMAGE_TOKEN_INDEX
    from vila_ros.quant.evaluate import sequence_logits
    from vila_ros.quant.trtllm import export_llm

    if which == "asym":
        src, ckpt = awq_dir, exported[0] / "llm_ckpt"
    else:
        src = awq_sym_dir
        ckpt = tmp_path / "llm_ckpt"
        export_llm(src, tmp_path)
    reader, cfg = read_trtllm_checkpoint(ckpt)
    assert cfg["quantization"]["has_zero_point"] is (which == "asym")
    engine = create_engine(src, precision="int4")
    for sample in heldout[:2]:
        ours = sequence_logits(engine, sample)
        # the reader embeds text with its own table and splices the image features as TensorRT-LLM's prompt table
        feats = iter(engine.encode_frames(sample.frames))
        pieces = [next(feats).float() if t == IMAGE_TOKEN_INDEX else reader.model.embed_tokens.weight[t][None]
                  for t in sample.ids]
        with torch.inference_mode():
            theirs = reader(inputs_embeds=torch.cat(pieces)[None]).logits[0, :, : ours.shape[1]]
        assert float((theirs - ours).abs().max()) <= 0.03 * float(theirs.abs().max()) + 0.02
        assert float((theirs.argmax(-1) == ours.argmax(-1)).float().mean()) >= 0.9


def test_vision_onnx_and_build_commands(exported, awq_dir):
    out, report = exported
    assert report["vision"]["max_abs_error"] < 1e-4 and report["vision"]["opset"] == 17
    assert report["vision"]["output_shape"] == [2, 4, 64]
    frames, tokens = 4, 4  # tiny: 4 frames x 4 visual tokens
    assert report["build"]["max_multimodal_len"] == frames * tokens
    script = (out / "build_engines.sh").read_text()
    assert f"--max_multimodal_len {frames * tokens}" in script and "trtllm-build --checkpoint_dir llm_ckpt" in script
    assert "trtexec --onnx=vision/vision.onnx" in script and "maxShapes=pixels:4x3x56x56" in script
    assert (out / "tokenizer" / "tokenizer.json").is_file() and (out / "vila_config.json").is_file()
    assert report["prompt_table_offset"] == 384


def test_export_errors(tiny_dir, tmp_path, outlier_dir):
    from vila_ros.quant.pipeline import quantize_checkpoint
    from vila_ros.quant.trtllm import ExportError, export_llm

    with pytest.raises(ExportError, match="vila-ros quantize"):
        export_llm(tiny_dir, tmp_path / "a")
    q32 = quantize_checkpoint(outlier_dir, tmp_path / "g32", method="rtn", group_size=32)["out"]
    with pytest.raises(ExportError, match="group size 32"):
        export_llm(q32, tmp_path / "b")


def test_tensorrt_llm_engine_names_what_is_missing(exported):
    from vila_ros.engine.tensorrt_llm_engine import TensorRTLLMUnavailable

    with pytest.raises(TensorRTLLMUnavailable, match="'tensorrt_llm'.*GPU/Jetson"):
        create_engine(exported[0], engine="tensorrt_llm")
    assert isinstance(TensorRTLLMUnavailable("x"), RuntimeError)


def test_intermediate_size_padded_to_whole_groups(tmp_path, heldout):
    """default-small's intermediate size 688 is no multiple of 128: the export pads it with zero channels and the
    reader still reproduces the int4 engine."""
    from vila_ros.model.presets import init_model
    from vila_ros.quant.evaluate import sequence_logits
    from vila_ros.quant.pipeline import quantize_checkpoint
    from vila_ros.quant.trtllm import export_llm

    src = init_model("default-small", tmp_path / "ds", seed=1)
    quantize_checkpoint(src, tmp_path / "ds_rtn", method="rtn", group_size=128)
    report = export_llm(tmp_path / "ds_rtn", tmp_path / "out")
    assert (report["intermediate_size"], report["intermediate_size_padded"]) == (688, 768)
    reader, cfg = read_trtllm_checkpoint(tmp_path / "out" / "llm_ckpt")
    assert cfg["intermediate_size"] == 768
    engine = create_engine(tmp_path / "ds_rtn", precision="int4")
    ids = engine.tokenizer("a truck on the road at night").input_ids
    ours = sequence_logits(engine, type(heldout[0])(ids, [], 1))
    with torch.inference_mode():
        theirs = reader(torch.tensor([ids])).logits[0, :, : ours.shape[1]]
    assert float((theirs - ours).abs().max()) <= 0.03 * float(theirs.abs().max()) + 0.02
