"""AWQ against round-to-nearest, the int4 checkpoint format, and the int4 torch engine."""
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from vila_ros.engine import GenerationConfig, create_engine
from vila_ros.model.int4_checkpoint import linear_names
from vila_ros.quant.awq import QuantSpec, quantize_llm

GROUP = 64  # test/quant/conftest.py GROUP


def _linear_dequantized_engine(int4_dir):
    """Reference: the int4 checkpoint's weights dequantized into plain bf16 nn.Linear modules."""
    from vila_ros.engine.torch_engine import TorchEngine
    from vila_ros.model.int4_checkpoint import load_quantized_vila

    model = load_quantized_vila(int4_dir, prepare=False)
    for name in linear_names(model.llm):
        parent_name, child = name.rsplit(".", 1)
        parent = model.llm.get_submodule(parent_name)
        q = getattr(parent, child)
        lin = torch.nn.Linear(q.in_features, q.out_features, bias=False, dtype=torch.bfloat16)
        lin.weight.data.copy_(q.dequantized())
        setattr(parent, child, lin)
    return TorchEngine(model.eval(), "dequantized")


def test_awq_beats_rtn_on_heldout_logits(outlier_dir, awq_dir, rtn_dir, heldout):
    from vila_ros.quant.evaluate import evaluate

    engines = {"fp32": create_engine(outlier_dir), "bf16": create_engine(outlier_dir, precision="bf16"),
               "rtn": create_engine(rtn_dir, precision="int4"), "awq": create_engine(awq_dir, precision="int4")}
    result = evaluate(engines, heldout, reference="fp32")["engines"]
    assert result["awq"]["logit_mse"] < 0.5 * result["rtn"]["logit_mse"], result
    # Fidelity to fp32, not NLL: this model is random (perplexity ~400), so which quantization error happens to move
    # probability towards the caption tokens is noise (it flipped when the simulator's captions changed).
    assert result["awq"]["top1_agreement"] > result["rtn"]["top1_agreement"], result
    assert result["bf16"]["logit_mse"] < result["awq"]["logit_mse"], result


def test_scale_folding_keeps_the_float_function(outlier_dir, heldout):
    """quantize_llm folds 1/s into norms and linears: before rounding, the model computes the same logits."""
    from vila_ros.model.checkpoint import load_vila
    from vila_ros.quant.calib import embed_samples

    model = load_vila(outlier_dir)
    embeds = embed_samples(model, heldout[:2])
    with torch.inference_mode():
        before = [model.llm(inputs_embeds=e).logits for e in embeds]
    _, report = quantize_llm(model.llm, embeds, QuantSpec(group_size=GROUP, clip=False, grid=10))
    with torch.inference_mode():
        after = [model.llm(inputs_embeds=e).logits for e in embeds]
    for a, b in zip(before, after):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    for entry in report["layers"]:
        for key in ("qkv", "gate_up", "down"):
            assert entry[key]["loss"] <= entry[key]["rtn_loss"]  # alpha 0 (= RTN) is in the grid
        assert entry["o"]["alpha"] is None  # GQA: v's outputs are not o's inputs one to one
    assert any(entry["qkv"]["alpha"] > 0.5 for entry in report["layers"])  # the 16x channels are found


