"""Quantized checkpoints of the session's tiny model (test/conftest.py), written once per session.

``outlier_dir``: the tiny model with a few input channels of every norm scaled up 16x and the matching weight
columns scaled down 16x: the same function, but with the salient-channel structure of real LLMs (large activations
meeting small weights) where round-to-nearest loses what AWQ keeps.
"""
import pytest

GROUP = 64  # tiny's linears have 64 or 128 inputs; 64 is also a TensorRT-LLM group size
CALIB = dict(samples=3, num_frames=2, grid=10, max_tokens=256)


def add_outlier_channels(model, channels=(3, 17, 40, 51), factor=16.0):
    import torch

    with torch.no_grad():
        for layer in model.llm.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            for c in channels:
                layer.input_layernorm.weight[c] *= factor
                layer.post_attention_layernorm.weight[c] *= factor
                for lin in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
                    lin.weight[:, c] /= factor
    return model


@pytest.fixture(scope="session")
def outlier_dir(tiny_dir, tmp_path_factory):
    from vila_ros.model.checkpoint import load_vila, save_vila

    model = add_outlier_channels(load_vila(tiny_dir))
    return save_vila(model, tmp_path_factory.mktemp("quant") / "outlier")


def _quantize(src, out, **kw):
    from vila_ros.quant.pipeline import quantize_checkpoint

    args = dict(CALIB, group_size=GROUP)
    args.update(kw)
    quantize_checkpoint(src, out, **args)
    return out


@pytest.fixture(scope="session")
def awq_dir(outlier_dir, tmp_path_factory):
    return _quantize(outlier_dir, tmp_path_factory.mktemp("quant") / "awq", method="awq")


@pytest.fixture(scope="session")
def rtn_dir(outlier_dir, tmp_path_factory):
    return _quantize(outlier_dir, tmp_path_factory.mktemp("quant") / "rtn", method="rtn")


@pytest.fixture(scope="session")
def awq_sym_dir(outlier_dir, tmp_path_factory):
    return _quantize(outlier_dir, tmp_path_factory.mktemp("quant") / "awq_sym", method="awq", scheme="sym")


@pytest.fixture(scope="session")
def heldout(outlier_dir):
    """Held-out (test split) caption samples for the tiny model."""
    from vila_ros.model.checkpoint import load_vila
    from vila_ros.quant.calib import sim_samples

    model = load_vila(outlier_dir)
    return sim_samples(3, model.tokenizer, model.conv_template, model.config.image_size, 2, split="test",
                       kinds=("caption",))
