"""Answer probabilities from the answer tokens' logits: one prefill, candidates teacher-forced from a rewound cache,
checked against separate prefills of the prompt followed by each prefix of the answer."""
import math

import torch

from vila_ros.engine import GenerationConfig
from vila_ros.engine.answer_scores import answer_probabilities, answer_token_ids


def reference_probability(engine, question, features, answer):
    config = GenerationConfig()
    ids = engine.prompt_ids(question, len(features), config)
    answer_ids = answer_token_ids(engine, question, answer, config)
    total = 0.0
    for k, token in enumerate(answer_ids):
        embeds = engine.embed(ids + answer_ids[:k], features)
        logits, _ = engine.prefill(embeds[None], max_new_tokens=1)
        total += float(torch.log_softmax(logits[0].float(), dim=-1)[token])
    return math.exp(total)


def test_probabilities_match_separate_prefills(tiny_engine, frames):
    features = tiny_engine.encode_frames(frames[:2])
    question = "Which corner cases happen?"
    answers = ["none", "camera_blocked", "a pedestrian crosses"]
    probabilities = answer_probabilities(tiny_engine, question, features, answers)
    for answer, probability in zip(answers, probabilities):
        assert math.isclose(probability, reference_probability(tiny_engine, question, features, answer),
                             rel_tol=1e-3, abs_tol=1e-9)
    assert all(0.0 < p < 1.0 for p in probabilities)  # a random tiny model is unsure of everything
