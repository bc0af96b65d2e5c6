"""The int4 checkpoint format (vila_ros.model.int4_checkpoint) written and read back by the model layer alone, and
loading any model, int4 included, without the offline quantization tool (``vila_ros.quant``): checked in a fresh
interpreter."""
import subprocess
import sys
import textwrap

import pytest
import torch

GROUP = 64  # tiny's linears have 64 or 128 inputs

RUN = textwrap.dedent("""
    import sys

    import numpy as np

    from vila_ros.engine import GenerationConfig, create_engine
    from vila_ros.model.int4 import Int4Linear

    float_dir, int4_dir = sys.argv[1:]
    frame = np.zeros((32, 32, 3), np.uint8)
    for model_dir, precision in ((float_dir, "fp32"), (float_dir, "bf16"), (int4_dir, "int4")):
        engine = create_engine(model_dir, precision=precision)
        assert any(isinstance(m, Int4Linear) for m in engine.model.llm.modules()) == (precision == "int4")
        assert engine.generate("Describe.", [frame], GenerationConfig(max_new_tokens=3)).token_ids
    quant = sorted(name for name in sys.modules if name == "vila_ros.quant" or name.startswith("vila_ros.quant."))
    assert not quant, quant
    print("ok")
""")


def rtn_tensors(model):
    from vila_ros.model.int4 import quantize_weight
    from vila_ros.model.int4_checkpoint import linear_names

    qtensors = {}
    for name in linear_names(model.llm):
        q, scales, zeros = quantize_weight(model.llm.get_submodule(name).weight.detach().float(), GROUP)
        qtensors[name] = (q, scales.to(torch.bfloat16), zeros)
    return qtensors


@pytest.fixture(scope="module")
def rtn_checkpoint(tiny_dir, tmp_path_factory):
    """(directory, int4 tensors written): round-to-nearest of the tiny model, written with the format API alone."""
    from vila_ros.model.checkpoint import load_vila
    from vila_ros.model.int4_checkpoint import save_quantized

    model = load_vila(tiny_dir)
    qtensors = rtn_tensors(model)
    out = save_quantized(model, qtensors, tmp_path_factory.mktemp("int4") / "rtn",
                         {"method": "rtn", "group_size": GROUP, "scheme": "asym"})
    return out, qtensors


def test_round_trip_keeps_the_int4_tensors(rtn_checkpoint):
    from vila_ros.model.int4 import Int4Linear, unpack_nibbles
    from vila_ros.model.int4_checkpoint import FORMAT, load_quantized_vila, quant_config_of

    int4_dir, qtensors = rtn_checkpoint
    qc = quant_config_of(int4_dir)
    assert qc["format"] == FORMAT and qc["group_size"] == GROUP and qc["zero_point"] is True
    model = load_quantized_vila(int4_dir, prepare=False)
    assert model.llm.get_input_embeddings().weight.dtype == torch.bfloat16
    for name, (q, scales, zeros) in qtensors.items():
        module = model.llm.get_submodule(name)
        assert isinstance(module, Int4Linear) and module.group_size == GROUP
        assert torch.equal(unpack_nibbles(module.qweight, module.in_features), q)
        assert torch.equal(module.scales, scales) and torch.equal(module.zeros, zeros)


def test_float_checkpoint_is_refused_with_advice(tiny_dir):
    from vila_ros.model.int4_checkpoint import NotQuantizedError, load_quantized_vila, quant_config_of

    assert quant_config_of(tiny_dir) is None
    with pytest.raises(NotQuantizedError, match="vila-ros quantize"):
        load_quantized_vila(tiny_dir)


def test_loading_any_model_does_not_import_quant(tiny_dir, rtn_checkpoint):
    int4_dir = rtn_checkpoint[0]
    proc = subprocess.run([sys.executable, "-c", RUN, str(tiny_dir), str(int4_dir)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
