"""Constrained decoding: the answer is JSON that validates against the caller's schema, or text that matches a
regular expression whole (a model's description grammar, `tasks.caption_regex`).

A schema becomes a regular expression (outlines-core); the expression becomes a token-level automaton over the
model's own vocabulary (each token id -> the bytes it adds to the text). Decoding masks, at each step, every token
that would leave the automaton, and also every token after which the shortest way to an accepting state no longer
fits the remaining token budget: so generation always ends on a complete answer within ``max_new_tokens``, whatever the
weights (random ones included). A schema whose shortest answer needs more tokens than the budget is refused before
decoding starts.

Schemas are refused with the reason when they are not JSON, not a valid JSON schema (Draft 2020-12 metaschema), or
use keywords the automaton cannot enforce (then the answer could not be guaranteed to validate); expressions when
the automaton compiler does not take them.
"""
from __future__ import annotations

import collections
import json
import re
import threading
from pathlib import Path
from typing import Any, Iterable

from vila_ros.engine.errors import RequestError

# Keywords the regex compiler enforces, plus annotations that constrain nothing. Anything else is refused rather
# than silently ignored (an ignored "not" or "multipleOf" would let invalid answers through).
SUPPORTED_KEYWORDS = frozenset({
    "type", "properties", "required", "items", "prefixItems", "enum", "const", "anyOf", "oneOf", "allOf",
    "$ref", "$defs", "definitions", "minLength", "maxLength", "pattern", "minItems", "maxItems",
    "additionalProperties", "format", "minimum", "maximum",
    # annotations
    "title", "description", "$schema", "$id", "$comment", "examples", "default",
})
# String formats the compiler has a pattern for.
SUPPORTED_FORMATS = frozenset({"date-time", "date", "time", "uuid", "email", "uri"})
_SCHEMA_MAPS = ("properties", "$defs", "definitions")  # keyword -> {name: subschema}
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties")
MAX_SCHEMA_CHARS = 20000
# String length bounds unroll into automaton states whose compilation grows steeply (about 5 s at 16 on a small
# vocabulary, minutes at 30): larger bounds are refused rather than stall the engine.
MAX_STRING_LENGTH_BOUND = 10
MAX_REGEX_CHARS = 100000  # the caption grammar is about 35,000
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class SchemaError(RequestError):
    """The request's JSON schema cannot be used; the message says why."""


def parse_schema(text: str) -> dict[str, Any]:
    """Schema text -> the schema object, or SchemaError with the reason (not JSON, not a schema, unsupported)."""
    if len(text) > MAX_SCHEMA_CHARS:
        raise SchemaError(f"json_schema is too long: {len(text)} characters, at most {MAX_SCHEMA_CHARS}")
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as error:
        raise SchemaError(f"json_schema is not JSON: {error}") from None
    if not isinstance(schema, dict):
        raise SchemaError(f"json_schema must be a JSON object, not {type(schema).__name__}")
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "the top level"
        raise SchemaError(f"json_schema is not a valid JSON schema at {where}: {error.message}") from None
    _check_keywords(schema, "#")
    return schema


def _check_keywords(schema: Any, where: str) -> None:
    if isinstance(schema, bool):
        return
    unsupported = sorted(set(schema) - SUPPORTED_KEYWORDS)
    if unsupported:
        raise SchemaError(f"json_schema uses keywords constrained decoding cannot enforce at {where}: "
                          f"{', '.join(unsupported)} (supported: {', '.join(sorted(SUPPORTED_KEYWORDS))})")
    if "format" in schema and schema["format"] not in SUPPORTED_FORMATS:
        raise SchemaError(f"json_schema format {schema['format']!r} at {where} is not supported "
                          f"(supported: {', '.join(sorted(SUPPORTED_FORMATS))})")
    for key in ("minLength", "maxLength"):
        if schema.get(key, 0) > MAX_STRING_LENGTH_BOUND:
            raise SchemaError(f"json_schema {key} {schema[key]} at {where} is above {MAX_STRING_LENGTH_BOUND}, the "
                              "largest string length bound constrained decoding compiles in reasonable time")
    for key in _SCHEMA_MAPS:
        for name, sub in schema.get(key, {}).items():
            _check_keywords(sub, f"{where}/{key}/{name}")
    for key in _SCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key, [])):
            _check_keywords(sub, f"{where}/{key}/{i}")
    for key in _SCHEMA_ONE:
        if isinstance(schema.get(key), dict):
            _check_keywords(schema[key], f"{where}/{key}")


