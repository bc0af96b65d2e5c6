"""Presets: the embedded default model's shapes and size, tokenizer training on a given corpus."""
import json

import torch

from vila_ros.model.checkpoint import checkpoint_bytes, load_vila
from vila_ros.model.presets import init_model


def test_default_small_shapes_size_and_tokenizer(tmp_path):
    out = init_model("default-small", tmp_path / "small", seed=3)
    assert checkpoint_bytes(out) < 25 * 1024**2
    model = load_vila(out)
    cfg = model.config
    assert model.dtype == torch.bfloat16 and cfg.model_dtype == "torch.bfloat16"
    assert cfg.tokens_per_image == 16 and cfg.num_video_frames == 8 and cfg.conv_template == "vicuna_v1"
    assert cfg.vision_tower_cfg["hidden_size"] == 192 and cfg.vision_tower_cfg["num_hidden_layers"] == 4
    llm = cfg.llm_cfg
    assert (llm["hidden_size"], llm["num_hidden_layers"], llm["num_attention_heads"]) == (256, 4, 4)
    tok = model.tokenizer
    assert 1500 <= len(tok) <= 2000 and cfg.llm_cfg["vocab_size"] == len(tok)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")
    text = "Ein Fußgänger überquert die Straße 🚶 at 12:30."
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text  # byte-level: any UTF-8 round-trips
    with torch.no_grad():
        feats = model.encode_images(model.preprocess([torch.zeros(112, 112, 3, dtype=torch.uint8).numpy()]))
    assert feats.shape == (1, 16, 256)


def test_seed_and_custom_corpus(tmp_path):
    corpus = ["forklift near the dock"] * 5 + ["zebra crossing at dusk"] * 5
    a = init_model("tiny", tmp_path / "a", seed=1, tokenizer_corpus=corpus)
    b = init_model("tiny", tmp_path / "b", seed=1, tokenizer_corpus=corpus)
    c = init_model("tiny", tmp_path / "c", seed=2, tokenizer_corpus=corpus)
    assert (a / "llm" / "model-00001-of-00001.safetensors").read_bytes() == \
        (b / "llm" / "model-00001-of-00001.safetensors").read_bytes()
    assert (a / "llm" / "model-00001-of-00001.safetensors").read_bytes() != \
        (c / "llm" / "model-00001-of-00001.safetensors").read_bytes()
    vocab = json.loads((a / "llm" / "tokenizer.json").read_text())["model"]["vocab"]
    assert "forklift" in vocab or "Ġforklift" in vocab


def test_tiny_nvila_lite_preset_round_trips_and_describes_a_frame(tmp_path):
    import numpy as np

    from vila_ros.engine.torch_engine import TorchEngine
    from vila_ros.engine.types import GenerationConfig
    from vila_ros.model.checkpoint import save_vila

    out = init_model("tiny-nvila-lite", tmp_path / "nvila", seed=1)
    model = load_vila(out)
    cfg = model.config
    assert type(model.llm).__name__ == "Qwen2ForCausalLM" and cfg.llm_type == "qwen2" and cfg.is_nvila
    assert cfg.conv_template == "qwen2" and cfg.tiling and cfg.mm_projector_type == "mlp_downsample_3x3_fix"
    assert model.tokenizer.bos_token_id is None and model.tokenizer.convert_tokens_to_ids("<image>") is not None
    assert cfg.tokens_per_image == 4 and model.tokens_per_image == 5  # 5x5 patches -> 2x2 tokens, + "\n"
    stored = json.loads((out / "llm" / "config.json").read_text())
    assert stored["architectures"] == ["Qwen2ForCausalLM"] and stored["model_type"] == "qwen2"
    again = load_vila(save_vila(model, tmp_path / "again"))
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    engine = TorchEngine(model)
    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    result = engine.generate("Describe the scene.", engine.encode_frames([frame, frame]),
                             GenerationConfig(max_new_tokens=6))
    assert len(result.token_ids) == 6 and result.prompt_tokens > 2 * model.tokens_per_image


def test_real_nvila_lite_shapes():
    from vila_ros.model.presets import preset_config

    for name, hidden, layers, tied in (("nvila-lite-2b", 1536, 28, True), ("nvila-lite-8b", 3584, 28, False)):
        cfg = preset_config(name, 2000, None, 1, 0)
        assert cfg.llm_type == "qwen2" and cfg.hidden_size == hidden and cfg.llm_cfg["num_hidden_layers"] == layers
        assert cfg.llm_cfg["tie_word_embeddings"] is tied and cfg.image_size == 448 and cfg.mm_hidden_size == 1152
        assert cfg.tokens_per_image == 121 and cfg.max_tiles == 12 and cfg.conv_template == "qwen2"  # 32x32 -> 11x11
