"""``engine: tensorrt_llm``: TensorRT-LLM engines built from ``vila-ros export-trtllm`` (engines/README.md).

Imported only when this engine is selected; ``tensorrt_llm`` exists only on GPU / Jetson deployments, so every
failure to import it (or TensorRT, or CUDA torch) raises ``TensorRTLLMUnavailable`` naming what is missing.

Directory (the export dir after ``build_engines.sh``): ``llm_engine/`` (trtllm-build output),
``vision/visual_encoder.engine`` (trtexec output), ``tokenizer/``, ``vila_config.json``, ``export.json``.

Per request: frames -> our ImageProcessor -> visual engine -> features [N*T, hidden] fp16 = the prompt table;
the prompt ids (our template and tokenizer, so prompts match the torch engine) get image slot k replaced by
``vocab_size + k*T ... vocab_size + (k+1)*T - 1`` (ids >= vocab_size address the prompt table), then
``ModelRunner.generate(..., prompt_table=..., prompt_tasks="0")``. Written against TensorRT-LLM 0.12's runtime API;
it cannot run on machines without a GPU and is untested here (only its error path is).
"""
from __future__ import annotations

import importlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from vila_ros.engine.errors import refuse_constraints
from vila_ros.engine.types import GenerationConfig, GenerationResult, TokenCallback

REQUIRED = ("tensorrt_llm", "tensorrt")


class TensorRTLLMUnavailable(RuntimeError):
    """The tensorrt_llm engine cannot run here; the message names the missing package or file."""


def _require_modules() -> dict[str, Any]:
    mods = {}
    for name in REQUIRED:
        try:
            mods[name] = importlib.import_module(name)
        except Exception as error:  # ImportError, or a broken CUDA install raising at import
            raise TensorRTLLMUnavailable(
                f"engine 'tensorrt_llm' needs the Python package {name!r}, which cannot be imported here "
                f"({type(error).__name__}: {error}). It runs on a GPU/Jetson machine with TensorRT-LLM "
                "(Jetson AGX Orin: TensorRT-LLM v0.12.0-jetson on JetPack 6.1; x86: a TensorRT-LLM release with "
                "its TensorRT) and engines built by build_engines.sh from `vila-ros export-trtllm`: see "
                "engines/README.md. Use engine 'torch' (precision int4 for the same weights on CPU) elsewhere."
            ) from error
    import torch

    if not torch.cuda.is_available():
        raise TensorRTLLMUnavailable("engine 'tensorrt_llm' needs a CUDA GPU, and torch sees none")
    return mods


