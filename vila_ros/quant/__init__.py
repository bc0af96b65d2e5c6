"""Offline int4 quantization of the LLM (AWQ / round-to-nearest) and TensorRT-LLM export: a tool, run once per
checkpoint. Nothing that loads or runs a model imports this package: the int4 runtime and the checkpoint format it
writes live in ``vila_ros.model.int4`` and ``vila_ros.model.int4_checkpoint``.

Modules: ``calib`` (multimodal calibration and evaluation samples), ``awq`` (the scale / clipping search),
``pipeline`` (``quantize_checkpoint``), ``evaluate`` (perplexity table), ``trtllm`` (TensorRT-LLM W4A16_AWQ
checkpoint + ONNX vision export), ``tinychat`` (``convert-awq``: llm-awq / TinyChat int4 .pt -> our format),
``cli``. Import stays light: torch is imported by the submodules.
"""
