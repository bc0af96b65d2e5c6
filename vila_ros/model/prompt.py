"""Prompt text -> token ids with image slots, VILA's ``<image>`` semantics.

Every ``<image>`` becomes the id -200 (IMAGE_TOKEN_INDEX), later replaced by that image's projected features.
The text between images is tokenized chunk by chunk, exactly as VILA does: tokenizing the whole string would
let BPE merge across the placeholder and shift ids. Only the first chunk keeps the BOS its tokenizer adds; a BOS
spelled in the template text stays as well (llama_3 begins with "<|begin_of_text|>", so its prompts start with two
BOS tokens: VILA's ``tokenizer_image_token`` and its training preprocessing both do this, and the models learned it).
"""
from __future__ import annotations

from typing import Any, Sequence

from vila_ros.model.templates import IMAGE_PLACEHOLDER, get_template

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100


def tokenize_with_images(text: str, tokenizer: Any) -> list[int]:
    """Token ids of ``text`` with one IMAGE_TOKEN_INDEX per ``<image>``, as VILA's ``tokenizer_image_token``."""
    bos = tokenizer.bos_token_id
    ids: list[int] = []
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        piece = list(tokenizer(chunk).input_ids)
        if i > 0:
            ids.append(IMAGE_TOKEN_INDEX)
            if bos is not None and piece and piece[0] == bos:
                piece = piece[1:]
        ids.extend(piece)
    return ids


def build_prompt_ids(
    question: str,
    num_images: int,
    tokenizer: Any,
    conv_template: str,
    system: str | None = None,
) -> list[int]:
    """Template + question -> ids; the number of image slots must match ``num_images``."""
    prompt = get_template(conv_template).build_prompt(question, num_images, system=system)
    ids = tokenize_with_images(prompt, tokenizer)
    slots = ids.count(IMAGE_TOKEN_INDEX)
    if slots != num_images:
        raise ValueError(f"prompt holds {slots} <image> placeholders but {num_images} images were given")
    return ids


def text_prefix(ids: Sequence[int]) -> tuple[int, ...]:
    """The ids before the first image slot: the part of a prompt that repeats across calls (system prompt,
    few-shot examples), the key of the engine's prefix cache."""
    try:
        return tuple(ids[: list(ids).index(IMAGE_TOKEN_INDEX)])
    except ValueError:
        return tuple(ids)
