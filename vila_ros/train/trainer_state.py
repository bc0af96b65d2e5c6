"""What the trainer writes and reads besides the model: optimizer moments (safetensors + JSON, no pickle), plain
VILA1.5 directories of a model being trained (LoRA merged into a copy), and the newest resumable checkpoint."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vila_ros.model.checkpoint import save_vila
from vila_ros.train.lora import lora_modules, merge_lora

STATE_DIR = "trainer_state"


def save_optimizer(opt: torch.optim.Optimizer, directory: Path) -> None:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{index}.{key}"] = t.detach().cpu().contiguous()
    save_file(tensors, str(directory / "optimizer.safetensors"))
    (directory / "optimizer_groups.json").write_text(json.dumps(sd["param_groups"], indent=1))


def load_optimizer(opt: torch.optim.Optimizer, directory: Path) -> None:
    tensors = load_file(str(directory / "optimizer.safetensors"))
    groups = json.loads((directory / "optimizer_groups.json").read_text())
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = t
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint_dir(model: torch.nn.Module, path: Path, dtype: torch.dtype | None = None) -> Path:
    """A plain VILA1.5 directory of ``model`` (LoRA merged into a copy; the training model is untouched)."""
    target = model
    if lora_modules(model) or (dtype is not None and dtype != model.dtype):
        target = copy.deepcopy(model)
        merge_lora(target)
        if dtype is not None:
            target.to(dtype)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_vila(target, tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def numbered_checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """A stage's ``checkpoint-<step>`` directories, by step."""
    return sorted((int(p.name.split("-")[-1]), p) for p in stage_dir.glob("checkpoint-*")
                  if p.name.split("-")[-1].isdigit())


def latest_checkpoint(stage_dir: Path) -> Path | None:
    found = [p for _, p in numbered_checkpoints(stage_dir) if (p / STATE_DIR / "state.json").is_file()]
    return found[-1] if found else None


def prune_checkpoints(stage_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` latest checkpoints (keep <= 0: keep all)."""
    if keep > 0:
        for _, p in numbered_checkpoints(stage_dir)[:-keep]:
            shutil.rmtree(p, ignore_errors=True)
