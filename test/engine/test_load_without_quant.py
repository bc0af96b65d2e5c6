"""Loading and running a model, int4 included, never imports the offline quantization tool (``vila_ros.quant``):
the int4 runtime and checkpoint format live in ``vila_ros.model``. Checked in a fresh interpreter."""
import subprocess
import sys
import textwrap

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


def write_rtn_checkpoint(src, out):
    """Round-to-nearest int4 checkpoint written with the model layer's format API alone."""
    from vila_ros.model.checkpoint import load_vila
    from vila_ros.model.int4 import quantize_weight
    from vila_ros.model.int4_checkpoint import linear_names, save_quantized

    model = load_vila(src)
    qtensors = {}
    for name in linear_names(model.llm):
        q, scales, zeros = quantize_weight(model.llm.get_submodule(name).weight.detach().float(), GROUP)
        qtensors[name] = (q, scales.to(torch.bfloat16), zeros)
    return save_quantized(model, qtensors, out, {"method": "rtn", "group_size": GROUP, "scheme": "asym"})


def test_loading_any_model_does_not_import_quant(tiny_dir, tmp_path):
    int4_dir = write_rtn_checkpoint(tiny_dir, tmp_path / "int4")
    proc = subprocess.run([sys.executable, "-c", RUN, str(tiny_dir), str(int4_dir)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
