"""Cross-checks against nvidia-modelopt (test extra: skipped where it is not installed).

1. Our AWQ (sym, group 64) against ModelOpt's INT4_AWQ (awq_lite, block 64) on the same model and calibration:
   held-out logit error of each fake-quantized LLM against fp32; ours must be in the same range and both must beat
   round-to-nearest.
2. Our TensorRT-LLM checkpoint has exactly the tensor names, dtypes and shapes ModelOpt's exporter writes for the
   same model (the layout trtllm-build reads).
"""
import copy
import json

import pytest
import torch

mtq = pytest.importorskip("modelopt.torch.quantization")

GROUP = 64


@pytest.fixture(scope="module")
def setup(outlier_dir, heldout):
    from vila_ros.model.checkpoint import load_vila
    from vila_ros.quant.calib import embed_samples, load_samples

    model = load_vila(outlier_dir)
    calib = embed_samples(model, load_samples("sim", 3, model, split="train", offset=500_000, num_frames=2))
    test = embed_samples(model, heldout)
    return model, calib, test


def _mse(llm, ref_llm, embeds):
    with torch.inference_mode():
        return sum(float((llm(inputs_embeds=e).logits - ref_llm(inputs_embeds=e).logits).pow(2).mean())
                   for e in embeds) / len(embeds)


def _modelopt_awq(llm, calib):
    cfg = copy.deepcopy(mtq.INT4_AWQ_CFG)
    entries = cfg["quant_cfg"]
    for e in (entries if isinstance(entries, list) else []):
        if e.get("quantizer_name") == "*weight_quantizer":
            e["cfg"]["block_sizes"] = {-1: GROUP, "type": "static"}
    if isinstance(entries, dict):
        entries["*weight_quantizer"]["block_sizes"] = {-1: GROUP, "type": "static"}

    def loop(model):
        for e in calib:
            model(inputs_embeds=e)

    return mtq.quantize(llm, cfg, loop)


@pytest.fixture(scope="module")
def modelopt_llm(setup):
    model, calib, _ = setup
    return _modelopt_awq(copy.deepcopy(model.llm).eval(), calib)


def test_our_awq_matches_modelopt_awq(setup, modelopt_llm):
    from vila_ros.quant.awq import QuantSpec, fake_quantize_llm, quantize_llm

    model, calib, test = setup
    errors = {"modelopt_awq": _mse(modelopt_llm, model.llm, test)}
    for method in ("awq", "rtn"):
        llm = copy.deepcopy(model.llm)
        q, _ = quantize_llm(llm, calib, QuantSpec(method=method, group_size=GROUP, scheme="sym", grid=10,
                                                  max_tokens=256, clip=False))
        fake_quantize_llm(llm, q, GROUP)
        errors[f"ours_{method}"] = _mse(llm, model.llm, test)
    print(errors)
    assert errors["ours_awq"] < 0.5 * errors["ours_rtn"], errors
    assert errors["modelopt_awq"] < errors["ours_rtn"], errors
    assert errors["ours_awq"] <= 1.5 * errors["modelopt_awq"], errors


def test_trtllm_layout_matches_modelopt_export(modelopt_llm, awq_sym_dir, tmp_path):
    from safetensors import safe_open

    from vila_ros.quant.trtllm import export_llm

    export = pytest.importorskip("modelopt.torch.export")
    export.export_tensorrt_llm_checkpoint(modelopt_llm, "llama", torch.float16, export_dir=str(tmp_path / "mo"),
                                          inference_tensor_parallel=1)
    export_llm(awq_sym_dir, tmp_path / "ours")

    def layout(d):
        with safe_open(str(d / "rank0.safetensors"), "pt") as f:
            return {k: (f.get_tensor(k).dtype, tuple(f.get_tensor(k).shape)) for k in f.keys()}

    theirs, ours = layout(tmp_path / "mo"), layout(tmp_path / "ours" / "llm_ckpt")
    assert ours == theirs
    cfg_t = json.loads((tmp_path / "mo" / "config.json").read_text())
    cfg_o = json.loads((tmp_path / "ours" / "llm_ckpt" / "config.json").read_text())
    for key in ("architecture", "dtype", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "hidden_size", "head_size", "intermediate_size", "vocab_size", "hidden_act",
                "position_embedding_type"):
        assert cfg_o[key] == cfg_t[key], key
    for key in ("quant_algo", "group_size", "has_zero_point", "pre_quant_scale", "exclude_modules"):
        assert cfg_o["quantization"][key] == cfg_t["quantization"][key], key
