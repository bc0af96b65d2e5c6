"""How far two models decide alike on the same stream: the alert checks of two `eval-stream --probabilities` runs
on one split and settings (an int4 copy against its float model, say), matched check by check.

Event-level figures of a held-out split move by one event in thirty for reasons of their own; the per-check
decisions at the node's thresholds show what quantization itself changed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from vila_ros.tools.stream_thresholds import log_odds


def read_checks(path: Path) -> list[dict]:
    """The recorded checks of a run: its stream_eval.json, or the directory holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "stream_eval.json"
    checks = json.loads(path.read_text()).get("records", {}).get("checks") or []
    if not checks:
        raise ValueError(f"{path} holds no alert checks with probabilities (run eval-stream with --probabilities)")
    return checks


def decision_agreement(reference: Sequence[dict], checks: Sequence[dict], thresholds: dict[str, float]) -> dict:
    """Per category, the checks (same camera and window) where one run's probability is at or above the
    threshold and the other's is not, and the mean and 95th percentile of the log-odds difference over all."""
    theirs = {(c["camera"], tuple(c["stamps_ns"])): c["probabilities"] for c in reference}
    pairs = [(theirs[key], c["probabilities"]) for c in checks
             if (key := (c["camera"], tuple(c["stamps_ns"]))) in theirs]
    if len(pairs) < 0.5 * max(len(reference), len(checks)):
        raise ValueError(f"the runs share {len(pairs)} of {len(reference)} and {len(checks)} checks: not one split "
                         "and one set of node settings")
    per_category, gaps = {}, []
    for category, threshold in sorted(thresholds.items()):
        reference_only = this_only = 0
        for ref, own in pairs:
            if category not in ref or category not in own:
                continue
            gaps.append(abs(log_odds(ref[category]) - log_odds(own[category])))
            reference_only += ref[category] >= threshold > own[category]
            this_only += own[category] >= threshold > ref[category]
        per_category[category] = {"threshold": threshold, "reference_only": reference_only, "this_only": this_only}
    gaps.sort()
    decisions = len(gaps)
    flips = sum(row["reference_only"] + row["this_only"] for row in per_category.values())
    return {"checks": len(pairs), "decisions": decisions, "flipped": flips,
            "flipped_rate": flips / decisions if decisions else None,
            "mean_abs_log_odds": sum(gaps) / decisions if decisions else None,
            "p95_abs_log_odds": gaps[int(0.95 * (decisions - 1))] if decisions else None,
            "per_category": per_category}