def validate_answer(text: str, schema_text: str) -> Any:
    """Parse ``text`` and validate it against the schema; returns the value (raises ValueError / ValidationError)."""
    import jsonschema

    value = json.loads(text)
    jsonschema.validate(value, json.loads(schema_text), cls=jsonschema.Draft202012Validator)
    return value


# -- the tokenizer's vocabulary as bytes ---------------------------------------------------------------------------
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes), inverted: character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and "ByteLevel" in repr(decoder)


def token_bytes(tokenizer: Any) -> dict[int, bytes]:
    """Every ordinary token id -> the bytes it appends to the text. Special and added tokens are left out (they
    never appear inside an answer); byte-level BPE maps its alphabet back to bytes, SentencePiece spells a space
    "▁" and raw bytes "<0xNN>"."""
    special = set(int(i) for i in tokenizer.all_special_ids)
    special |= set(int(i) for i in (getattr(tokenizer, "added_tokens_decoder", None) or {}))
    byte_level = _is_byte_level(tokenizer)
    alphabet = _byte_level_decoder() if byte_level else {}
    out: dict[int, bytes] = {}
    vocab = tokenizer.get_vocab()
    for token, token_id in vocab.items():
        if token_id in special:
            continue
        if byte_level:
            try:
                out[int(token_id)] = bytes(alphabet[c] for c in token)
            except KeyError:
                continue  # not a byte-level token (none in a byte-level vocabulary): never allowed
            continue
        match = _BYTE_TOKEN.match(token)
        out[int(token_id)] = bytes([int(match.group(1), 16)]) if match else token.replace("▁", " ").encode("utf-8")
    return {i: b for i, b in out.items() if b}


def read_regex_file(path: str | Path) -> str:
    """The expression a file holds (a model's description_regex.txt): its final line break is not part of it.
    ValueError naming the file when it cannot be read."""
    try:
        return Path(path).expanduser().read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read the regular expression file {path}: {error}") from None


# -- the automaton ---------------------------------------------------------------------------------------------------
def schema_regex(schema_text: str) -> str:
    """A (checked) JSON schema -> the regular expression of its valid answers."""
    from outlines_core.json_schema import build_regex_from_schema

    try:
        return build_regex_from_schema(schema_text, None)
    except Exception as error:  # noqa: BLE001 - the compiler's own words are the reason
        raise SchemaError(f"json_schema cannot be compiled: {error}") from None


class SchemaIndex:
    """A regular expression (a schema's, or the caller's: `what` names it in errors) compiled against one
    vocabulary: transitions per state and each state's distance (in tokens) to an accepting state. Built once per
    (expression, tokenizer) and shared by every request using it."""

    def __init__(self, regex: str, vocabulary: dict[int, bytes], eos_token_id: int,
                 what: str = "json_schema") -> None:
        from outlines_core import Index, Vocabulary

        self.what = what
        by_bytes: dict[bytes, list[int]] = collections.defaultdict(list)
        for token_id, piece in vocabulary.items():
            if token_id != eos_token_id:
                by_bytes[piece].append(token_id)
        try:
            index = Index(regex, Vocabulary(eos_token_id, dict(by_bytes)))
        except Exception as error:  # noqa: BLE001
            raise SchemaError(f"{what} cannot be compiled against this model's vocabulary: {error}") from None
        self.eos_token_id = eos_token_id
        self.initial = index.get_initial_state()
        self.finals = frozenset(index.get_final_states())
        self.transitions: dict[int, dict[int, int]] = {
            state: {t: s for t, s in moves.items() if t != eos_token_id}
            for state, moves in index.get_transitions().items()
        }
        self.distance = self._distances()
        if self.initial not in self.distance:
            raise SchemaError(f"{what} admits no answer this model's vocabulary can spell")

    def _distances(self) -> dict[int, int]:
        """Breadth-first from the accepting states over reversed transitions: fewest tokens to finish."""
        reverse: dict[int, set[int]] = collections.defaultdict(set)
        for state, moves in self.transitions.items():
            for nxt in moves.values():
                reverse[nxt].add(state)
        distance = {s: 0 for s in self.finals}
        todo = collections.deque(self.finals)
        while todo:
            state = todo.popleft()
            for prev in reverse.get(state, ()):
                if prev not in distance:
                    distance[prev] = distance[state] + 1
                    todo.append(prev)
        return distance

    @property
    def min_tokens(self) -> int:
        """Tokens of the shortest answer (the end token not counted)."""
        return self.distance[self.initial]


