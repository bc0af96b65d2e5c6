"""Checkpoint layout, bit-exact round trips and the promised errors, on real files."""
import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vila_ros.model.checkpoint import (
    CheckpointError,
    MissingPartError,
    PickleRefusedError,
    ShapeMismatchError,
    load_vila,
    save_vila,
)


def state(model):
    return {k: v for k, v in model.state_dict().items()}


def assert_bit_exact(a, b):
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def test_layout_matches_vila(tiny_dir):
    root = json.loads((tiny_dir / "config.json").read_text())
    assert root["model_type"] == "llava_llama" and root["architectures"] == ["LlavaLlamaModel"]
    assert [root[f"{p}_cfg"]["_name_or_path"] for p in ("llm", "vision_tower", "mm_projector")] == [
        "./llm", "./vision_tower", "./mm_projector"]
    assert root["mm_vision_select_layer"] == -2 and root["mm_vision_select_feature"] == "cls_patch"
    assert root["model_dtype"] == "torch.float32" and root["mm_projector_token_order"] == "vila1.5"
    index = json.loads((tiny_dir / "llm" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {"model-00001-of-00001.safetensors"}
    assert (tiny_dir / "llm" / "tokenizer.json").is_file()
    assert json.loads((tiny_dir / "mm_projector" / "config.json").read_text())["model_type"] == "v2l_projector"
    with safe_open(str(tiny_dir / "mm_projector" / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == {f"layers.{i}.{p}" for i in (1, 2, 4) for p in ("weight", "bias")}
    with safe_open(str(tiny_dir / "vision_tower" / "model.safetensors"), "pt") as f:
        assert all(k.startswith("vision_model.") for k in f.keys())
    pre = json.loads((tiny_dir / "vision_tower" / "preprocessor_config.json").read_text())
    assert pre["size"] == {"height": 56, "width": 56} and pre["image_mean"] == [0.5, 0.5, 0.5]


def test_round_trip_bit_exact_and_idempotent(tiny_model, tmp_path):
    save_vila(tiny_model, tmp_path / "a")
    loaded = load_vila(tmp_path / "a")
    assert_bit_exact(tiny_model, loaded)
    assert loaded.config.to_dict() == tiny_model.config.to_dict()
    assert loaded.tokenizer("a red car <s>").input_ids == tiny_model.tokenizer("a red car <s>").input_ids
    save_vila(loaded, tmp_path / "b")
    for f in sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_bf16_storage_and_sharding(tiny_dir, tmp_path):
    model = load_vila(tiny_dir, dtype="bf16")
    assert model.dtype == torch.bfloat16
    save_vila(model, tmp_path / "bf16", max_shard_bytes=60_000)
    shards = sorted((tmp_path / "bf16" / "llm").glob("model-*-of-*.safetensors"))
    assert len(shards) > 1
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["model_dtype"] == "torch.bfloat16"
    again = load_vila(tmp_path / "bf16")  # dtype None keeps the stored model_dtype
    assert_bit_exact(model, again)
    as_fp32 = load_vila(tmp_path / "bf16", dtype=torch.float32)
    assert as_fp32.dtype == torch.float32
    assert torch.equal(as_fp32.llm.lm_head.weight, model.llm.lm_head.weight.float())


@pytest.fixture
def copy_of(tiny_dir, tmp_path):
    def make():
        dst = tmp_path / "ckpt"
        shutil.copytree(tiny_dir, dst)
        return dst
    return make


def test_missing_llm_dir(copy_of):
    ckpt = copy_of()
    shutil.rmtree(ckpt / "llm")
    with pytest.raises(MissingPartError) as info:
        load_vila(ckpt)
    assert str(ckpt / "llm") in str(info.value) and info.value.path == ckpt / "llm"


def test_missing_shard_and_tokenizer(copy_of):
    ckpt = copy_of()
    (ckpt / "llm" / "model-00001-of-00001.safetensors").unlink()
    with pytest.raises(MissingPartError, match="model-00001-of-00001.safetensors"):
        load_vila(ckpt)
    shutil.rmtree(ckpt)
    ckpt = copy_of()
    (ckpt / "llm" / "tokenizer.json").unlink()
    (ckpt / "llm" / "tokenizer_config.json").unlink()
    with pytest.raises(MissingPartError, match="tokenizer"):
        load_vila(ckpt)


def test_wrong_shape_in_weights(copy_of):
    ckpt = copy_of()
    path = ckpt / "mm_projector" / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["layers.2.weight"] = torch.zeros(3, 5)
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(ShapeMismatchError) as info:
        load_vila(ckpt)
    assert str(path) in str(info.value) and "layers.2.weight" in str(info.value)


def test_config_disagreeing_with_weights(copy_of):
    ckpt = copy_of()
    cfg_path = ckpt / "llm" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["intermediate_size"] += 8
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ShapeMismatchError, match="model-00001-of-00001.safetensors"):
        load_vila(ckpt)


def test_pickle_only_weights_are_refused(copy_of):
    ckpt = copy_of()
    (ckpt / "vision_tower" / "model.safetensors").unlink()
    # Not a valid pickle: any attempt to unpickle would raise something other than PickleRefusedError.
    (ckpt / "vision_tower" / "pytorch_model.bin").write_bytes(b"\x80\x04 not read")
    with pytest.raises(PickleRefusedError) as info:
        load_vila(ckpt)
    assert "pytorch_model.bin" in str(info.value)
    assert isinstance(info.value, CheckpointError)


def test_missing_root_config(copy_of):
    ckpt = copy_of()
    (ckpt / "config.json").unlink()
    with pytest.raises(MissingPartError, match="config.json"):
        load_vila(ckpt)


@pytest.mark.parametrize("projector,feature,layer", [("linear", "patch", -1), ("mlp2x_gelu", "cls_patch", 1)])
def test_other_projectors_and_feature_selection_round_trip(tiny_model, tmp_path, projector, feature, layer):
    import copy

    import numpy as np

    from vila_ros.model.vila import VilaModel

    cfg = copy.deepcopy(tiny_model.config)
    cfg.mm_projector_cfg["mm_projector_type"] = projector
    cfg.mm_vision_select_feature, cfg.mm_vision_select_layer = feature, layer
    torch.manual_seed(0)
    model = VilaModel(cfg, tokenizer=tiny_model.tokenizer, image_processor=tiny_model.image_processor)
    save_vila(model, tmp_path / "x")
    loaded = load_vila(tmp_path / "x")
    assert_bit_exact(model, loaded)
    assert loaded.config.mm_projector_type == projector
    with torch.no_grad():
        px = loaded.preprocess([np.zeros((56, 56, 3), np.uint8)])
        feats = loaded.encode_images(px)
        ref = loaded.vision_tower.model(px, output_hidden_states=True).hidden_states[layer]
    assert feats.shape == (1, cfg.tokens_per_image, cfg.hidden_size)
    assert cfg.tokens_per_image == (15 if feature == "patch" else 16)
    expected = ref[:, 1:] if feature == "patch" else ref
    assert torch.allclose(loaded.vision_tower(px), expected, atol=1e-6)
