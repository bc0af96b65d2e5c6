"""Accuracy of quantized engines: held-out caption perplexity and logit error against the fp32 model.

Samples are simulator clips of the ``test`` split (never seen by calibration, which uses ``train``) with
``DESCRIBE_PROMPT`` and the truth caption as the answer, built exactly like the engine's prompts. Every engine runs
the same ids through its own decoder (``engine.decoder``), so fp32, bf16 and int4 are compared on one code path.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from vila_ros.quant.calib import Sample


@torch.inference_mode()
def sequence_logits(engine: Any, sample: Sample) -> torch.Tensor:
    """fp32 logits [L, vocab] of every position of ``sample`` (image features from the engine's own tower)."""
    feats = engine.encode_frames(sample.frames) if sample.frames else []
    embeds = engine.embed(sample.ids, feats)[None]
    cache = engine.decoder.new_cache(1, embeds.shape[1])
    hidden = engine.decoder.forward(embeds, cache)
    return engine.decoder.logits(hidden[0])


def expanded_targets(engine: Any, sample: Sample) -> tuple[list[int], int]:
    """Token ids aligned with the spliced sequence (-100 on visual positions) and the answer's first position."""
    t = engine.tokens_per_image
    ids: list[int] = []
    answer_pos = 0
    for i, tok in enumerate(sample.ids):
        if i == sample.answer_start:
            answer_pos = len(ids)
        ids.extend([-100] * t if tok < 0 else [tok])
    return ids, answer_pos


def evaluate(engines: dict[str, Any], samples: Sequence[Sample], reference: str | None = None) -> dict[str, Any]:
    """Per engine: answer-token perplexity, mean NLL, and (when ``reference`` names an engine) the mean squared
    logit error and greedy top-1 agreement against it on answer positions."""
    nll = {name: 0.0 for name in engines}
    mse = {name: 0.0 for name in engines}
    agree = {name: 0 for name in engines}
    count = 0
    for sample in samples:
        ref_logits = None
        per = {}
        for name, engine in engines.items():
            logits = sequence_logits(engine, sample)
            targets, start = expanded_targets(engine, sample)
            tgt = torch.tensor(targets[start:], dtype=torch.long)
            pred = logits[start - 1:-1]
            nll[name] += float(torch.nn.functional.cross_entropy(pred, tgt, reduction="sum"))
            per[name] = pred
            if name == reference:
                ref_logits = pred
        count += len(sample.ids) - sample.answer_start
        if ref_logits is not None:
            for name, pred in per.items():
                mse[name] += float((pred - ref_logits).pow(2).mean(-1).sum())
                agree[name] += int((pred.argmax(-1) == ref_logits.argmax(-1)).sum())
    out: dict[str, Any] = {"tokens": count, "samples": len(samples), "engines": {}}
    for name in engines:
        row = {"nll": nll[name] / count, "perplexity": math.exp(nll[name] / count)}
        if reference is not None:
            row["logit_mse"] = mse[name] / count
            row["top1_agreement"] = agree[name] / count
        out["engines"][name] = row
    return out


def markdown_table(result: dict[str, Any], title: str = "") -> str:
    rows = [f"{title}\n" if title else "",
            "| variant | caption perplexity | mean NLL | logit MSE vs fp32 | top-1 agreement vs fp32 |",
            "|---|---|---|---|---|"]
    for name, r in result["engines"].items():
        rows.append(f"| {name} | {r['perplexity']:.4f} | {r['nll']:.4f} | {r.get('logit_mse', float('nan')):.3g} "
                    f"| {r.get('top1_agreement', float('nan')):.3f} |")
    rows.append(f"\n{result['samples']} held-out simulator captions (test split), {result['tokens']} answer tokens.")
    return "\n".join(r for r in rows if r is not None)
