"""Public VILA checkpoints: SentencePiece-only tokenizers (3B, 13B, Yi 40B), the double BOS of llama_3 prompts,
the template each public checkpoint gets without an override, and refusals that name what is not implemented."""
import io
import json
import shutil
import sys

import pytest

from vila_ros.model.checkpoint import CorruptCheckpointError, load_vila
from vila_ros.model.config import VilaConfig
from vila_ros.model.prompt import IMAGE_TOKEN_INDEX, build_prompt_ids, tokenize_with_images
from vila_ros.model.templates import TEMPLATES

spm = pytest.importorskip("sentencepiece")

CORPUS = ["A road in the day. Two cars and a pedestrian.", "A warehouse aisle in bright light.",
          "Describe the scene. USER: ASSISTANT: yes no", "A chat between a curious user and an assistant."] * 40


def vila_tokenizer_image_token(prompt: str, tokenizer) -> list[int]:
    """VILA's ``tokenizer_image_token`` from its documented algorithm: chunks tokenized apart, and when the first
    chunk begins with BOS that one BOS is kept and the first id of every chunk is dropped."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    offset = 1 if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id else 0
    ids = [chunks[0][0]] if offset else []
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return ids


@pytest.fixture(scope="module")
def sentencepiece_checkpoint(tiny_dir, tmp_path_factory):
    """The tiny checkpoint with its LLM tokenizer replaced by a SentencePiece model, laid out as VILA1.5-3B's
    llm/ (tokenizer.model + tokenizer_config.json, no tokenizer.json)."""
    root = tmp_path_factory.mktemp("sp") / "ckpt"
    shutil.copytree(tiny_dir, root)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=300, model_type="bpe", bos_id=1, eos_id=2,
        unk_id=0, pad_id=-1, byte_fallback=True, character_coverage=1.0, minloglevel=2)
    llm = root / "llm"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (llm / name).unlink(missing_ok=True)
    (llm / "tokenizer.model").write_bytes(model.getvalue())
    (llm / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "legacy": True, "model_max_length": 4096, "tokenizer_class": "LlamaTokenizer", "padding_side": "right"}))
    return root


def test_sentencepiece_only_tokenizer_reads_like_vila(sentencepiece_checkpoint):
    model = load_vila(sentencepiece_checkpoint)
    tok = model.tokenizer
    sp = spm.SentencePieceProcessor(model_file=str(sentencepiece_checkpoint / "llm" / "tokenizer.model"))
    text = "A road in the day. Two cars and a pedestrian."
    assert tok(text).input_ids == [sp.bos_id()] + sp.encode(text)
    # legacy=False (what VILA passes, whatever the file says): no dummy space after a special token.
    pieces = tok.convert_ids_to_tokens(tok("yes</s>USER: no").input_ids)
    assert pieces[pieces.index("</s>") + 1][0] != "\u2581", pieces
    ids = build_prompt_ids("What is there?", 2, tok, "vicuna_v1")
    assert ids == vila_tokenizer_image_token(TEMPLATES["vicuna_v1"].build_prompt("What is there?", 2), tok)


def test_missing_sentencepiece_is_named(sentencepiece_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import fails as where the package is not installed
    with pytest.raises(CorruptCheckpointError, match="'sentencepiece' package is not installed"):
        load_vila(sentencepiece_checkpoint)


def test_unreadable_tokenizer_names_the_file(sentencepiece_checkpoint, tmp_path):
    root = tmp_path / "ckpt"
    shutil.copytree(sentencepiece_checkpoint, root)
    (root / "llm" / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(CorruptCheckpointError, match="tokenizer.model"):
        load_vila(root)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_prompts_token_for_token_as_vila(tiny_model, template):
    tok = tiny_model.tokenizer
    for images in (0, 1, 3):
        prompt = TEMPLATES[template].build_prompt("Is there a car?", images)
        assert build_prompt_ids("Is there a car?", images, tok, template) == vila_tokenizer_image_token(prompt, tok)


def test_bos_spelled_in_the_template_is_kept_twice_like_vila(tiny_model):
    # llama_3's text begins with its BOS spelled out; the tokenizer adds one more, and VILA keeps both.
    tok = tiny_model.tokenizer
    ids = tokenize_with_images(tok.bos_token + "hello<image>", tok)
    assert ids[:2] == [tok.bos_token_id, tok.bos_token_id] and ids.count(tok.bos_token_id) == 2


def _public_config(llm: dict, tower: dict) -> dict:
    return {"llm_cfg": {"_name_or_path": "./llm", "architectures": ["LlamaForCausalLM"], **llm},
            "vision_tower_cfg": {"_name_or_path": "./vision_tower", **tower},
            "mm_projector_cfg": {"_name_or_path": "./mm_projector", "mm_projector_type": "mlp_downsample"}}


SIGLIP = {"architectures": ["SiglipVisionModel"], "model_type": "siglip_vision_model", "hidden_size": 1152}


@pytest.mark.parametrize("llm, tower, expected", [
    ({"hidden_size": 2560, "vocab_size": 32000}, SIGLIP, "vicuna_v1"),   # VILA1.5-3B (and -3b-s2)
    ({"hidden_size": 5120, "vocab_size": 32000}, SIGLIP, "vicuna_v1"),   # VILA1.5-13B
    ({"hidden_size": 4096, "vocab_size": 128256}, SIGLIP, "llama_3"),    # Llama-3-VILA1.5-8B
    ({"hidden_size": 7168, "vocab_size": 64000, "model_type": "llama"},  # VILA1.5-40B
     {"architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": 3200}, "hermes-2"),
])
def test_template_of_each_public_checkpoint(llm, tower, expected):
    assert VilaConfig.from_dict(_public_config(llm, tower)).conv_template == expected


@pytest.mark.parametrize("change, words", [
    (lambda c: c["vision_tower_cfg"].update(model_type="intern_vit_6b", architectures=["InternVisionModel"]),
     ["InternViT", "vision_tower_cfg"]),
    (lambda c: c.update(s2=True, s2_scales="384,768", s2_max_split_size=384), ["S2", "'s2'"]),
    (lambda c: c["mm_projector_cfg"].update(mm_projector_type="mlp_downsample_3x3_s2"),
     ["mlp_downsample_3x3_s2", "mm_projector_type"]),
    (lambda c: c["llm_cfg"].update(model_type="gemma2"), ["gemma2", "llm_cfg.model_type"]),
    (lambda c: c.update(image_aspect_ratio="anyres"), ["'anyres'", "'image_aspect_ratio'"]),
    # NVILA (not Lite): dynamic S2 named by its key, even with everything else NVILA-Lite has
    (lambda c: (c.update(image_aspect_ratio="dynamic_s2", dynamic_s2=True), c["llm_cfg"].update(model_type="qwen2"),
                c["mm_projector_cfg"].update(mm_projector_type="mlp_downsample_3x3_fix")),
     ["dynamic S2", "'dynamic_s2': True"]),
])
def test_unimplemented_variants_are_refused_with_the_reason(tiny_dir, refusal_of, change, words):
    message = refusal_of(tiny_dir, change)
    assert all(word in message for word in words), message


def test_unimplemented_tower_in_the_part_config_is_refused(tiny_dir, tmp_path):
    from vila_ros.model.checkpoint import UnsupportedCheckpointError

    root = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, root)
    part = json.loads((root / "vision_tower" / "config.json").read_text())
    (root / "vision_tower" / "config.json").write_text(json.dumps({**part, "model_type": "intern_vit_6b"}))
    with pytest.raises(UnsupportedCheckpointError, match="InternViT"):
        load_vila(root)
