"""Calibration and evaluation samples: multimodal prompts built the way the engine builds them.

A sample is ``(ids, frames, answer_start)``: token ids of a full conversation (template, ``<image>`` slots as -200,
the assistant's answer and its closing string), its frames (HxWx3 uint8 RGB, one per slot) and the index of the
first answer token (perplexity counts answer tokens only). Sources:

- ``sim``: simulator clips (``vila_ros.sim``) with the prompts the embedded model is trained on (describe, alert,
  QA), ``split`` train for calibration, test for held-out evaluation;
- a LLaVA JSON file: ``[{"image": str | [str], "conversations": [{"from": "human", "value": "<image>\\n..."},
  {"from": "gpt", "value": "..."}]}]``, image paths relative to the file (first turn pair used).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vila_ros.model.prompt import IMAGE_TOKEN_INDEX, tokenize_with_images
from vila_ros.model.templates import IMAGE_PLACEHOLDER, get_template


@dataclass
class Sample:
    ids: list[int]
    frames: list[np.ndarray]
    answer_start: int


def conversation_sample(question: str, answer: str, frames: Sequence[np.ndarray], tokenizer: Any,
                        template: str, system: str | None = None) -> Sample:
    """Prompt exactly as the engine builds it (``build_prompt``), then the answer as the trainer writes it."""
    tpl = get_template(template)
    n = len(frames)
    if IMAGE_PLACEHOLDER not in question:
        question = (IMAGE_PLACEHOLDER + "\n") * n + question
    prompt_ids = tokenize_with_images(tpl.render([(question, None)], system=system), tokenizer)
    if prompt_ids.count(IMAGE_TOKEN_INDEX) != n:
        raise ValueError(f"prompt holds {prompt_ids.count(IMAGE_TOKEN_INDEX)} image slots for {n} frames")
    answer_ids = list(tokenizer(" " + answer.strip() + tpl.answer_suffix, add_special_tokens=False).input_ids)
    return Sample(prompt_ids + answer_ids, list(frames), len(prompt_ids))


def sim_samples(count: int, tokenizer: Any, template: str, image_size: int, num_frames: int,
                split: str = "train", offset: int = 0,
                kinds: Sequence[str] = ("caption", "alert", "qa")) -> list[Sample]:
    """``count`` simulator conversations cycling over ``kinds`` (caption only for held-out perplexity)."""
    from vila_ros import tasks
    from vila_ros.sim import make_clip, split_seeds

    out = []
    for i, seed in enumerate(split_seeds(split, count, offset)):
        clip = make_clip(seed, num_frames=num_frames, size=image_size)
        kind = kinds[i % len(kinds)]
        if kind == "caption":
            q, a = tasks.DESCRIBE_PROMPT, clip.truth.caption
        elif kind == "alert":
            q, a = tasks.ALERT_PROMPT, clip.truth.alert_answer
        elif kind == "qa":
            qa = clip.truth.qa[seed % len(clip.truth.qa)]
            q, a = qa["question"], qa["answer"]
        else:
            raise ValueError(f"unknown sample kind {kind!r}")
        out.append(conversation_sample(q, a, clip.frames, tokenizer, template))
    return out


def llava_samples(path: str | Path, count: int, tokenizer: Any, template: str) -> list[Sample]:
    import cv2

    path = Path(path)
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty JSON list of LLaVA records")
    out = []
    for index, record in enumerate(records[:count]):
        images = record.get("image") or record.get("images") or []
        images = [images] if isinstance(images, str) else list(images)
        frames = []
        for name in images:
            image = cv2.imread(str(path.parent / name), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{path}: record {index}: cannot read image {path.parent / name}")
            frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        conv = record.get("conversations") or []
        human = next((m["value"] for m in conv if str(m.get("from")).lower() in ("human", "user")), None)
        gpt = next((m["value"] for m in conv if str(m.get("from")).lower() in ("gpt", "assistant")), None)
        if human is None or gpt is None:
            raise ValueError(f"{path}: record {index} has no human/gpt pair")
        out.append(conversation_sample(human, gpt, frames, tokenizer, template))
    return out


def load_samples(source: str, count: int, model: Any, split: str = "train", offset: int = 0,
                 kinds: Sequence[str] = ("caption", "alert", "qa"), num_frames: int | None = None) -> list[Sample]:
    """``source`` "sim" or a LLaVA JSON path; frames at the model's own size and clip length."""
    frames = int(num_frames or model.config.num_video_frames)
    if source == "sim":
        return sim_samples(count, model.tokenizer, model.conv_template, model.config.image_size, frames,
                           split=split, offset=offset, kinds=kinds)
    return llava_samples(source, count, model.tokenizer, model.conv_template)


def embed_samples(model: Any, samples: Sequence[Sample]) -> list[Any]:
    """Input embeddings [1, L, hidden] of each sample (image features spliced in), in the model's dtype."""
    import torch

    out = []
    with torch.inference_mode():
        for s in samples:
            feats = model.encode_images(model.preprocess(s.frames)) if s.frames else None
            ids = torch.tensor([s.ids], device=model.device)
            out.append(model.build_inputs(ids, images=feats)["inputs_embeds"].clone())
    return out
