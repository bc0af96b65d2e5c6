"""Template strings against the facts in shared/notes/vila-reference.md, and the root config."""
import pytest

from vila_ros.model.config import VilaConfig
from vila_ros.model.templates import add_image_placeholders, get_template

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the user's questions."
)


def test_vicuna_v1_exact():
    t = get_template("vicuna_v1")
    assert t.build_prompt("What is this?", 1) == VICUNA_SYSTEM + " USER: <image>\nWhat is this? ASSISTANT:"
    assert t.stop_strings == ("</s>",)


def test_hermes_2_exact():
    t = get_template("hermes-2")
    assert t.build_prompt("q?", 1) == (
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\nq?<|im_end|>"
        "<|im_start|>assistant\n"
    )
    assert t.stop_strings == ("<|im_end|>",)


def test_llama_3_both_variants():
    later, release = get_template("llama_3"), get_template("llama_3_release")
    system = later.system
    head = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + system
    assert later.build_prompt("q?", 1) == (
        head + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n<image>\nq?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert "<|eot_id|>" in later.stop_strings
    # release day: the assistant answers under a "system" header, <|end_of_text|> separators
    assert release.build_prompt("q?", 1) == (
        head + "<|end_of_text|><|start_header_id|>user<|end_header_id|>\n\n<image>\nq?<|end_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\n"
    )
    assert release.stop_strings == ("<|end_of_text|>",)


def test_plain_and_training_conversation():
    assert get_template("plain").build_prompt("caption", 1) == "<image>\ncaption\n"
    t = get_template("vicuna_v1")
    full = t.render([("<image>\nq", "a")])
    assert full == VICUNA_SYSTEM + " USER: <image>\nq ASSISTANT: a</s>"
    assert full == t.build_prompt("q", 1) + " a" + t.answer_suffix


def test_image_placeholders_and_system_override():
    assert add_image_placeholders("q", 3) == "<image>\n<image>\n<image>\nq"
    assert add_image_placeholders("left <image> right <image>", 2) == "left <image> right <image>"
    assert get_template("vicuna_v1").build_prompt("q", 0, system="Be brief.") == "Be brief. USER: q ASSISTANT:"
    assert get_template("hermes-2").build_prompt("q", 0, system="S").startswith("<|im_start|>system\nS<|im_end|>")
    with pytest.raises(KeyError):
        get_template("nope")


def test_3b_preset_shapes_and_config_round_trip():
    from vila_ros.model.presets import preset_config

    cfg = preset_config("vila1.5-3b", 2000, 1, 2, 3)
    assert cfg.tokens_per_image == 196  # 27x27 -> pad 28x28 -> 14x14
    llm, vt = cfg.llm_cfg, cfg.vision_tower_cfg
    assert (llm["hidden_size"], llm["num_hidden_layers"], llm["num_attention_heads"], llm["intermediate_size"],
            llm["vocab_size"]) == (2560, 32, 20, 6912, 32000)
    assert (vt["hidden_size"], vt["num_hidden_layers"], vt["image_size"], vt["patch_size"]) == (1152, 27, 384, 14)
    data = cfg.to_dict()
    assert data["model_type"] == "llava_llama" and data["architectures"] == ["LlavaLlamaModel"]
    assert data["llm_cfg"]["_name_or_path"] == "./llm" and data["mm_hidden_size"] == 1152
    assert data["hidden_size"] == 2560 and data["mm_vision_select_layer"] == -2
    assert VilaConfig.from_dict(data).to_dict() == data


def test_config_from_real_vila_layout_without_our_keys():
    data = {
        "llm_cfg": {"_name_or_path": "/some/where/llm", "hidden_size": 4096, "vocab_size": 128256},
        "vision_tower_cfg": {"_name_or_path": "./vision_tower", "hidden_size": 1152, "image_size": 384,
                             "patch_size": 14},
        "mm_projector_cfg": {"_name_or_path": "./mm_projector", "mm_projector_type": "mlp_downsample"},
        "some_vila_key": [1, 2],
    }
    cfg = VilaConfig.from_dict(data)
    assert cfg.conv_template == "llama_3" and cfg.mm_projector_token_order == "vila1.5"
    assert cfg.part_dir_name("llm") == "llm" and cfg.extra == {"some_vila_key": [1, 2]}
    with pytest.raises(ValueError):
        VilaConfig.from_dict({**data, "mm_projector_token_order": "diagonal"})
