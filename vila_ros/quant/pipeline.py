"""``quantize_checkpoint``: float VILA1.5 checkpoint -> int4 checkpoint (what ``vila-ros quantize`` runs)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from vila_ros.quant.awq import QuantSpec, check_group_size, quantize_llm
from vila_ros.resources import MODEL_DECISION_FILES


def quantize_checkpoint(model_dir: str | Path, out_dir: str | Path, method: str = "awq", group_size: int = 128,
                        scheme: str = "asym", calib: str = "sim", samples: int = 16, clip: bool = True,
                        grid: int = 20, max_tokens: int = 512, num_frames: int | None = None, seed: int = 0,
                        threads: int = 0,
                        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Quantize the LLM of ``model_dir`` (searched in fp32) and write the int4 checkpoint to ``out_dir``."""
    from vila_ros.model.checkpoint import load_vila, read_config
    from vila_ros.model.int4_checkpoint import quant_config_of, save_quantized
    from vila_ros.quant.calib import embed_samples, load_samples

    say = progress or (lambda _m: None)
    if quant_config_of(model_dir) is not None:
        raise ValueError(f"{model_dir} is already quantized; quantize the float checkpoint it came from")
    llm_type = read_config(model_dir).llm_type
    if llm_type != "llama":
        # Our int4 linears and kernels are bias-free Llama projections; Qwen2 (NVILA-Lite) has q/k/v biases.
        raise ValueError(f"{model_dir}: int4 quantization covers Llama LLMs only, not llm_cfg.model_type {llm_type!r}")
    t0 = time.perf_counter()
    model = load_vila(model_dir, dtype=torch.float32)
    spec = QuantSpec(method=method, group_size=group_size, scheme=scheme, clip=clip, grid=grid,
                     max_tokens=max_tokens, seed=seed, threads=threads)
    short = check_group_size(model.llm, group_size)
    if short:
        say(f"group {group_size} does not divide the inputs of {len(short)} linears (e.g. {short[0]}): their last "
            "group is shorter (fine for the torch engine; TensorRT-LLM export needs a dividing group)")
    calibration: dict[str, Any] = {}
    embeds = None
    if method == "awq":
        items = load_samples(calib, samples, model, split="train", offset=500_000 + seed, num_frames=num_frames)
        embeds = embed_samples(model, items)
        calibration = {"source": "sim" if calib == "sim" else Path(calib).name, "samples": len(items),
                       "tokens": int(sum(e.shape[1] for e in embeds)), "max_tokens": max_tokens, "grid": grid}
        say(f"calibration: {len(items)} samples, {calibration['tokens']} tokens")
    qtensors, report = quantize_llm(model.llm, embeds, spec, progress=say)
    del embeds
    qconfig = {"method": method, "group_size": group_size, "scheme": scheme, "clip": bool(clip and method == "awq"),
               "calibration": calibration, "short_last_group": short}
    save_quantized(model, qtensors, out_dir, qconfig)
    for name in MODEL_DECISION_FILES:
        if (Path(model_dir) / name).is_file():
            shutil.copy2(Path(model_dir) / name, Path(out_dir) / name)
    return {"out": str(out_dir), "method": method, "group_size": group_size, "scheme": scheme,
            "seconds": round(time.perf_counter() - t0, 1), "calibration": calibration, "report": report}
