"""``vila-ros convert-awq``: a TinyChat / llm-awq v2 checkpoint, packed here from llm-awq's documented layout (not
its code), converts to the int4 format and decodes what llm-awq's dequantized weights decode."""
import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from vila_ros.engine import GenerationConfig, create_engine
from vila_ros.model.checkpoint import CorruptCheckpointError, PickleRefusedError, load_vila, save_vila
from vila_ros.model.int4 import unpack_nibbles
from vila_ros.model.int4_checkpoint import linear_names, load_quantized_vila
from vila_ros.quant.tinychat import unpack_v2

GROUP = 64  # the tiny model's linears have 64 or 128 inputs; llm-awq supports 32, 64 and 128


def awq_pack_v2(q: torch.Tensor) -> torch.Tensor:
    """int values [N, K] -> int16 [N/4, K] as llm-awq's v2 WQLinear stores them (pack_intweight, interleave 4,
    kstride 64): per 32 columns pairs strided by 8, per 8 evens first, then 4 rows x 64 columns row after row, four
    values per int16 from the lowest nibble."""
    n, k = q.shape
    x = q.to(torch.int32).reshape(n, k // 32, 4, 4, 2).transpose(2, 3).reshape(n, k // 32, 32)
    x = x.reshape(n, k // 8, 4, 2).transpose(2, 3).reshape(n, k)
    x = x.reshape(n // 4, 4, k // 64, 64).permute(0, 2, 1, 3).reshape(n // 4, k // 64, 64, 4)
    word = x[..., 0] | (x[..., 1] << 4) | (x[..., 2] << 8) | (x[..., 3] << 12)
    word = torch.where(word >= 1 << 15, word - (1 << 16), word)
    return word.reshape(n // 4, k).to(torch.int16)


def awq_quantize(w: torch.Tensor, group: int, scale_bits: int = 0):
    """llm-awq's zero-point quantization of an fp16 model: scale (max - min) / 15 per group (min <= 0 <= max not
    forced), zero = -round(min / scale) in 0..15; the stored tensors are fp16. ``scale_bits``: keep only that many
    significant bits of each scale (7: every fp16 tensor of the file is exact in bf16 and scale * zero exact in fp16,
    so the converted weights must equal llm-awq's bit for bit)."""
    n, k = w.shape
    wg = w.half().float().reshape(n, k // group, group)
    wmax, wmin = wg.amax(-1), wg.amin(-1)
    scales = (wmax - wmin).clamp(min=1e-5) / 15
    if scale_bits:
        mantissa, exponent = torch.frexp(scales)
        scales = torch.ldexp(torch.round(mantissa * 2**scale_bits) / 2**scale_bits, exponent)
    scales = scales.half()
    zeros = (-torch.round(wmin / scales.float())).clamp(0, 15)
    q = torch.clamp(torch.round(wg / scales.float()[..., None]) + zeros[..., None], 0, 15).reshape(n, k)
    scaled_zeros = (-(scales.float() * zeros)).half()
    return q.to(torch.int32), scales, zeros, scaled_zeros


def padded(t: torch.Tensor, rows: int) -> torch.Tensor:
    """[N, groups] -> llm-awq's [rows, N] (transposed, zero rows after the real groups)."""
    out = torch.zeros(rows, t.shape[0], dtype=t.dtype)
    out[: t.shape[1]] = t.t()
    return out


def test_packing_matches_the_documented_layout():
    q = torch.tensor([[(c + 3 * r) % 16 for c in range(128)] for r in range(8)])
    packed = awq_pack_v2(q).to(torch.int32) & 0xFFFF

    def word(r, cols):
        return sum(int(q[r, c]) << (4 * j) for j, c in enumerate(cols))

    assert int(packed[0, 0]) == word(0, (0, 8, 16, 24))
    assert int(packed[0, 1]) == word(0, (1, 9, 17, 25))
    assert int(packed[0, 2]) == word(0, (2, 10, 18, 26))
    assert int(packed[0, 16]) == word(1, (0, 8, 16, 24))  # the next row of the 4-row group
    assert int(packed[0, 64]) == word(0, (64, 72, 80, 88))  # the next 64-column block
    assert int(packed[1, 0]) == word(4, (0, 8, 16, 24))
    rand = torch.randint(0, 16, (12, 256), generator=torch.Generator().manual_seed(1))
    assert torch.equal(unpack_v2(awq_pack_v2(rand)), rand.to(torch.uint8))


def test_fp16_scales_convert_within_their_bf16_rounding():
    from vila_ros.model.int4 import dequantize_weight
    from vila_ros.quant.tinychat import convert_linear, padded_groups

    gen = torch.Generator().manual_seed(2)
    for group, (n, k) in ((128, (8, 384)), (64, (12, 192)), (32, (4, 64))):
        w = torch.randn(n, k, generator=gen) * 0.03
        q, scales, zeros, scaled_zeros = awq_quantize(w, group)
        rows = padded_groups(k, group)
        assert rows % 8 == 0 and rows >= k // group
        got_q, got_s, got_z = convert_linear(awq_pack_v2(q), padded(scales, rows), padded(scaled_zeros, rows), group)
        assert torch.equal(got_q, q.to(torch.uint8)) and torch.equal(got_z, zeros.to(torch.uint8))
        llm_awq = q * scales.float().repeat_interleave(group, 1) + scaled_zeros.float().repeat_interleave(group, 1)
        ours = dequantize_weight(got_q, got_s.to(torch.bfloat16), got_z, group)
        # fp16 -> bf16 scales (2^-9 relative) over at most 15 steps, and llm-awq's own fp16 rounding of scale * zero
        bound = 15 * float(scales.float().amax()) * 2**-8
        assert 0 < float((ours - llm_awq).abs().max()) <= bound
    with pytest.raises(ValueError, match="is the group size right"):  # 2 groups of 32 in 32 rows, 1 of 64 in 16
        convert_linear(awq_pack_v2(q), padded(scales, rows), padded(scaled_zeros, rows), 64)
    q, scales, _, scaled_zeros = awq_quantize(torch.randn(4, 1024, generator=gen), 128)  # 8 groups in 8 rows
    with pytest.raises(ValueError, match="padding rows"):  # read as 4 groups of 256 in 8 rows
        convert_linear(awq_pack_v2(q), padded(scales, 8), padded(scaled_zeros, 8), 256)


@pytest.fixture(scope="module")
def tinychat_pair(tiny_dir, tmp_path_factory):
    """(the tiny model as a VILA1.5-*-AWQ directory with llm/*-w4-g64-awq-v2.pt, a float checkpoint holding the
    weights llm-awq computes with, {linear: (q, scales, zeros)})."""
    base = tmp_path_factory.mktemp("tinychat")
    # Values exact in bf16 (the dtype an int4 checkpoint holds besides the linears) and in fp16 (TinyChat's)
    model = load_vila(tiny_dir).to(torch.bfloat16).float()
    state = {k: v.half() for k, v in model.llm.state_dict().items()}
    truth = {}
    with torch.no_grad():
        for name in linear_names(model.llm):
            w = state.pop(f"{name}.weight").float()
            q, scales, zeros, scaled_zeros = awq_quantize(w, GROUP, scale_bits=7)
            rows = 16  # ceil(groups / 8) rounded to a multiple of 2 for group 64, times 8
            state[f"{name}.qweight"] = awq_pack_v2(q)
            state[f"{name}.scales"] = padded(scales, rows)
            state[f"{name}.scaled_zeros"] = padded(scaled_zeros, rows)
            s = scales.float().repeat_interleave(GROUP, 1)
            model.llm.get_submodule(name).weight.copy_(q * s + scaled_zeros.float().repeat_interleave(GROUP, 1))
            truth[name] = (q, scales, zeros)
        for key, value in state.items():
            if not key.endswith(("qweight", "scales", "scaled_zeros")):
                model.llm.state_dict()[key].copy_(value.float())
    reference = save_vila(model, base / "reference")
    awq = base / "VILA1.5-tiny-AWQ"
    shutil.copytree(reference, awq)
    for f in list((awq / "llm").glob("*.safetensors")) + [awq / "llm" / "model.safetensors.index.json"]:
        f.unlink()
    torch.save(state, awq / "llm" / "vila-1.5-tiny-w4-g64-awq-v2.pt")
    return awq, reference, truth


def test_the_loader_points_to_convert_awq(tinychat_pair):
    awq, _, _ = tinychat_pair
    with pytest.raises(PickleRefusedError, match="vila-ros convert-awq"):
        load_vila(awq)


def test_converted_weights_and_greedy_ids_equal_llm_awqs(tinychat_pair, tmp_path, capsys):
    from vila_ros.cli import main

    awq, reference, truth = tinychat_pair
    out = tmp_path / "int4"
    assert main(["convert-awq", str(awq), str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["group_size"] == GROUP and report["linears"] == len(truth)
    assert not list(out.rglob("*.pt"))
    model = load_quantized_vila(out, prepare=False)
    ref = load_vila(reference)
    for name, (q, scales, zeros) in truth.items():
        mod = model.llm.get_submodule(name)
        assert torch.equal(unpack_nibbles(mod.qweight, mod.in_features), q.to(torch.uint8)), name
        assert torch.equal(mod.zeros, zeros.to(torch.uint8)), name
        assert torch.equal(mod.scales, scales.to(torch.bfloat16)), name
        assert torch.equal(mod.dequantized(), ref.llm.get_submodule(name).weight.detach()), name
    # Greedy decoding with the converted weights, dequantized, equals decoding with llm-awq's (the same numbers).
    frames = [np.random.default_rng(5).integers(0, 256, (56, 56, 3), dtype=np.uint8) for _ in range(2)]
    cfg = GenerationConfig(max_new_tokens=12)
    ref_engine = create_engine(reference, precision="fp32")
    want = ref_engine.generate("What is there?", frames, cfg)
    got = _dequantized_engine(out).generate("What is there?", frames, cfg)
    assert got.token_ids == want.token_ids
    # The int4 engine itself (bf16 activations, either CPU kernel): the same greedy ids here.
    assert create_engine(out, precision="int4").generate("What is there?", frames, cfg).token_ids == want.token_ids


def _dequantized_engine(int4_dir):
    """The converted checkpoint's weights, dequantized into plain fp32 nn.Linear modules."""
    from vila_ros.engine.torch_engine import TorchEngine

    model = load_quantized_vila(int4_dir, prepare=False)
    for name in linear_names(model.llm):
        parent_name, child = name.rsplit(".", 1)
        parent = model.llm.get_submodule(parent_name)
        q = getattr(parent, child)
        lin = torch.nn.Linear(q.in_features, q.out_features, bias=False)
        lin.weight.data.copy_(q.dequantized())
        setattr(parent, child, lin)
    return TorchEngine(model.float().eval(), "dequantized")


def test_wrong_inputs_are_refused_clearly(tinychat_pair, tmp_path):
    from vila_ros.quant.tinychat import convert_awq

    awq, _, _ = tinychat_pair
    with pytest.raises(CorruptCheckpointError, match="group 128 does not divide"):
        convert_awq(awq, tmp_path / "g128", group=128)
    from vila_ros.cli import main

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert main(["convert-awq", str(awq), str(tmp_path / "taken")]) == 2  # one line on stderr, no traceback
    assert main(["convert-awq", str(tmp_path / "taken"), str(tmp_path / "none")]) == 2
    pt = next((awq / "llm").glob("*.pt"))
    state = torch.load(pt, weights_only=True)
    v1 = tmp_path / "v1"
    shutil.copytree(awq, v1)
    state["model.layers.0.mlp.up_proj.qzeros"] = torch.zeros(1, dtype=torch.int32)
    torch.save(state, v1 / "llm" / pt.name)
    with pytest.raises(CorruptCheckpointError, match="v1 packing"):
        convert_awq(v1, tmp_path / "from_v1")


class _RunsCode:
    """A hostile payload: an unrestricted unpickler would copy a file; the converter's weights-only read refuses it."""

    def __init__(self, src, dst):
        self.src, self.dst = src, dst

    def __reduce__(self):
        return (shutil.copy, (self.src, self.dst))


def test_a_pickle_that_runs_code_is_not_run(tinychat_pair, tmp_path):
    from vila_ros.quant.tinychat import convert_awq

    awq, _, _ = tinychat_pair
    evil = tmp_path / "evil"
    shutil.copytree(awq, evil)
    target = tmp_path / "written_by_the_pickle"
    pt = next((evil / "llm").glob("*.pt"))
    torch.save({"x": torch.zeros(1), "y": _RunsCode(str(pt), str(target))}, pt)
    with pytest.raises(pickle.UnpicklingError):  # what unrestricted unpickling would have done
        torch.load(pt, weights_only=True)
    with pytest.raises(CorruptCheckpointError, match="cannot read"):
        convert_awq(evil, tmp_path / "out")
    assert not target.exists()
