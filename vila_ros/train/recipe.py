"""Training recipes: YAML files under ``config/train/``, one or more stages run in sequence by one command.

    name: stage3_sft
    init: {preset: default-small, seed: 0, tokenizer_corpus: sim}   # used when no --init is given
    seed: 0
    out_dtype: null            # dtype of the final checkpoint (null: the init checkpoint's model_dtype)
    defaults: {...}            # stage keys shared by every stage (see STAGE_DEFAULTS)
    stages:
      - name: sft
        train: {vision_tower: true, mm_projector: true, llm: true}
        lr: 1.0e-4
        data: {type: llava}    # or {type: sim, mix: {video_caption: 1, ...}, seed: 2}: the simulator's samples
                               # are a function of (seed, index), so stages draw fresh ones only with seeds of
                               # their own (default: the recipe's seed)

``--set key=value`` overrides any key by its dotted path (``defaults.batch_size=4``, ``stages.2.lr=3e-4``,
``stages.sft.max_steps=10``: a stage may be named instead of numbered); values are parsed as YAML.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import yaml

STAGE_DEFAULTS: dict[str, Any] = {
    "template": None,  # conversation template of the data (null: the checkpoint's conv_template)
    "data": {"type": "llava"},
    "train": {"vision_tower": True, "mm_projector": True, "llm": True},
    "lora": None,  # {rank, alpha, targets}
    "image_size": None,  # the tower's input in pixels: a stage at another size starts from a resized copy
    "lr": 1.0e-4,
    "min_lr_ratio": 0.0,
    "warmup_ratio": 0.03,
    "weight_decay": 0.0,
    "betas": [0.9, 0.999],
    "max_grad_norm": 1.0,
    "batch_size": 8,
    "grad_accum": 1,
    "bf16": True,
    "max_steps": None,  # null: epochs over a finite dataset
    "epochs": 1,
    "max_minutes": None,  # wall-clock cap of the stage
    "time_schedule": False,  # true: the LR schedule follows max(step / max_steps, elapsed / max_minutes)
    "stop_at": None,  # stop (checkpoint, not finished) at this step: a planned interruption, for tests and chunks
    "max_length": 2048,
    "log_every": 10,
    "save_every": 0,
    "keep_checkpoints": 2,
    "eval_every": 0,
    "val_samples": 32,
}


class RecipeError(ValueError):
    pass


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        recipe = yaml.safe_load(f) or {}
    if not isinstance(recipe, dict) or not isinstance(recipe.get("stages"), list) or not recipe["stages"]:
        raise RecipeError(f"{path}: a recipe needs a non-empty 'stages' list")
    recipe.setdefault("name", path.stem)
    recipe.setdefault("defaults", {})
    for item in overrides:
        apply_override(recipe, item)
    return recipe


def apply_override(recipe: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise RecipeError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw)
    parts = key.strip().split(".")
    node: Any = recipe
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part, key)
            if last:
                node[index] = value
                return
            node = node[index]
        else:
            if last:
                node[part] = value
                return
            if node.get(part) is None:
                node[part] = {}
            node = node[part]


def _list_index(node: list, part: str, key: str) -> int:
    if part.lstrip("-").isdigit():
        return int(part)
    for i, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    raise RecipeError(f"--set {key}: no stage named {part!r}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_stages(recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stage with STAGE_DEFAULTS <- recipe defaults <- the stage's own keys."""
    base = _merge(STAGE_DEFAULTS, recipe.get("defaults") or {})
    stages = []
    for i, stage in enumerate(recipe["stages"]):
        s = _merge(base, stage)
        s.setdefault("name", f"stage{i + 1}")
        for key in ("lr", "min_lr_ratio", "warmup_ratio", "weight_decay", "max_grad_norm"):
            s[key] = float(s[key])
        unknown = set(s) - set(STAGE_DEFAULTS) - {"name"}
        if unknown:
            raise RecipeError(f"stage {s['name']}: unknown keys {sorted(unknown)}")
        if s["max_steps"] is None and s["data"].get("type") in ("sim", "sim_frames", "sim_frame_pairs"):
            raise RecipeError(f"stage {s['name']}: simulator data needs max_steps")
        stages.append(s)
    return stages