def test_checkpoint_format(awq_dir):
    cfg = json.loads((awq_dir / "llm" / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["format"] == "vila_ros_int4/v1" and qc["method"] == "awq" and qc["bits"] == 4
    assert qc["group_size"] == GROUP and qc["scheme"] == "asym" and qc["zero_point"] is True
    assert qc["calibration"]["source"] == "sim" and qc["calibration"]["samples"] == 3
    root_cfg = json.loads((awq_dir / "config.json").read_text())
    assert root_cfg["llm_cfg"]["quantization_config"]["format"] == "vila_ros_int4/v1"
    assert root_cfg["model_dtype"] == "torch.bfloat16"
    index = json.loads((awq_dir / "llm" / "model.safetensors.index.json").read_text())["weight_map"]
    with safe_open(str(awq_dir / "llm" / index["model.layers.0.mlp.down_proj.qweight"]), "pt") as f:
        keys = set(f.keys())
        assert "model.layers.0.mlp.down_proj.weight" not in keys
        qweight = f.get_tensor("model.layers.0.mlp.down_proj.qweight")
        scales = f.get_tensor("model.layers.0.mlp.down_proj.scales")
        zeros = f.get_tensor("model.layers.0.mlp.down_proj.zeros")
        assert qweight.dtype == torch.uint8 and qweight.shape == (64, 64)  # down: 128 inputs -> 64 bytes
        assert scales.dtype == torch.bfloat16 and scales.shape == (64, 2)
        assert zeros.dtype == torch.uint8 and zeros.shape == (64, 2) and int(zeros.max()) <= 15
        for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                     "model.layers.0.input_layernorm.weight"):
            assert f.get_tensor(name).dtype == torch.bfloat16
    with safe_open(str(awq_dir / "vision_tower" / "model.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in list(f.keys())[:5])


def test_int4_engine_close_to_dequantized_reference(awq_dir, heldout):
    from vila_ros.quant.evaluate import sequence_logits

    int4 = create_engine(awq_dir, precision="int4")
    ref = _linear_dequantized_engine(awq_dir)
    assert type(int4.model.llm.model.layers[0].mlp.up_proj).__name__ == "Int4Linear"
    for sample in heldout[:2]:
        a, b = sequence_logits(int4, sample), sequence_logits(ref, sample)
        assert float((a - b).abs().max()) <= 0.05 * float(b.abs().max()) + 0.05
        assert float((a.argmax(-1) == b.argmax(-1)).float().mean()) >= 0.9
    frames = [np.random.default_rng(3).integers(0, 256, (56, 56, 3), dtype=np.uint8)]
    cfg = GenerationConfig(max_new_tokens=6)
    got, want = int4.generate("Describe.", frames, cfg), ref.generate("Describe.", frames, cfg)
    assert got.token_ids[:2] == want.token_ids[:2]
    assert got.stop_reason in ("max_new_tokens", "stop_token", "stop_string")


def test_precision_errors(tiny_dir, awq_dir):
    from vila_ros.model.int4_checkpoint import NotQuantizedError

    with pytest.raises(NotQuantizedError, match="vila-ros quantize"):
        create_engine(tiny_dir, precision="int4")
    with pytest.raises(ValueError, match="precision='int4'"):
        create_engine(awq_dir, precision="bf16")
    with pytest.raises(ValueError, match="calibration"):
        quantize_llm(torch.nn.Module(), None, QuantSpec(method="awq"))
    with pytest.raises(ValueError, match="method"):
        QuantSpec(method="gptq")


def test_quantize_cli_rtn_and_refuses_quantized_input(outlier_dir, awq_dir, tmp_path, capsys):
    import shutil

    from vila_ros.cli import main

    source = tmp_path / "float"  # with the files the node reads beside the weights: the int4 copy keeps them
    shutil.copytree(outlier_dir, source)
    (source / "alert_thresholds.json").write_text('{"red_light": 0.4}')
    (source / "description_regex.txt").write_text("[ ]?(yes|no)\n")
    out = tmp_path / "cli_rtn"
    assert main(["quantize", "--model", str(source), "--out", str(out), "--method", "rtn",
                 "--group", "32"]) == 0
    for name in ("alert_thresholds.json", "description_regex.txt"):
        assert (out / name).read_bytes() == (source / name).read_bytes()
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["method"] == "rtn" and printed["group_size"] == 32
    engine = create_engine(out, precision="int4")
    assert engine.model.llm.model.layers[1].self_attn.k_proj.group_size == 32
    with pytest.raises(ValueError, match="already quantized"):
        main(["quantize", "--model", str(awq_dir), "--out", str(tmp_path / "again")])
