#!/usr/bin/env bash
# Build the VILA engines on an x86_64 machine with an NVIDIA GPU (Ampere or newer: W4A16 kernels need SM80+).
#
# Tested target stack: the NGC container nvcr.io/nvidia/tensorrt-llm/release (or `pip install tensorrt_llm` from
# NVIDIA's index) of a TensorRT-LLM release that still ships the TensorRT engine flow (trtllm-build and the
# prompt-table multimodal runtime): 0.12.0 up to the 0.x line. The checkpoint format (W4A16_AWQ, int8-packed int4,
# weights_scaling_factor / prequant_scaling_factor) is the one those releases read.
#
#   ./build_x86.sh EXPORT_DIR
set -euo pipefail
EXPORT_DIR=${1:?usage: $0 EXPORT_DIR}
[ -f "$EXPORT_DIR/build_engines.sh" ] || { echo "no build_engines.sh in $EXPORT_DIR (run vila-ros export-trtllm)"; exit 2; }
command -v trtllm-build >/dev/null || { echo "trtllm-build not found: install TensorRT-LLM (see engines/README.md)"; exit 2; }
command -v trtexec >/dev/null || { echo "trtexec not found: it ships with TensorRT (/usr/src/tensorrt/bin)"; exit 2; }
nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv
python3 -c "import tensorrt_llm, tensorrt; print('tensorrt_llm', tensorrt_llm.__version__, 'tensorrt', tensorrt.__version__)"
bash "$EXPORT_DIR/build_engines.sh"
