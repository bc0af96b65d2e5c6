"""Inference engines behind one interface (docs/DESIGN.md): ``create_engine(model_dir, engine, precision, device)``.

The module stays import-light (types only); the torch engine is imported when one is created.
"""
from __future__ import annotations

from pathlib import Path

from vila_ros.engine.errors import (
    EngineError,
    NonFiniteOutputError,
    PromptTooLongError,
    RemoteEngineError,
    RemoteRequestError,
)
from vila_ros.engine.types import Engine, GenerationConfig, GenerationResult, TokenCallback

ENGINES = ("torch", "tensorrt_llm", "openai")
PRECISIONS = ("fp32", "bf16", "int4")

__all__ = ["ENGINES", "PRECISIONS", "Engine", "EngineError", "GenerationConfig", "GenerationResult",
           "NonFiniteOutputError", "PromptTooLongError", "RemoteEngineError", "RemoteRequestError", "TokenCallback",
           "create_engine"]


def create_engine(model_dir: str | Path, engine: str = "torch", precision: str = "fp32", device: str = "cpu",
                  remote: dict | None = None, resize: str | None = None) -> Engine:
    """Load the VILA1.5 checkpoint at ``model_dir`` into an engine. ``engine="openai"`` ignores the checkpoint and
    talks to the server ``remote`` names (OpenAIEngine's keyword arguments: base_url, model, api_key_env, ...).
    ``resize``: "pil", "opencv" or "nearest" overrides the image resize the checkpoint's preprocessor_config.json names
    (vila_ros/model/preprocess.py)."""
    if engine == "openai":
        from vila_ros.engine.openai_engine import OpenAIEngine

        return OpenAIEngine(**(remote or {}))
    if engine == "tensorrt_llm":
        # Imported only when selected: tensorrt_llm exists on GPU/Jetson deployments only (engines/README.md).
        from vila_ros.engine.tensorrt_llm_engine import TensorRTLLMEngine

        trt = TensorRTLLMEngine.from_dir(model_dir, device=device)
        trt.image_processor = trt.image_processor.with_resize(resize)
        return trt
    if engine != "torch":
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    from vila_ros.engine.torch_engine import TorchEngine

    torch_engine = TorchEngine.from_dir(model_dir, precision=precision, device=device)
    torch_engine.model.image_processor = torch_engine.model.image_processor.with_resize(resize)
    return torch_engine
