"""<image> -> -200 with per-chunk tokenization: one BOS from the tokenizer, none from later chunks."""
from vila_ros.model.prompt import IMAGE_TOKEN_INDEX, build_prompt_ids, text_prefix, tokenize_with_images


def test_image_slots_and_single_bos(tiny_model):
    tok = tiny_model.tokenizer
    text = "A red car<image> and then<image>\nwhat?"
    ids = tokenize_with_images(text, tok)
    bos = tok.bos_token_id
    assert ids[0] == bos and ids.count(bos) == 1
    assert ids.count(IMAGE_TOKEN_INDEX) == 2
    chunks = [tok(c, add_special_tokens=False).input_ids for c in text.split("<image>")]
    assert ids == [bos] + chunks[0] + [IMAGE_TOKEN_INDEX] + chunks[1] + [IMAGE_TOKEN_INDEX] + chunks[2]
    # adjacent images and a leading image keep one slot each, no stray BOS
    assert tokenize_with_images("<image><image>x", tok) == [bos, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX] + tok(
        "x", add_special_tokens=False).input_ids


def test_build_prompt_ids_places_one_slot_per_image(tiny_model):
    ids = build_prompt_ids("Describe.", 3, tiny_model.tokenizer, "vicuna_v1")
    assert ids.count(IMAGE_TOKEN_INDEX) == 3
    prefix = text_prefix(ids)
    assert IMAGE_TOKEN_INDEX not in prefix and ids[len(prefix)] == IMAGE_TOKEN_INDEX
    try:
        build_prompt_ids("one <image> only", 2, tiny_model.tokenizer, "vicuna_v1")
    except ValueError as error:
        assert "1 <image>" in str(error)
    else:
        raise AssertionError("mismatched image count accepted")
