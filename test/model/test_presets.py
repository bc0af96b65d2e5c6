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