class TensorRTLLMEngine:
    @classmethod
    def from_dir(cls, engine_dir: str | Path, device: str = "cuda") -> "TensorRTLLMEngine":
        root = Path(engine_dir)
        needed = [root / "llm_engine" / "config.json", root / "vision" / "visual_encoder.engine",
                  root / "vila_config.json", root / "export.json"]
        mods = _require_modules()
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise TensorRTLLMUnavailable(
                f"{root} is not a built TensorRT-LLM export: missing {', '.join(missing)} "
                "(run vila-ros export-trtllm, then build_engines.sh in that directory on the target)")
        return cls(root, mods)

    def __init__(self, root: Path, mods: dict[str, Any]):
        import torch
        from tensorrt_llm.runtime import ModelRunner  # type: ignore[import-not-found]
        from transformers import AutoTokenizer

        from vila_ros.model.config import VilaConfig
        from vila_ros.model.preprocess import ImageProcessor

        self.root = root
        self.model_id = root.resolve().name
        with open(root / "vila_config.json", encoding="utf-8") as f:
            self.config = VilaConfig.from_dict(json.load(f))
        with open(root / "export.json", encoding="utf-8") as f:
            self.export = json.load(f)
        self.num_video_frames = int(self.config.num_video_frames)
        self.tokens_per_image = int(self.config.tokens_per_image)
        self.conv_template = self.config.conv_template
        self.tokenizer = AutoTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
        pre = root / "preprocessor_config.json"  # the checkpoint's own (exports made before it: the SigLIP default)
        aspect = self.config.image_aspect_ratio
        self.image_processor = ImageProcessor.load(pre, aspect_ratio=aspect) if pre.is_file() else \
            ImageProcessor(size=self.config.image_size, aspect_ratio=aspect)
        self.runner = ModelRunner.from_dir(str(root / "llm_engine"))
        self.vocab_size = int(self.export["prompt_table_offset"])
        trt = mods["tensorrt"]
        logger = trt.Logger(trt.Logger.WARNING)
        with open(root / "vision" / "visual_encoder.engine", "rb") as f:
            self._vision = trt.Runtime(logger).deserialize_cuda_engine(f.read())
        self._vision_ctx = self._vision.create_execution_context()
        self._stream = torch.cuda.Stream()

    def encode_frames(self, frames: Sequence[Any]) -> list[Any]:
        import torch

        if len(frames) == 0:
            return []
        pixels = self.image_processor(frames).cuda().contiguous()
        out = torch.empty(pixels.shape[0], self.tokens_per_image, self.config.hidden_size, device="cuda")
        self._vision_ctx.set_input_shape("pixels", tuple(pixels.shape))
        self._vision_ctx.set_tensor_address("pixels", pixels.data_ptr())
        self._vision_ctx.set_tensor_address("features", out.data_ptr())
        self._vision_ctx.execute_async_v3(self._stream.cuda_stream)
        self._stream.synchronize()
        return [f.half() for f in out]

    def _prompt(self, question: str, features: Sequence[Any], config: GenerationConfig) -> tuple[Any, Any]:
        import torch

        from vila_ros.model.prompt import IMAGE_TOKEN_INDEX, build_prompt_ids

        template = config.conv_template or self.conv_template
        ids = build_prompt_ids(question, len(features), self.tokenizer, template, config.system_prompt)
        out, k, t = [], 0, self.tokens_per_image
        for tok in ids:
            if tok == IMAGE_TOKEN_INDEX:
                out.extend(range(self.vocab_size + k * t, self.vocab_size + (k + 1) * t))
                k += 1
            else:
                out.append(tok)
        table = torch.cat([f.to("cuda", torch.float16) for f in features])[None] if features else None
        return torch.tensor(out, dtype=torch.int32), table

    def generate(self, question: str, image_features: Sequence[Any], config: GenerationConfig | None = None,
                 on_token: TokenCallback | None = None) -> GenerationResult:
        import numpy as np

        config = config or GenerationConfig()
        refuse_constraints("tensorrt_llm", config)  # ModelRunner.generate takes no guided decoding
        t0 = time.perf_counter()
        raw = [x for x in image_features if isinstance(x, np.ndarray)]
        feats = self.encode_frames(raw) if raw else []
        it = iter(feats)
        features = [next(it) if isinstance(x, np.ndarray) else x for x in image_features]
        vision_ms = (time.perf_counter() - t0) * 1000.0 if raw else 0.0
        ids, table = self._prompt(question, features, config)
        t1 = time.perf_counter()
        outputs = self.runner.generate(
            [ids], max_new_tokens=config.max_new_tokens, end_id=self.tokenizer.eos_token_id,
            pad_id=self.tokenizer.pad_token_id or 0, temperature=max(config.temperature, 1e-6),
            top_k=1 if config.temperature == 0 else 0, top_p=config.top_p, prompt_table=table,
            prompt_tasks="0" if table is not None else None, random_seed=config.seed,
            stop_words_list=None, return_dict=True,
        )
        gen = outputs["output_ids"][0, 0, len(ids):].tolist()
        eos = self.tokenizer.eos_token_id
        reason = "max_new_tokens"
        if eos in gen:
            gen = gen[: gen.index(eos) + 1]
            reason = "stop_token"
        text = self.tokenizer.decode([g for g in gen if g != eos], skip_special_tokens=True)
        for s in config.stop_strings:
            if s in text:
                text, reason = text[: text.index(s)], "stop_string"
        if on_token is not None:
            on_token(gen[-1] if gen else -1, text)  # no per-token streaming through ModelRunner.generate here
        total = (time.perf_counter() - t1) * 1000.0
        return GenerationResult(text=text, token_ids=gen, vision_ms=vision_ms, prefill_ms=0.0, decode_ms=total,
                                stop_reason=reason, prompt_tokens=len(ids))

    def generate_batch(self, questions: Sequence[str], image_features: Sequence[Sequence[Any]],
                       config: GenerationConfig | None = None,
                       max_new_tokens: Sequence[int] | None = None,
                       output_regexes: Sequence[str | None] | None = None) -> list[GenerationResult]:
        config = config or GenerationConfig()
        refuse_constraints("tensorrt_llm", config, output_regexes)
        limits = max_new_tokens or [config.max_new_tokens] * len(questions)
        return [self.generate(q, f, replace(config, max_new_tokens=n))
                for q, f, n in zip(questions, image_features, limits)]
