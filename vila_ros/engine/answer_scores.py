"""The model's probability of given answers to a question about frames, from the answer tokens' logits.

One prefill of the prompt (`embed_prompt`, `prefill`), then each candidate answer teacher-forced through
`decode_step` from the same prefilled cache (rewound to the prompt's end between candidates: attention reads only
positions below the cache's length, so nothing needs copying). The probability of a candidate is that of its
tokens as the start of the reply, tokenized as the trainer tokenizes answers (the template's assistant text after
the prompt), so "camera_blocked" scores the reply "camera_blocked" and every reply that lists it first. Needs an
engine with the public steps of `TorchEngine`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from vila_ros.engine.types import GenerationConfig
from vila_ros.model.templates import get_template


def answer_token_ids(engine: Any, question: str, answer: str, config: GenerationConfig) -> list[int]:
    """The ids of `answer` as the reply to `question` (without the template's closing string)."""
    template = get_template(config.conv_template or engine.model.conv_template)
    prompt = template.render([(question, None)], system=config.system_prompt)
    full = template.render([(question, answer)], system=config.system_prompt)
    start = full.find(answer, len(prompt))
    if not full.startswith(prompt) or start < 0:
        raise ValueError(f"template {template.name} does not render the answer after the prompt")
    ids = list(engine.tokenizer(full[len(prompt):start + len(answer)]).input_ids)
    if ids and ids[0] == engine.tokenizer.bos_token_id:
        ids = ids[1:]
    return ids


@torch.inference_mode()
def answer_probabilities(engine: Any, question: str, features: Sequence[Any], answers: Sequence[str],
                         config: GenerationConfig | None = None) -> list[float]:
    """P(reply starts with each of `answers`) given the frames' `features` (one [T, hidden] per frame)."""
    for step in ("embed_prompt", "prefill", "decode_step"):
        if not hasattr(engine, step):
            raise NotImplementedError(f"{type(engine).__name__} has no {step}: answer probabilities need the "
                                      "torch engine's public steps")
    config = config or GenerationConfig()
    candidates = [answer_token_ids(engine, question, answer, config) for answer in answers]
    _, embeds = engine.embed_prompt(question, list(features), config)
    longest = max((len(ids) for ids in candidates), default=0)
    logits, cache = engine.prefill(embeds[None], max_new_tokens=longest + 1)
    first = torch.log_softmax(logits[0].float(), dim=-1)
    prompt_length = cache.length
    device = first.device
    probabilities = []
    for ids in candidates:
        if not ids:
            probabilities.append(0.0)
            continue
        total = float(first[ids[0]])
        cache.length = prompt_length
        for step, (previous, token) in enumerate(zip(ids, ids[1:]), start=1):
            step_logits = engine.decode_step(torch.tensor([previous], device=device), cache, step)
            total += float(torch.log_softmax(step_logits[0].float(), dim=-1)[token])
        probabilities.append(math.exp(total))
    return probabilities
