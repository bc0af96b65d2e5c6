"""JSON-schema constrained decoding: with random weights the constraint alone must make every answer valid."""
import io
import json
import shutil

import pytest

from vila_ros.engine import GenerationConfig
from vila_ros.engine.errors import RequestError
from vila_ros.engine.json_schema import SchemaError, token_bytes, validate_answer

LONG = "the forklift is parked next to the second shelf of the aisle, blocking the exit"
SCHEMAS = {
    "object": {"type": "object", "properties": {
        "person": {"type": "boolean"}, "count": {"type": "integer"},
        "where": {"enum": ["left", "right", "ahead"]}}, "required": ["person", "count", "where"]},
    "nested_arrays": {"type": "array", "minItems": 1, "maxItems": 3,
                      "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 3}},
    "enum": {"enum": ["yes", "no", 3, None]},
    "required_nested": {"type": "object", "required": ["alerts"], "properties": {"alerts": {
        "type": "array", "maxItems": 2, "items": {"type": "object", "required": ["kind", "severity"], "properties": {
            "kind": {"enum": ["fall", "fire", "spill"]}, "severity": {"type": "integer"}}}}}},
    "free_string": {"type": "string"},  # unbounded: the token budget alone must close it
    "only_long_answer": {"const": LONG},
    "stop_string_inside": {"type": "object", "required": ["s"], "properties": {"s": {"const": "a </s> ### b"}}},
    "refs": {"$defs": {"box": {"type": "object", "required": ["w"], "properties": {"w": {"type": "number"}}}},
             "type": "array", "items": {"$ref": "#/$defs/box"}, "maxItems": 2},
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_answer_validates(tiny_engine, frames, name):
    schema = json.dumps(SCHEMAS[name])
    for temperature, seed in ((0.0, None), (1.0, 1), (1.0, 2)):
        config = GenerationConfig(max_new_tokens=40 if name != "only_long_answer" else 120, temperature=temperature,
                                  seed=seed, json_schema=schema)
        streamed = []
        result = tiny_engine.generate("Describe the scene.", frames[:1], config,
                                      on_token=lambda _t, text: streamed.append(text))
        validate_answer(result.text, schema)
        assert "".join(streamed) == result.text
        assert result.stop_reason in ("stop_token", "schema_complete"), result


def test_tight_budget_still_completes(tiny_engine, frames):
    schema = json.dumps(SCHEMAS["object"])
    shortest = tiny_engine.schemas.index(schema).min_tokens
    for seed in range(4):  # sampling at a high temperature wanders; the budget still closes the object
        config = GenerationConfig(max_new_tokens=shortest + 2, temperature=2.0, seed=seed, json_schema=schema)
        result = tiny_engine.generate("Describe the scene.", frames[:1], config)
        validate_answer(result.text, schema)
        assert len(result.token_ids) <= shortest + 2


def test_batch_rows_validate(tiny_engine, frames):
    schema = json.dumps(SCHEMAS["required_nested"])
    config = GenerationConfig(max_new_tokens=48, temperature=1.0, seed=3, json_schema=schema)
    results = tiny_engine.generate_batch(["Describe the scene.", "Any alert?"], [frames[:1], frames[1:3]], config)
    for result in results:
        validate_answer(result.text, schema)


@pytest.mark.parametrize("schema, words", [
    ("{not json", "not JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"type": "colour"}', "not a valid JSON schema"),
    ('{"type": "integer", "multipleOf": 3}', "multipleOf"),
    ('{"type": "object", "properties": {"a": {"not": {"type": "string"}}}}', "#/properties/a"),
    ('{"type": "string", "maxLength": 500}', "maxLength"),
    ('{"type": "string", "format": "hostname"}', "hostname"),
])
def test_bad_schema_is_refused_with_the_reason(tiny_engine, frames, schema, words):
    with pytest.raises(SchemaError, match=words) as caught:
        tiny_engine.generate("Describe the scene.", frames[:1], GenerationConfig(json_schema=schema))
    assert isinstance(caught.value, RequestError) and isinstance(caught.value, ValueError)


def test_budget_below_the_shortest_answer_is_refused(tiny_engine, frames):
    config = GenerationConfig(max_new_tokens=5, json_schema=json.dumps(SCHEMAS["only_long_answer"]))
    with pytest.raises(SchemaError, match="max_new_tokens 5"):
        tiny_engine.generate("Describe the scene.", frames[:1], config)


def test_free_text_is_unchanged(tiny_engine, frames):
    plain = tiny_engine.generate("Describe the scene.", frames[:1], GenerationConfig(max_new_tokens=12))
    again = tiny_engine.generate("Describe the scene.", frames[:1], GenerationConfig(max_new_tokens=12, json_schema=""))
    assert plain.token_ids == again.token_ids


def _spelled(tokenizer, text: str) -> bytes:
    table = token_bytes(tokenizer)
    return b"".join(table[i] for i in tokenizer(text, add_special_tokens=False).input_ids)


def test_vocabulary_bytes_of_byte_level_bpe(tiny_engine):
    text = '{"a": "Grüße, 5 m — ok"}\n'
    assert _spelled(tiny_engine.tokenizer, text) == text.encode()


def test_vocabulary_bytes_of_sentencepiece(tiny_dir, tmp_path):
    spm = pytest.importorskip("sentencepiece")
    from vila_ros.model.checkpoint import load_tokenizer
    from vila_ros.model.tokenizer import builtin_corpus

    llm = tmp_path / "llm"
    shutil.copytree(tiny_dir / "llm", llm)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(builtin_corpus()[:3000]), model_writer=model, vocab_size=300, model_type="bpe",
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, byte_fallback=True, character_coverage=1.0, minloglevel=2)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (llm / name).unlink(missing_ok=True)
    (llm / "tokenizer.model").write_bytes(model.getvalue())
    (llm / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"}))
    tokenizer = load_tokenizer(llm)
    text = '{"where": "left", "n": 12, "note": "ß€"}'
    spelled = _spelled(tokenizer, text)
    assert spelled.lstrip(b" ") == text.encode()  # SentencePiece's dummy prefix space is the only difference
