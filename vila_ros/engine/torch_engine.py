"""The torch engine: VilaModel + our KV-cache decode loop.

One generate() = tokenize the templated prompt (image slots -200), splice frame features into the embeddings,
prefill, then decode token by token with stop ids / stop strings / max tokens, streaming text to ``on_token``.
Each of those steps is a public method (``embed_prompt`` / ``embed``, ``prefill``, ``decode_step``, ``decode``)
that generate() and generate_batch() are built from, so benchmarks and evaluations run exactly the engine's code.
Prefix cache: the ids before the first image (system prompt, few-shot examples) are the same call after call;
their KV is computed once, kept as a private copy and copied into each new cache, so only the images and the
question are prefilled. The copy is what makes it safe: a later call can never see another call's tokens.
"""
from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any, Collection, NamedTuple, Sequence

import numpy as np
import torch

from vila_ros.engine.decoder import KVCache, LlamaDecoder
from vila_ros.engine.errors import NonFiniteOutputError, PromptTooLongError
from vila_ros.engine.json_schema import SchemaCompiler
from vila_ros.engine.sampling import TextStream, mask_to, sample_next
from vila_ros.engine.types import GenerationConfig, GenerationResult, TokenCallback
from vila_ros.model.prompt import IMAGE_TOKEN_INDEX, build_prompt_ids, text_prefix
from vila_ros.model.templates import IMAGE_PLACEHOLDER, get_template
from vila_ros.model.vila import VilaModel

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