class SchemaGuide:
    """One request's walk through a SchemaIndex."""

    def __init__(self, index: SchemaIndex, max_new_tokens: int, end_ids: Iterable[int]) -> None:
        if index.min_tokens + 1 > max_new_tokens:
            raise SchemaError(f"the shortest answer the {index.what} admits needs {index.min_tokens + 1} tokens, "
                              f"more than max_new_tokens {max_new_tokens}")
        self.index = index
        self.state = index.initial
        self.left = max_new_tokens  # tokens this request may still generate, the end token included
        self.end_ids = sorted(set(int(i) for i in end_ids) | {index.eos_token_id})

    def allowed(self) -> list[int]:
        """Token ids that keep the answer completable within the budget; the end tokens once it is complete."""
        budget = self.left - 1  # after this token, tokens left for reaching an accepting state (end token excluded)
        distance = self.index.distance
        moves = self.index.transitions.get(self.state, {})
        ids = [t for t, nxt in moves.items() if distance.get(nxt, budget + 1) <= budget - 1] if budget > 0 else []
        if self.state in self.index.finals:
            ids += self.end_ids
        return ids

    def complete(self) -> bool:
        """The answer is complete and nothing else could follow."""
        return self.state in self.index.finals and not self.index.transitions.get(self.state)

    def advance(self, token_id: int) -> bool:
        """Take one generated (non-end) token; True when the answer is complete and nothing else may follow."""
        self.state = self.index.transitions[self.state][token_id]
        self.left -= 1
        return self.complete()


class SchemaCompiler:
    """Per-tokenizer cache of compiled schemas and expressions (compiling one against a vocabulary costs
    milliseconds to seconds; robots ask the same few again and again)."""

    def __init__(self, tokenizer: Any, capacity: int = 16) -> None:
        self.tokenizer = tokenizer
        self.capacity = capacity
        self._vocabulary: dict[int, bytes] | None = None
        self._cache: collections.OrderedDict[tuple[str, str], SchemaIndex] = collections.OrderedDict()
        self._lock = threading.Lock()

    def index(self, schema_text: str) -> SchemaIndex:
        """The automaton of a JSON schema's answers."""
        return self._compiled("json_schema", schema_text)

    def regex_index(self, regex: str) -> SchemaIndex:
        """The automaton of the texts a regular expression matches whole."""
        return self._compiled("output_regex", regex)

    def _compiled(self, what: str, text: str) -> SchemaIndex:
        key = (what, text)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        if what == "json_schema":
            regex = schema_regex(json.dumps(parse_schema(text)))
        elif len(text) > MAX_REGEX_CHARS:
            raise SchemaError(f"output_regex is too long: {len(text)} characters, at most {MAX_REGEX_CHARS}")
        else:
            regex = text
        if self._vocabulary is None:
            self._vocabulary = token_bytes(self.tokenizer)
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise SchemaError("this model's tokenizer has no end-of-sequence token to end a constrained answer")
        built = SchemaIndex(regex, self._vocabulary, int(eos), what)
        with self._lock:
            self._cache[key] = built
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return built

    def _index_for(self, schema_text: str | None, regex: str | None) -> SchemaIndex | None:
        if schema_text and regex:
            raise SchemaError("json_schema and output_regex cannot both constrain one answer: give one")
        if schema_text:
            return self.index(schema_text)
        return self.regex_index(regex) if regex else None

    def check(self, schema_text: str | None, regex: str | None = None) -> None:
        """Compile (or find) the schema or expression now: SchemaError before any model work. Neither: nothing to
        check."""
        self._index_for(schema_text, regex)

    def guide(self, schema_text: str | None, max_new_tokens: int, end_ids: Iterable[int],
              regex: str | None = None) -> SchemaGuide | None:
        """One request's walk (None for free text: no schema, no expression)."""
        index = self._index_for(schema_text, regex)
        return SchemaGuide(index, max_new_tokens, end_ids) if index is not None else None
