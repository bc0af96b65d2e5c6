"""Decoding constrained to a regular expression (a model's description grammar): with random weights the
constraint alone must make every answer a sentence of the grammar."""
import random
import re

import pytest

from vila_ros import tasks
from vila_ros.engine import GenerationConfig
from vila_ros.engine.errors import RequestError, refuse_constraints
from vila_ros.tools.stream_scoring import well_formed

CAPTIONS = tasks.caption_regex()


def _random_attributes(rng: random.Random) -> dict:
    family = rng.choice(tasks.FAMILIES)
    attrs = {"family": family}
    if family == "road":
        attrs.update(time=rng.choice(tasks.ROAD_TIMES), weather=rng.choice(tasks.ROAD_WEATHERS),
                     sign=rng.choice(tasks.SIGNS), light=rng.choice(tasks.LIGHT_COLOURS))
    else:
        attrs["lighting"] = rng.choice(tasks.WAREHOUSE_LIGHTING)
    for key in tasks.ATTRIBUTE_KEYS[family][1:-1]:
        if key not in attrs:
            attrs[key] = rng.choice([0, 0, 1, 2, 6])
    attrs["event"] = rng.choice(["none"] + [c for (f, c) in tasks.EVENT_SENTENCES if f == family])
    return attrs


def test_the_expression_takes_every_caption_and_refuses_the_out_of_order():
    rng = random.Random(0)
    pattern = re.compile(CAPTIONS)
    for _ in range(2000):
        attrs = _random_attributes(rng)
        for with_event in (True, False):
            assert pattern.fullmatch(tasks.make_caption(attrs, include_event=with_event))
    for text in (tasks.UNFAMILIAR_SCENE, tasks.BLOCKED_VIEW, " " + tasks.UNFAMILIAR_SCENE):
        assert pattern.fullmatch(text)
    for text in ("A road at night in rain. Two cars, a pedestrian, an animal and a cyclist.",  # list order
                 "A road at unfamiliar scene.", "A road users..", "A person steps into in.",
                 "A road in the day. A car and a car.", "A warehouse aisle in bright light. A car."):
        assert not pattern.fullmatch(text), text


def test_every_constrained_answer_is_well_formed(tiny_engine, frames):
    seen = set()
    for seed in range(12):  # random weights sampled hot: the walks wander the whole grammar
        config = GenerationConfig(max_new_tokens=64, temperature=1.5, seed=seed, output_regex=CAPTIONS)
        streamed = []
        result = tiny_engine.generate("Describe the scene.", frames[:2], config,
                                      on_token=lambda _t, text: streamed.append(text))
        assert well_formed(result.text.strip()) is not None, result.text
        assert re.fullmatch(CAPTIONS, result.text)
        assert "".join(streamed) == result.text
        assert result.stop_reason in ("stop_token", "schema_complete"), result
        seen.add(result.text.split(".")[0])
    assert len(seen) > 3  # not one answer the masks happen to force


def test_batch_rows_keep_their_own_constraint(tiny_engine, frames):
    config = GenerationConfig(max_new_tokens=40)
    questions = ["Describe the scene.", "Is there a forklift?", "Describe the scene."]
    images = [frames[:2], frames[:2], frames[2:3]]
    regexes = [CAPTIONS, None, "(yes|no)"]
    batch = tiny_engine.generate_batch(questions, images, config, output_regexes=regexes)
    for question, items, regex, row in zip(questions, images, regexes, batch):
        alone = tiny_engine.generate(question, items, GenerationConfig(max_new_tokens=40, output_regex=regex))
        assert row.token_ids == alone.token_ids  # greedy: the batch row is the generation of its own
    assert well_formed(batch[0].text.strip()) is not None
    assert batch[2].text in ("yes", "no")


@pytest.mark.parametrize("config, words", [
    (GenerationConfig(output_regex="(yes|no"), "output_regex cannot be compiled"),
    (GenerationConfig(output_regex="x" * 100001), "too long"),
    (GenerationConfig(output_regex="(yes|no)", json_schema='{"type": "boolean"}'), "cannot both"),
    (GenerationConfig(output_regex="(yes|no)", max_new_tokens=1), "max_new_tokens 1"),
])
def test_unusable_expression_is_refused_with_the_reason(tiny_engine, frames, config, words):
    with pytest.raises(RequestError, match=words):
        tiny_engine.generate("Is it night?", frames[:1], config)
    with pytest.raises(RequestError, match=words):
        tiny_engine.generate_batch(["Is it night?"], [frames[:1]], config)


def test_engines_without_it_refuse_rather_than_answer_free():
    refuse_constraints("tensorrt_llm", GenerationConfig())  # nothing asked: nothing refused
    with pytest.raises(RequestError, match="tensorrt_llm cannot constrain decoding to an output_regex"):
        refuse_constraints("tensorrt_llm", GenerationConfig(output_regex="(yes|no)"))
    with pytest.raises(RequestError, match="json_schema"):
        refuse_constraints("tensorrt_llm", GenerationConfig(json_schema='{"type": "boolean"}'))
    with pytest.raises(RequestError, match="OpenAI protocol"):
        refuse_constraints("openai", GenerationConfig(), ["(yes|no)"], json_schema=True)
    refuse_constraints("openai", GenerationConfig(json_schema='{"type": "boolean"}'), [None], json_schema=True)


def test_openai_engine_refuses_an_expression_before_any_request(frames):
    from vila_ros.engine.openai_engine import OpenAIEngine

    engine = OpenAIEngine("http://127.0.0.1:9/v1", model="served", timeout_s=2.0)  # nothing listens there
    config = GenerationConfig(output_regex="(yes|no)")
    for ask in (lambda: engine.generate("Is it night?", frames[:1], config),
                lambda: engine.generate_batch(["Is it night?"], [frames[:1]], GenerationConfig(),
                                              output_regexes=["(yes|no)"])):
        with pytest.raises(RequestError, match="output_regex"):  # not a connection error: refused before one
            ask()
