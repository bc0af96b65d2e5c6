"""int4 quantization of the LLM (AWQ / round-to-nearest), the int4 checkpoint format, TensorRT-LLM export.

Modules: ``int4`` (group quantization math, packing, ``Int4Linear``), ``calib`` (multimodal calibration and
evaluation samples), ``awq`` (the scale / clipping search), ``checkpoint`` (the ``vila_ros_int4/v1`` format:
save / load), ``pipeline`` (``quantize_checkpoint``), ``evaluate`` (perplexity table), ``trtllm`` (TensorRT-LLM
W4A16_AWQ checkpoint + ONNX vision export), ``cli``. Import stays light: torch is imported by the submodules.
"""
