"""Next-token choice and incremental detokenisation with stop strings."""
from __future__ import annotations

from typing import Any, Sequence

import torch


def sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """[B, V] logits -> [B] token ids. temperature <= 0 is greedy; top_p < 1 keeps the smallest set of tokens
    whose probability reaches top_p (nucleus sampling)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # drop a token when the tokens ranked above it already reach top_p (the top token always survives)
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class TextStream:
    """Generated ids -> text, released as soon as it is final.

    Text is held back while it ends in an incomplete UTF-8 sequence (byte-level BPE emits U+FFFD until the
    character completes) or in a prefix of a stop string (so streamed text never shows half a "</s>").
    Decoding the whole generated sequence each step (not token by token) keeps SentencePiece's leading-space
    handling and multi-byte characters right; generation lengths here are short, so the O(n^2) cost is negligible.
    """

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.ids: list[int] = []
        self.emitted = ""
        self.stopped = False

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _cut(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
        return min(hits) if hits else None

    def _release(self, final: str) -> str:
        if not final.startswith(self.emitted):
            return ""  # a tokenizer rewrote earlier text: what was streamed cannot be taken back
        delta = final[len(self.emitted):]
        self.emitted = final
        return delta

    def push(self, token_id: int) -> str:
        """Add one id; returns newly final text. Sets ``stopped`` when a stop string appeared."""
        self.ids.append(int(token_id))
        text = self._decode(self.ids)
        cut = self._cut(text)
        if cut is not None:
            self.stopped = True
            return self._release(text[:cut])
        safe = len(text.rstrip("\ufffd"))
        held = 0
        for stop in self.stop_strings:
            for k in range(min(len(stop) - 1, safe), 0, -1):
                if text[safe - k:safe] == stop[:k]:
                    held = max(held, k)
                    break
        return self._release(text[: safe - held])

    def finish(self) -> str:
        """Flush the held-back text at the end of generation (stop tokens are never pushed, so never shown)."""
        if self.stopped:
            return ""
        text = self._decode(self.ids)
        cut = self._cut(text)
        return self._release(text if cut is None else text[:cut])