class Decoded(NamedTuple):
    """What ``TorchEngine.decode`` produced: generated ids (the stop token included), why it stopped, the text."""

    token_ids: list[int]
    stop_reason: str
    text: str


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class TorchEngine:
    def __init__(self, model: VilaModel, model_id: str = "vila", prefix_cache_size: int = 4):
        self.model = model.eval()
        self.model_id = model_id
        self.num_video_frames = int(model.config.num_video_frames)
        self.tokens_per_image = int(model.tokens_per_image)
        self.tokenizer = model.tokenizer
        self.decoder = LlamaDecoder(model.llm)
        self.prefix_cache_size = prefix_cache_size
        self._prefix_cache: collections.OrderedDict[tuple[int, ...], Any] = collections.OrderedDict()
        self._stop_cache: dict[tuple, tuple[frozenset[int], tuple[str, ...]]] = {}
        self.schemas = SchemaCompiler(self.tokenizer)

    def check_output_regex(self, regex: str) -> None:
        """RequestError with the reason when `regex` cannot constrain this model's answers (compiled once, kept)."""
        self.schemas.check(None, regex)

    @classmethod
    def from_dir(cls, model_dir: str | Path, precision: str = "fp32", device: str = "cpu") -> "TorchEngine":
        from vila_ros.model.checkpoint import load_vila

        if precision == "int4":
            # int4 needs a quantized checkpoint (vila-ros quantize); a float one is refused with that advice.
            from vila_ros.model.int4_checkpoint import load_quantized_vila

            model = load_quantized_vila(model_dir, device=device)
            return cls(model, model_id=Path(model_dir).resolve().name)
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} not supported by the torch engine (fp32, bf16, int4)")
        from vila_ros.model.checkpoint import read_config

        if isinstance(read_config(model_dir).llm_cfg.get("quantization_config"), dict):
            raise ValueError(f"{model_dir} is an int4 checkpoint (llm/config.json quantization_config): "
                             "load it with precision='int4'")
        model = load_vila(model_dir, dtype=PRECISIONS[precision], device=device)
        return cls(model, model_id=Path(model_dir).resolve().name)

    # -- vision ------------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_frames(self, frames: Sequence[np.ndarray]) -> list[torch.Tensor]:
        if len(frames) == 0:
            return []
        features = self.model.encode_images(self.model.preprocess(frames))
        # Callers cache features per frame: NaN features would poison every later window that holds the frame.
        self._check_finite(features, "image features", "the vision tower")
        # Own storage per frame: a cached frame must not pin the whole batch's memory.
        return [f.clone() for f in features]

    def _features(self, items: Sequence[Any]) -> tuple[list[torch.Tensor], float]:
        """Accept precomputed [T, hidden] features or raw frames (encoded here, timed as vision_ms)."""
        raw = [i for i, x in enumerate(items) if isinstance(x, np.ndarray)]
        out = list(items)
        vision_ms = 0.0
        if raw:
            t0 = time.perf_counter()
            encoded = self.encode_frames([items[i] for i in raw])
            vision_ms = _ms(t0)
            for i, feat in zip(raw, encoded):
                out[i] = feat
        for f in out:
            if not isinstance(f, torch.Tensor) or f.dim() != 2 or f.shape[0] != self.tokens_per_image:
                raise ValueError(f"image features must be [{self.tokens_per_image}, hidden] tensors or uint8 frames")
        return out, vision_ms

    def tile_single_frame(self, question: str, items: Sequence[Any]) -> tuple[str, Sequence[Any]]:
        """NVILA tiles an image asked about alone (``image_aspect_ratio: dynamic``): one raw frame becomes its tiles
        and thumbnail, each its own "<image>\\n" in front of the question. Several images, precomputed features
        (a frame encoded on its own is one 448 px view, NVILA's multi-image and video path) and questions that
        place their own <image> are left as they are."""
        if (not self.model.config.tiling or len(items) != 1 or not isinstance(items[0], np.ndarray)
                or IMAGE_PLACEHOLDER in question):
            return question, items
        tiles = self.model.tiles(items[0])
        return (IMAGE_PLACEHOLDER + "\n") * len(tiles) + question, tiles

    def _check_finite(self, values: torch.Tensor, what: str, step: str) -> None:
        # One reduction per step (a vocabulary of logits): negligible next to the forward pass that made them.
        if not bool(torch.isfinite(values).all()):
            raise NonFiniteOutputError(what, self.model_id, step)

    # -- prompt -----------------------------------------------------------------------------------------------------
    def prompt_ids(self, question: str, num_images: int, config: GenerationConfig) -> list[int]:
        template = config.conv_template or self.model.conv_template
        return build_prompt_ids(question, num_images, self.tokenizer, template, config.system_prompt)

    def embed_prompt(self, question: str, features: Sequence[torch.Tensor],
                     config: GenerationConfig) -> tuple[list[int], torch.Tensor]:
        """The templated prompt's ids (image slots IMAGE_TOKEN_INDEX) and its [L', H] input embeddings."""
        ids = self.prompt_ids(question, len(features), config)
        return ids, self.embed(ids, features)

    def embed(self, ids: Sequence[int], features: Sequence[torch.Tensor]) -> torch.Tensor:
        """[L', H] embeddings: text runs embedded, each image slot replaced by its features (one [T, H] per slot)."""
        pieces: list[torch.Tensor] = []
        run: list[int] = []
        images = iter(features)
        dev, dtype = self.decoder.device, self.decoder.dtype
        for tok in list(ids) + [None]:  # sentinel flushes the last run
            if tok is None or tok == IMAGE_TOKEN_INDEX:
                if run:
                    pieces.append(self.decoder.embed(torch.tensor(run, device=dev)))
                    run = []
                if tok is not None:
                    pieces.append(next(images).to(device=dev, dtype=dtype))
            else:
                run.append(tok)
        return torch.cat(pieces)

    def _stops(self, config: GenerationConfig) -> tuple[frozenset[int], tuple[str, ...]]:
        # Memoised: tokenizing the stop strings cost ~0.3 ms a request, outside the timed prefill and decode.
        template_name = config.conv_template or self.model.conv_template
        key = (template_name, tuple(config.stop_strings), tuple(int(i) for i in config.stop_token_ids))
        stops = self._stop_cache.get(key)
        if stops is None:
            if len(self._stop_cache) >= 64:  # configs are few; a caller inventing new ones must not grow this
                self._stop_cache.clear()
            stops = self._stop_cache[key] = self._find_stops(get_template(template_name), config)
        return stops

    def _find_stops(self, template, config: GenerationConfig) -> tuple[frozenset[int], tuple[str, ...]]:
        strings = tuple(template.stop_strings) + tuple(config.stop_strings)
        ids = set(int(i) for i in config.stop_token_ids)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        special = set(self.tokenizer.all_special_ids) | set(getattr(self.tokenizer, "added_tokens_decoder", {}) or {})
        for s in strings:
            enc = self.tokenizer(s, add_special_tokens=False).input_ids
            if len(enc) == 1 and enc[0] in special:
                ids.add(int(enc[0]))  # "<|eot_id|>" and friends are one token: stop without decoding text
        return frozenset(ids), strings

    def _capacity(self, prompt_len: int, max_new_tokens: int) -> int:
        if prompt_len >= self.decoder.max_positions:
            raise PromptTooLongError(prompt_len, self.decoder.max_positions)
        return min(prompt_len + max_new_tokens, self.decoder.max_positions)

    def _generator(self, config: GenerationConfig) -> torch.Generator | None:
        if config.seed is None or config.temperature <= 0:
            return None
        return torch.Generator(device=self.decoder.device).manual_seed(int(config.seed))

    # -- steps ------------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, embeds: torch.Tensor, cache: KVCache | None = None, max_new_tokens: int = 0,
                positions: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, KVCache]:
        """Run input embeddings [B, L, H] through the decoder after what ``cache`` holds -> (logits [B, vocab] of
        the last position, the cache). Without a cache, a new one with room for ``max_new_tokens`` more positions
        (up to the model's context; PromptTooLongError when the prompt fills it). ``positions`` / ``mask``: see
        LlamaDecoder.forward (left-padded batches). Steps run in inference mode: restore or snapshot a cache made
        here inside ``torch.inference_mode()`` too."""
        if cache is None:
            cache = self.decoder.new_cache(embeds.shape[0], self._capacity(embeds.shape[1], max_new_tokens))
        hidden = self.decoder.forward(embeds, cache, positions=positions, mask=mask)
        logits = self.decoder.logits(hidden[:, -1])
        self._check_finite(logits, "logits", "prefill")
        return logits, cache

    @torch.inference_mode()
    def decode_step(self, tokens: torch.Tensor, cache: KVCache, step: int = 1, positions: torch.Tensor | None = None,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
        """One generated token per row (``tokens`` [B]) into ``cache`` -> next logits [B, vocab]. ``step`` (1 for the
        first step after prefill) only names the step in a NonFiniteOutputError."""
        x = self.decoder.embed(tokens.reshape(-1, 1))
        logits = self.decoder.logits(self.decoder.forward(x, cache, positions=positions, mask=mask)[:, -1])
        self._check_finite(logits, "logits", f"decode step {step}")
        return logits

    # -- generation -------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        question: str,
        image_features: Sequence[Any],
        config: GenerationConfig | None = None,
        on_token: TokenCallback | None = None,
    ) -> GenerationResult:
        config = config or GenerationConfig()
        self.schemas.check(config.json_schema, config.output_regex)  # refused before any model work
        question, image_features = self.tile_single_frame(question, image_features)
        features, vision_ms = self._features(image_features)
        t0 = time.perf_counter()
        ids, embeds = self.embed_prompt(question, features, config)
        embeds = embeds[None]
        prompt_len = embeds.shape[1]
        cache = self.decoder.new_cache(1, self._capacity(prompt_len, config.max_new_tokens))

        # The prefix never covers the whole prompt: the last position must be prefilled to get logits.
        prefix = text_prefix(ids)[: len(ids) - 1] if config.use_prefix_cache else ()
        cached = 0
        if prefix:
            snapshot = self._prefix_cache.get(prefix)
            if snapshot is not None:
                self._prefix_cache.move_to_end(prefix)
                cache.restore(snapshot)
                cached = len(prefix)
            else:
                self.decoder.forward(embeds[:, : len(prefix)], cache)
                self._prefix_cache[prefix] = cache.snapshot(len(prefix))
                while len(self._prefix_cache) > self.prefix_cache_size:
                    self._prefix_cache.popitem(last=False)
        logits, cache = self.prefill(embeds[:, cache.length:], cache)
        prefill_ms = _ms(t0)

        t1 = time.perf_counter()
        out_ids, reason, text = self.decode(cache, logits, config, on_token=on_token)
        return GenerationResult(
            text=text, token_ids=out_ids, vision_ms=vision_ms, prefill_ms=prefill_ms, decode_ms=_ms(t1),
            stop_reason=reason, prompt_tokens=prompt_len, cached_prefix_tokens=cached,
        )

    @torch.inference_mode()
    def decode(
        self,
        cache: KVCache,
        logits: torch.Tensor,
        config: GenerationConfig,
        stop_ids: Collection[int] | None = None,
        stop_strings: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
        on_token: TokenCallback | None = None,
    ) -> Decoded:
        """Generate from a prefilled cache of one row and its next logits [1, vocab], sampling per ``config``, until
        a stop id or string, ``config.max_new_tokens``, a full cache, or ``on_token`` returning True.

        ``stop_ids`` / ``stop_strings``: None = the config's (template, EOS and the config's own); pass empty ones to
        decode exactly max_new_tokens tokens. ``generator``: None = seeded from ``config.seed`` when sampling.
        """
        if stop_ids is None or stop_strings is None:
            config_ids, config_strings = self._stops(config)
            stop_ids = config_ids if stop_ids is None else stop_ids
            stop_strings = config_strings if stop_strings is None else stop_strings
        if generator is None:
            generator = self._generator(config)
        room = min(config.max_new_tokens, cache.capacity - cache.length + 1)  # tokens this call can generate
        guide = self.schemas.guide(config.json_schema, room, stop_ids, config.output_regex)
        # A constrained answer ends where its schema or expression says: a stop string inside it must not cut it.
        stream = TextStream(self.tokenizer, () if guide else stop_strings)
        out_ids: list[int] = []
        reason = "max_new_tokens"
        pieces: list[str] = []
        for step in range(config.max_new_tokens):
            if guide is not None:
                logits = mask_to(logits, guide.allowed())
            token = int(sample_next(logits, config.temperature, config.top_p, generator)[0])
            out_ids.append(token)
            if token in stop_ids:
                reason = "stop_token"
                delta = stream.finish()
                pieces.append(delta)
                if on_token is not None:
                    on_token(token, delta)
                break
            delta = stream.push(token)
            pieces.append(delta)
            if on_token is not None and on_token(token, delta):
                reason = "cancelled"
                break
            if guide is not None and guide.advance(token):
                reason = "schema_complete"
                break
            if stream.stopped:
                reason = "stop_string"
                break
            if step == config.max_new_tokens - 1:
                break
            if cache.length >= cache.capacity:
                reason = "context_full"
                break
            logits = self.decode_step(torch.tensor([token], device=self.decoder.device), cache, step + 1)
        if reason in ("max_new_tokens", "context_full", "schema_complete"):  # cancelled: it has what it was streamed
            tail = stream.finish()
            pieces.append(tail)
            if tail and on_token is not None:
                on_token(-1, tail)  # flush of held-back text: no new token, id -1
        return Decoded(out_ids, reason, "".join(pieces))

    def generate_batch(
        self,
        questions: Sequence[str],
        image_features: Sequence[Sequence[Any]],
        config: GenerationConfig | None = None,
        max_new_tokens: Sequence[int] | None = None,
        on_token: Sequence[TokenCallback | None] | None = None,
        output_regexes: Sequence[str | None] | None = None,
    ) -> list[GenerationResult]:
        """All rows decoded together, each as generate() would alone; rows asking about the same frames share one
        prefill of them (`engine/batch.py`). `max_new_tokens`: one limit per row (default the config's); `on_token`:
        one streaming callback per row (or None); `output_regexes`: one expression per row (or None)."""
        from vila_ros.engine.batch import generate_batch

        return generate_batch(self, questions, image_features, config, max_new_tokens, on_token, output_regexes)
