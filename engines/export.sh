#!/usr/bin/env bash
# CPU side (any machine with vila_ros installed): quantize the LLM and export what the engine builds need.
#
#   ./export.sh MODEL_DIR OUT_DIR [CALIB]      CALIB: sim (default) or a LLaVA JSON file of your own data
#
# Symmetric int4 (zero point 8) is the layout NVIDIA ModelOpt exports for W4A16_AWQ and what TensorRT-LLM's AWQ
# path is known to read; the default asymmetric scheme exports with has_zero_point (see README.md).
set -euo pipefail
MODEL=${1:?usage: $0 MODEL_DIR OUT_DIR [CALIB]}
OUT=${2:?usage: $0 MODEL_DIR OUT_DIR [CALIB]}
CALIB=${3:-sim}
vila-ros quantize --model "$MODEL" --out "$OUT/int4_awq" --calib "$CALIB" --group 128 --method awq --scheme sym
vila-ros export-trtllm --model "$OUT/int4_awq" --out "$OUT/trtllm" --max-batch 1
echo "copy $OUT/trtllm to the target and run engines/build_jetson_orin.sh (or build_x86.sh) on it"
