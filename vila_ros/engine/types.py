"""The engine contract (docs/DESIGN.md) shared by every backend: torch (fp32, bf16, int4) and TensorRT-LLM.

No torch import at module level: the ROS layer and the CLI read these types without loading the ML stack.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Sequence

if TYPE_CHECKING:
    import numpy as np
    import torch

# on_token(token_id, text): called once per generated token with the text that became final with it (may be "",
# e.g. half of a UTF-8 character, or text held back because it may start a stop string). The concatenation of
# every ``text`` equals GenerationResult.text; held-back text released at the end comes with token_id -1.
# Returning True cancels generation (stop_reason "cancelled").
TokenCallback = Callable[[int, str], Optional[bool]]


@dataclasses.dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None  # sampling seed (torch.Generator); None = nondeterministic
    stop_strings: Sequence[str] = ()  # in addition to the template's
    conv_template: str | None = None  # None = the checkpoint's template
    system_prompt: str | None = None  # None = the template's system text
    stop_token_ids: Sequence[int] = ()  # in addition to EOS and single-token stop strings
    use_prefix_cache: bool = True  # reuse the KV of a prompt prefix (system prompt, few-shot text) seen before
    # JSON schema (as JSON text) the answer must validate against; None or "" = free text. Engines that cannot
    # constrain decoding refuse it with RequestError rather than answer unconstrained.
    json_schema: str | None = None
    # Regular expression the whole answer must match (e.g. a model's description grammar); None or "" = free text.
    # Not with json_schema. Engines that cannot constrain decoding refuse it with RequestError.
    output_regex: str | None = None


@dataclasses.dataclass
class GenerationResult:
    text: str
    token_ids: list[int]  # generated ids only (the stop token included when one ended generation)
    vision_ms: float  # encoding raw frames passed to generate (0 when features came precomputed)
    prefill_ms: float
    decode_ms: float
    # "stop_token", "stop_string", "max_new_tokens", "context_full", "cancelled", or "schema_complete" (the answer
    # is complete and its JSON schema or output_regex allows nothing more)
    stop_reason: str
    prompt_tokens: int = 0  # LLM positions of the prompt, visual tokens included
    cached_prefix_tokens: int = 0  # how many of them came from the prefix cache

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Engine(Protocol):
    model_id: str
    num_video_frames: int
    tokens_per_image: int

    def encode_frames(self, frames: Sequence["np.ndarray"]) -> list["torch.Tensor"]:
        """HxWx3 uint8 RGB frames -> one [tokens_per_image, hidden] tensor per frame, each independent of the
        others (callers cache them per frame)."""
        ...

    def generate(
        self,
        question: str,
        image_features: Sequence[Any],
        config: GenerationConfig | None = None,
        on_token: TokenCallback | None = None,
    ) -> GenerationResult:
        """Answer ``question`` about the images (features from encode_frames, or raw frames encoded here)."""
        ...

    def generate_batch(
        self,
        questions: Sequence[str],
        image_features: Sequence[Sequence[Any]],
        config: GenerationConfig | None = None,
        max_new_tokens: Sequence[int] | None = None,
        output_regexes: Sequence[str | None] | None = None,
    ) -> list[GenerationResult]:
        """Several prompts decoded together; same results as one generate() each. `max_new_tokens`: a limit per
        prompt (default the config's); `output_regexes`: an expression (or None) per prompt in place of the
        config's output_regex."""
        ...
