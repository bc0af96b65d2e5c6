"""LoRA on the LLM's linear layers, by hand (no peft): y = W x + b + (alpha / rank) * B (A x).

``apply_lora`` swaps the targeted ``nn.Linear`` modules for ``LoRALinear`` (the base weight frozen, A random, B zero,
so training starts from the unchanged model); ``merge_lora`` folds B A into W and puts plain ``nn.Linear`` modules
back, so the saved checkpoint is an ordinary VILA1.5 directory.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None):
        super().__init__()
        self.base = base
        self.rank = rank
        self.scale = alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=torch.float32, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=torch.float32, device=w.device))
        bound = 1.0 / math.sqrt(base.in_features)
        with torch.no_grad():
            self.lora_A.copy_(torch.rand(self.lora_A.shape, generator=generator) * 2 * bound - bound)
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        a = self.lora_A.to(x.dtype) if not torch.is_autocast_enabled(x.device.type) else self.lora_A
        b = self.lora_B.to(x.dtype) if not torch.is_autocast_enabled(x.device.type) else self.lora_B
        return out + nn.functional.linear(nn.functional.linear(x, a), b) * self.scale


def _targets(root: nn.Module, targets: Iterable[str]) -> list[tuple[nn.Module, str, nn.Linear]]:
    names = tuple(targets)
    found = []
    for module in root.modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear) and child_name in names:
                found.append((module, child_name, child))
    return found


def apply_lora(llm: nn.Module, rank: int = 8, alpha: float = 16.0, targets: Iterable[str] = DEFAULT_TARGETS,
               seed: int = 0) -> list[str]:
    """Wrap the targeted linears of ``llm`` (not lm_head unless named); returns the wrapped module names."""
    gen = torch.Generator().manual_seed(seed)
    wrapped = []
    names = {id(m): n for n, m in llm.named_modules()}
    for parent, child_name, child in _targets(llm, targets):
        setattr(parent, child_name, LoRALinear(child, rank, alpha, gen))
        wrapped.append(f"{names[id(parent)]}.{child_name}")
    if not wrapped:
        raise ValueError(f"no nn.Linear named {tuple(targets)} in the LLM")
    return wrapped


def lora_modules(root: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in root.named_modules() if isinstance(m, LoRALinear)}


@torch.no_grad()
def merge_lora(root: nn.Module) -> int:
    """Fold every LoRALinear into its base weight and unwrap it; returns how many were merged."""
    count = 0
    for parent in list(root.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                base = child.base
                base.weight.add_(child.delta().to(base.weight.dtype))
                setattr(parent, child_name, base)
                count += 1
    return count


@torch.no_grad()
def unmerge_into(root: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Resume: ``root`` holds merged weights W + s B A and LoRA wrappers; load A, B from ``state`` and subtract
    their product from the base weights (back to the frozen W, up to float rounding)."""
    for name, module in lora_modules(root).items():
        module.lora_A.copy_(state[f"{name}.lora_A"])
        module.lora_B.copy_(state[f"{name}.lora_B"])
        module.base.weight.sub_(module.delta().to(module.base.weight.dtype))


def lora_state(root: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in lora_modules(root).items():
        out[f"{name}.lora_A"] = module.lora_A.detach().clone()
        out[f"{name}.lora_B"] = module.lora_B.detach().clone()
    return out
